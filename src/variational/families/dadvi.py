"""Deterministic ADVI (``method="dadvi"``), with linear-response covariances.

Giordano, Ingram and Broderick (2024), "Black Box Variational Inference with a Deterministic
Objective". Mean-field ADVI's objective is an expectation over ``z = mu + sigma * eps``; DADVI
fixes ``M`` base draws ``eps_1..eps_M`` once and minimises the resulting deterministic function

    F(mu, log sigma) = -1/M sum_m log p(mu + sigma * eps_m) - sum log sigma

to convergence with L-BFGS (optax; every accepted step lowers F, so its trace decreases
monotonically). Then, at the optimum ``eta*`` with Hessian ``H = d^2 F``:

- **linear-response covariance** ``Cov(z) ~ [H^-1]_{mu mu}`` (how the optimal means move when
  the log density is tilted): a full covariance from a mean-field fit, which corrects the
  mean-field sds that are too small when the posterior is correlated. The fit's Gaussian uses
  it (``fit.cov``, ``fit.std``, draws); the mean-field sds stay in
  ``fit.solution.info["mean_field_std"]``.
- **Monte Carlo standard error** of the means from the fixed draws (the sandwich
  ``H^-1 V H^-1 / M``, ``V`` the covariance of the per-draw gradients): ``fit.mcse``.

By default the draws come in antithetic pairs ``(eps, -eps)``: each is still a standard normal
draw, but their mean is exactly zero, so every odd-order term of the error cancels (on a
Gaussian posterior the means and the linear-response covariance are then exact).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import VariationalError
from . import _lbfgs
from ._checks import positive_float, positive_int
from ._fixed import fixed_gaussian
from .base import Family, Problem, Solution, register_family
from .laplace import covariance_from_precision, default_ftol, hessian

__all__ = ["dadvi", "base_draws"]

LR_MAX_DIM = 2000   # the linear-response Hessian is (2D, 2D)


def base_draws(key: jax.Array, num_draws: int, dim: int, antithetic: bool, dtype: Any) -> jax.Array:
    """The fixed standard normal draws ``(num_draws, dim)`` (antithetic: ``eps`` then ``-eps``)."""
    if antithetic:
        half = jax.random.normal(key, (num_draws // 2, dim), dtype)
        return jnp.concatenate([half, -half])
    return jax.random.normal(key, (num_draws, dim), dtype)


def _check(num_draws: Any, antithetic: bool, init_scale: Any, maxiter: Any, gtol: Any, ftol: Any,
           maxcor: Any, lr: bool) -> dict:
    m = positive_int("num_draws", num_draws, minimum=2)
    if antithetic and m % 2:
        raise VariationalError(f"num_draws={m} must be even with antithetic=True (draws come in pairs "
                               f"eps, -eps); use {m + 1} or antithetic=False")
    return {"num_draws": m, "antithetic": bool(antithetic), "init_scale": positive_float("init_scale", init_scale),
            "maxiter": positive_int("maxiter", maxiter), "gtol": positive_float("gtol", gtol, allow_zero=True),
            "ftol": None if ftol is None else positive_float("ftol", ftol, allow_zero=True),
            "maxcor": positive_int("maxcor", maxcor), "lr": bool(lr)}


def dadvi(num_draws: int = 30, antithetic: bool = True, lr: bool = True, init_scale: float = 1.0,
          maxiter: int = 2000, gtol: float = 1e-6, ftol: float | None = None, maxcor: int = 10) -> Family:
    """Deterministic mean-field ADVI on fixed draws, with linear-response covariances.

    Parameters
    ----------
    num_draws : int
        Fixed base draws ``M`` (30 as in the paper and pymc-extras).
    antithetic : bool
        Draw them in pairs ``(eps, -eps)`` (``num_draws`` must then be even).
    lr : bool
        Report the linear-response covariance (needs the ``(2D, 2D)`` Hessian of the
        objective; skipped, with a note, above 2000 latent dimensions).
    init_scale : float
        Starting standard deviation of every coordinate (an ``init=`` fit gives its own).
    maxiter, gtol, ftol, maxcor : optional
        L-BFGS: largest number of iterations; stop when every gradient coordinate is below
        ``gtol``, or when a step lowers the objective by less than ``ftol`` relative (default:
        four units of the float precision); memory.

    Returns
    -------
    Family
        A Gaussian with fixed mean and (linear-response) covariance, found by ``solve``.

    Examples
    --------
    >>> import numpy as np
    >>> import variational as vi
    >>> def model():
    ...     vi.MvNormal("x", np.zeros(2), np.array([[1.0, 0.9], [0.9, 1.0]]))
    >>> fit = vi.fit(model, method="dadvi", progress=False)
    >>> round(float(fit.cov[0, 1]), 2)       # mean-field, yet the correlation is recovered
    0.9
    """
    opts = _check(num_draws, antithetic, init_scale, maxiter, gtol, ftol, maxcor, lr)

    def solve(problem: Problem) -> Solution:
        dim, dtype = problem.z0.shape[0], problem.z0.dtype
        eps = base_draws(jax.random.fold_in(problem.key, 7), opts["num_draws"], dim, opts["antithetic"], dtype)
        scale0 = jnp.full((dim,), opts["init_scale"], dtype) if problem.scale0 is None else problem.scale0
        eta0 = jnp.concatenate([problem.z0, jnp.log(scale0).astype(dtype)])
        with_lr = opts["lr"] and dim <= LR_MAX_DIM
        st, h, per_draw = _core(problem, opts, with_lr)(eta0, eps, problem.data)
        it, status = int(st.it), int(st.status)
        if status == _lbfgs.NONFINITE:
            raise VariationalError("the DADVI objective is not finite at the start (a draw of the "
                                   "starting Gaussian leaves the support); give start= values or init=")
        mu, sd = st.x[:dim], jnp.exp(st.x[dim:])
        labels = tuple(f"mean of {x}" for x in problem.labels) + tuple(f"log sd of {x}" for x in problem.labels)
        info: dict = {"mean_field_std": np.asarray(sd), "objective": float(st.f), "num_draws": opts["num_draws"],
                      "max_abs_grad": float(jnp.max(jnp.abs(st.g))), "linear_response": with_lr}
        evals = int(st.n_grad) * opts["num_draws"] + opts["num_draws"]
        if with_lr:
            hinv = covariance_from_precision(h, labels, "the Hessian of the DADVI objective at its optimum")
            chol = jnp.asarray(np.linalg.cholesky(hinv[:dim, :dim]), dtype)
            info["mcse"] = _mcse(hinv, np.asarray(per_draw, np.float64), opts["antithetic"])[:dim]
            evals += 2 * 2 * dim * opts["num_draws"]
        else:
            chol = jnp.diag(sd)
            if opts["lr"]:
                info["note"] = (f"linear-response covariance skipped: {dim} latent dimensions > {LR_MAX_DIM}; "
                                f"the sds are the mean-field ones")
        ok = status in (_lbfgs.GTOL, _lbfgs.FTOL, _lbfgs.LINESEARCH)
        return Solution({"loc": mu, "chol": chol}, np.asarray(st.trace)[:it], it, evals, ok,
                        "DADVI objective " + _lbfgs.status_message(status, it), info)

    return fixed_gaussian("dadvi", solve, opts)


def _core(problem: Problem, opts: dict, with_lr: bool) -> Any:
    """The compiled solve: L-BFGS on the fixed-draw objective, its Hessian, per-draw gradients."""
    ftol = opts["ftol"] if opts["ftol"] is not None else default_ftol(problem.z0.dtype)

    def one(eta: jax.Array, e: jax.Array, data: Any) -> jax.Array:
        d = eta.shape[0] // 2
        return -problem.logp(eta[:d] + jnp.exp(eta[d:]) * e, data) - jnp.sum(eta[d:])

    @jax.jit
    def core(eta0: jax.Array, eps: jax.Array, data: Any) -> tuple:
        objective = lambda eta: jnp.mean(jax.vmap(one, in_axes=(None, 0, None))(eta, eps, data))  # noqa: E731
        st = _lbfgs.minimize(objective, eta0, maxiter=opts["maxiter"], gtol=opts["gtol"], ftol=ftol,
                             memory=opts["maxcor"])
        h = hessian(objective, st.x) if with_lr else None
        per_draw = jax.vmap(jax.grad(one), in_axes=(None, 0, None))(st.x, eps, data)
        return st, h, per_draw

    return core


def _mcse(hinv: np.ndarray, per_draw: np.ndarray, antithetic: bool) -> np.ndarray:
    """Standard errors of the optimal parameters over the draw of the fixed draws (sandwich).

    With antithetic draws the independent units are the pairs ``(eps, -eps)``.
    """
    g = per_draw
    if antithetic:
        half = g.shape[0] // 2
        g = 0.5 * (g[:half] + g[half:])
    n = g.shape[0]
    v = np.cov(g, rowvar=False, ddof=1).reshape(g.shape[1], g.shape[1])
    cov = hinv @ v @ hinv / n
    return np.sqrt(np.maximum(np.diag(cov), 0.0))


register_family("dadvi", dadvi)
