"""The Laplace approximation (``method="laplace"``): a Gaussian at the mode, shaped by the curvature.

1. The mode ``z*`` of the log density of the flat unconstrained vector, **Jacobians of the
   transforms included**, by L-BFGS (optax) in one compiled loop. This is the mode of the very
   density the Gaussian is put on (and the one NUTS samples). Without the Jacobian (PyMC's
   ``find_MAP``, pymc-extras' ``fit_laplace``) the mode is that of the constrained density
   seen through the transform, which is not a mode of the unconstrained density at all and, in
   hierarchical models, often sits at a scale of zero.
2. The Hessian ``H`` of ``-log p`` at ``z*``, exactly, one Hessian-vector product per
   coordinate (forward-over-reverse, in batches, so memory stays O(batch * D)).
3. ``q = N(z*, H^-1)``. When ``H`` is not positive definite (a flat or improper direction, a
   saddle, or an optimiser that stopped early) the fit stops with an error that names the sites
   along the offending directions.

Draws go through the same transforms as every other family.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import VariationalError
from . import _lbfgs
from ._checks import positive_float, positive_int
from ._fixed import fixed_gaussian, named_directions
from .base import Family, Problem, Solution, register_family

__all__ = ["laplace", "hessian", "covariance_from_precision"]

MAX_DIM = 20_000   # a dense D x D covariance beyond this does not fit in memory


def hessian(fun: Callable[[jax.Array], jax.Array], x: jax.Array, batch: int = 64) -> jax.Array:
    """The Hessian of ``fun`` at ``x`` from Hessian-vector products, ``batch`` columns at a time."""
    grad = jax.grad(fun)
    eye = jnp.eye(x.shape[0], dtype=x.dtype)
    columns = jax.lax.map(lambda v: jax.jvp(grad, (x,), (v,))[1], eye, batch_size=min(batch, x.shape[0]))
    return 0.5 * (columns + columns.T)


def covariance_from_precision(h: Any, labels: tuple[str, ...], what: str) -> np.ndarray:
    """``h^-1`` (float64) for a symmetric positive definite ``h``, else an error naming the sites.

    The directions whose curvature is not positive (relative to the largest, at float
    precision) are named by the coordinates that carry them.
    """
    h = np.asarray(h, dtype=np.float64)
    if not np.all(np.isfinite(h)):
        bad = sorted({labels[i] for i in np.argwhere(~np.isfinite(h))[:, 0]})
        raise VariationalError(f"{what} is not finite in the coordinates of {bad}; the log density is "
                               f"not twice differentiable there (or overflows); use method='advi'")
    lam, vec = np.linalg.eigh(h)
    floor = max(abs(lam).max(), 1e-300) * 1e-10
    bad = lam <= floor
    if bad.any():
        where = named_directions(vec[:, bad], labels)
        shown = "; ".join(f"{w} (curvature {v:.3g})" for w, v in list(zip(where, lam[bad]))[:4])
        raise VariationalError(
            f"{what} is not positive definite (the log density is not strictly concave there) "
            f"along {int(bad.sum())} direction(s): {shown}. The posterior is flat, improper or "
            f"multimodal along these sites, or the mode search stopped early; give them proper "
            f"priors, or use method='advi' or 'pathfinder'")
    return (vec / lam) @ vec.T


def _options(maxiter: Any, gtol: Any, ftol: Any, maxcor: Any) -> dict:
    return {"maxiter": positive_int("maxiter", maxiter), "gtol": positive_float("gtol", gtol, allow_zero=True),
            "ftol": None if ftol is None else positive_float("ftol", ftol, allow_zero=True),
            "maxcor": positive_int("maxcor", maxcor)}


def default_ftol(dtype: Any) -> float:
    """Relative decrease that ends a mode search: a few units of the float's precision."""
    return float(4 * jnp.finfo(dtype).eps)


def laplace(maxiter: int = 1000, gtol: float = 1e-6, ftol: float | None = None, maxcor: int = 10) -> Family:
    """Laplace approximation: ``N(mode, (-Hessian)^-1)`` in the unconstrained space.

    Parameters
    ----------
    maxiter : int
        Largest number of L-BFGS iterations of the mode search.
    gtol : float
        The search ends when every gradient coordinate is below ``gtol``.
    ftol : float, optional
        ... or when a step lowers ``-log p`` by less than ``ftol`` relative (default: four
        units of the float precision).
    maxcor : int
        L-BFGS memory (pairs kept).

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
    opts = _options(maxiter, gtol, ftol, maxcor)

    def solve(problem: Problem) -> Solution:
        ftol_ = opts["ftol"] if opts["ftol"] is not None else default_ftol(problem.z0.dtype)

        @jax.jit
        def core(z0: jax.Array, data: Any) -> tuple[_lbfgs.LBFGSState, jax.Array]:
            neg = lambda z: -problem.logp(z, data)  # noqa: E731
            st = _lbfgs.minimize(neg, z0, maxiter=opts["maxiter"], gtol=opts["gtol"], ftol=ftol_,
                                 memory=opts["maxcor"])
            return st, hessian(neg, st.x)

        st, h = core(problem.z0, problem.data)
        it, status = int(st.it), int(st.status)
        if status == _lbfgs.NONFINITE:
            raise VariationalError("the log density or its gradient is not finite at the starting "
                                   "point; give start= values inside the support")
        cov = covariance_from_precision(h, problem.labels, "the Hessian of -log p at the mode")
        chol = np.linalg.cholesky(cov)
        dim = problem.z0.shape[0]
        ok = status in (_lbfgs.GTOL, _lbfgs.FTOL, _lbfgs.LINESEARCH)
        params = {"loc": st.x, "chol": jnp.asarray(chol, problem.z0.dtype)}
        info = {"mode_logp": -float(st.f), "max_abs_grad": float(jnp.max(jnp.abs(st.g))),
                "lbfgs_grad_evals": int(st.n_grad), "hessian_vector_products": dim}
        return Solution(params, np.asarray(st.trace)[:it], it, int(st.n_grad) + 2 * dim, ok,
                        "mode " + _lbfgs.status_message(status, it), info)

    return fixed_gaussian("laplace", solve, opts)


register_family("laplace", laplace)
