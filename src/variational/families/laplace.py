"""The Laplace approximation (``method="laplace"``): a Gaussian at the mode, shaped by the curvature.

1. The mode ``z*`` of the log density of the flat unconstrained vector, **Jacobians of the
   transforms included**: the mode of the very density the Gaussian is put on (and the one NUTS
   samples). Without the Jacobian (PyMC's ``find_MAP``, pymc-extras' ``fit_laplace``) the mode is
   that of the constrained density seen through the transform, not a mode of the unconstrained
   density at all. The search is trust-region Newton-CG (:mod:`._newton`): one compiled function
   gives the log density, its gradient and Hessian-vector products, and the search converges
   quadratically to the mode.
2. The Hessian ``H`` of ``-log p`` at ``z*``, exactly, from the same Hessian-vector products
   (one per coordinate).
3. ``q = N(z*, H^-1)``. When ``H`` is not positive definite (a flat or improper direction, a
   saddle, a density without a mode) the fit stops with an error that names the sites along the
   offending directions and where the density still rises.

Draws go through the same transforms as every other family.
"""

from __future__ import annotations


import numpy as np

from ..errors import VariationalError
from . import _newton
from ._checks import positive_float, positive_int
from ._fixed import fixed_gaussian
from .base import Family, Problem, Solution, register_family

__all__ = ["laplace"]

MAX_DIM = 20_000   # a dense D x D covariance beyond this does not fit in memory


def _not_a_mode(error: str, g: np.ndarray, labels: tuple[str, ...], search: str) -> str:
    """The error when the end of the mode search is not a mode: where the density still rises."""
    top = np.argsort(-np.abs(g))[:3]
    rising = ", ".join(f"{labels[i]} (gradient {-g[i]:.3g})" for i in top)
    return (f"{error}. The mode search {search}, where the log density still rises fastest along "
            f"{rising}: if these grow without end the density has no mode (a hierarchical scale "
            f"heading to zero does this) and a Laplace approximation does not exist; use "
            f"method='dadvi', 'advi' or 'fullrank_advi'")


def laplace(maxiter: int = 1000, gtol: float = 1e-6) -> Family:
    """Laplace approximation: ``N(mode, (-Hessian)^-1)`` in the unconstrained space.

    Parameters
    ----------
    maxiter : int
        Largest number of trust-region iterations of the mode search.
    gtol : float
        The search ends when the gradient's norm is below ``gtol`` (or when float precision no
        longer predicts a decrease); ``fit.converged`` then requires the mode to be within
        0.05 posterior sds by the local quadratic.

    Returns
    -------
    Family
        A Gaussian with fixed mean and Cholesky factor, found by :func:`solve` (run by
        :func:`variational.fit`; no stochastic optimisation).

    Examples
    --------
    >>> import numpy as np
    >>> import variational as vi
    >>> def model(y):
    ...     mu = vi.Normal("mu", 0, 10)
    ...     vi.Normal("y", mu, 1.0, observed=y)
    >>> y = np.random.default_rng(0).normal(1.0, 1.0, size=50)
    >>> fit = vi.fit(model, {"y": y}, method="laplace", progress=False)
    >>> exact_sd = (50 + 1 / 100) ** -0.5          # the conjugate posterior
    >>> bool(abs(float(fit.std["mu"]) - exact_sd) < 0.01 * exact_sd)
    True
    """
    opts = {"maxiter": positive_int("maxiter", maxiter), "gtol": positive_float("gtol", gtol, allow_zero=True)}

    def solve(problem: Problem) -> Solution:
        dim, dtype = problem.z0.shape[0], problem.z0.dtype
        if dim > MAX_DIM:
            raise VariationalError(f"method='laplace' forms a dense {dim}-square covariance; above "
                                   f"{MAX_DIM} latent dimensions use method='dadvi' or 'advi'")
        fgh = _newton.compile_fgh(lambda z, data: -problem.logp(z, data), problem.z0, problem.data)
        res = _newton.minimize(fgh, problem.z0, maxiter=opts["maxiter"], gtol=opts["gtol"])
        try:
            cov = _newton.covariance_from_precision(_newton.hessian(fgh, res.x), problem.labels,
                                                    "the Hessian of -log p at the mode")
        except VariationalError as e:
            raise VariationalError(_not_a_mode(str(e), res.g, problem.labels, res.message)) from None
        away = _newton.distance(res.g, cov)
        params = {"loc": _newton.as_jax(res.x, dtype), "chol": _newton.as_jax(np.linalg.cholesky(cov), dtype)}
        info = {"mode_logp": -res.f, "max_abs_grad": float(np.max(np.abs(res.g))), "sds_from_mode": away,
                "fgh_calls": res.calls, "hessian_vector_products": dim}
        message = (f"the mode search {res.message}; the mode is {away:.2g} posterior sds away by the "
                   f"local quadratic")
        # each call: one gradient and one Hessian-vector product (two gradients' worth)
        return Solution(params, res.trace, res.iterations, 3 * (res.calls + dim), away <= 0.05, message, info)

    return fixed_gaussian("laplace", solve, opts)


register_family("laplace", laplace)
