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
4. Importance sampling (``importance_sampling="psis"``, :mod:`._pool`): ``importance_draws``
   draws of q weighed by ``p / q``. The joint mode is not the mean: for scale parameters it sits
   low (the classic bias that REML corrects: ``sigma`` was 0.4 posterior sds low on a
   5-coefficient regression with 100 rows), and the weights move the answer to the posterior's
   mean. Above k-hat 0.7 the weights are not used and the message says so.

Draws go through the same transforms as every other family.
"""

from __future__ import annotations


import numpy as np

from ..errors import VariationalError
from . import _newton, _pool
from ..errors import whole_number
from ._checks import positive_float
from ._psis import prefetch
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


def laplace(maxiter: int = 1000, gtol: float = 1e-6, importance_sampling: str | None = "psis",
            importance_draws: int = 4000, max_time: float | None = _newton.MAX_TIME) -> Family:
    """Laplace approximation: ``N(mode, (-Hessian)^-1)`` in the unconstrained space.

    Parameters
    ----------
    maxiter : int
        Largest number of trust-region iterations of the mode search.
    gtol : float
        The search ends when the gradient's norm is below ``gtol`` (or when float precision no
        longer predicts a decrease); ``fit.converged`` then requires the mode to be within
        0.05 posterior sds by the local quadratic.
    importance_sampling : {"psis", "plain", None}
        Weigh ``importance_draws`` draws of the Gaussian by ``p / q`` (Pareto-smoothed; not
        used above k-hat 0.7), and report the weighted answer; None: the Gaussian as it is.
    importance_draws : int
        Size of that pool.
    max_time : float or None
        Time budget of the mode search in seconds (None: no limit). A search stopped by
        ``maxiter`` or ``max_time`` is not converged, and ``fit.message`` names the budget.

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
    if importance_sampling not in _pool.CHOICES:
        raise VariationalError(f"importance_sampling={importance_sampling!r} must be one of {_pool.CHOICES}")
    opts = {"maxiter": whole_number("maxiter", maxiter, 1), "gtol": positive_float("gtol", gtol, allow_zero=True),
            "importance_sampling": importance_sampling,
            "importance_draws": whole_number("importance_draws", importance_draws, minimum=10),
            "max_time": None if max_time is None else positive_float("max_time", max_time)}

    def solve(problem: Problem) -> Solution:
        dim, dtype = problem.z0.shape[0], problem.z0.dtype
        if dim > MAX_DIM:
            raise VariationalError(f"method='laplace' forms a dense {dim}-square covariance; above "
                                   f"{MAX_DIM} latent dimensions use method='dadvi' or 'advi'")
        if opts["importance_sampling"] is not None:
            prefetch()
        fgh = _newton.compile_fgh(lambda z, data: -problem.logp(z, data), problem.z0, problem.data, problem.lift)
        res = _newton.minimize(fgh, problem.z0, maxiter=opts["maxiter"], gtol=opts["gtol"], max_time=opts["max_time"])
        try:
            cov = _newton.covariance_from_precision(_newton.hessian(fgh, res.x), problem.labels,
                                                    "the Hessian of -log p at the mode")
        except VariationalError as e:
            raise VariationalError(_not_a_mode(str(e), res.g, problem.labels, res.message)) from None
        away = _newton.distance(res.g, cov)
        chol = np.linalg.cholesky(cov)
        params = {"loc": _newton.as_jax(res.x, dtype), "chol": _newton.as_jax(chol, dtype)}
        info = {"mode_logp": -res.f, "max_abs_grad": float(np.max(np.abs(res.g))), "sds_from_mode": away,
                "fgh_calls": res.calls, "hessian_vector_products": dim}
        message = (f"the mode search {res.message}; the mode is {away:.2g} posterior sds away by the "
                   f"local quadratic")
        if opts["importance_sampling"] is not None:
            pool, lw, khat, ess = _weighed_pool(problem, res.x, chol, opts)
            params.update(pool=_newton.as_jax(pool, dtype), pool_log_weight=_newton.as_jax(lw, dtype))
            info.update(khat=khat, ess=ess, logp_evals=pool.shape[0])
            message += "; " + _pool.describe(khat, ess, pool.shape[0], opts["importance_sampling"])
        # each call: one gradient and one Hessian-vector product (two gradients' worth)
        ok = away <= 0.05 and res.budget is None
        return Solution(params, res.trace, res.iterations, 3 * (res.calls + dim), ok, message, info)

    pooled = opts["importance_draws"] if opts["importance_sampling"] is not None else 0
    return fixed_gaussian("laplace", solve, opts, pool=pooled)


def _weighed_pool(problem: Problem, mode: np.ndarray, chol: np.ndarray, opts: dict) -> tuple:
    """Draws of ``N(mode, chol chol^T)`` and their normalised log importance weights."""
    u = _newton.seed_of(problem.key).standard_normal((opts["importance_draws"], mode.shape[0]))
    pool = mode + u @ chol.T
    log_q = -0.5 * np.sum(u * u, 1) - np.sum(np.log(np.diag(chol))) - 0.5 * mode.shape[0] * np.log(2 * np.pi)
    logp = _newton.compile_batch(problem.logp, problem.z0, problem.data, lift=problem.lift)
    lw, khat, ess = _pool.weigh(logp(pool) - log_q, opts["importance_sampling"])
    return pool, lw, khat, ess


register_family("laplace", laplace, direct=True)
