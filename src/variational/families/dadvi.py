"""Deterministic ADVI (``method="dadvi"``), with linear-response covariances.

Giordano, Ingram and Broderick (2024), "Black Box Variational Inference with a Deterministic
Objective". Mean-field ADVI's objective is an expectation over ``z = mu + sigma * eps``; DADVI
fixes ``M`` base draws ``eps_1..eps_M`` once and minimises the resulting deterministic function

    F(mu, log sigma) = -1/M sum_m log p(mu + sigma * eps_m) - sum log sigma

to convergence by trust-region Newton-CG (:mod:`._newton`: one compiled function of the model
gives F, its gradient and Hessian-vector products; every accepted step lowers F, so its trace
decreases monotonically). Then, at the optimum ``eta*`` with Hessian ``H = d^2 F`` (exact, from
the same Hessian-vector products):

- **linear-response covariance** ``Cov(z) ~ [H^-1]_{mu mu}`` (how the optimal means move when
  the log density is tilted): a full covariance from a mean-field fit, which corrects the
  mean-field sds that are too small when the posterior is correlated. The fit's Gaussian uses
  it (``fit.cov``, ``fit.std``, draws); the mean-field sds stay in
  ``fit.solution.info["mean_field_std"]``.
- **Monte Carlo standard error** of the means from the fixed draws (the sandwich
  ``H^-1 V H^-1 / M``, ``V`` the covariance of the per-draw gradients): ``fit.mcse``, computed
  when first asked for (it compiles the per-draw gradients).

By default the draws come in antithetic pairs ``(eps, -eps)``: each is still a standard normal
draw, but their mean is exactly zero, so every odd-order term of the error cancels (on a
Gaussian posterior the means and the linear-response covariance are then exact).
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..compilation import run_traced
from ..errors import VariationalError
from . import _newton
from ..errors import whole_number
from ._checks import positive_float
from ._fixed import fixed_gaussian
from .base import Family, Problem, Solution, register_family

__all__ = ["dadvi", "base_draws"]

LR_MAX_DIM = 2000   # the linear-response Hessian is (2D, 2D)


def base_draws(key: jax.Array, num_draws: int, dim: int, antithetic: bool, dtype: Any) -> jax.Array:
    """The fixed standard normal draws ``(num_draws, dim)`` (antithetic: ``eps`` then ``-eps``)."""
    if antithetic:
        half = jax.random.normal(key, (num_draws // 2, dim), dtype)
        return jnp.concatenate([half, -half])
    return jax.random.normal(key, (num_draws, dim), dtype)


def _check(num_draws: Any, antithetic: bool, init_scale: Any, maxiter: Any, gtol: Any, lr: bool,
           max_time: Any) -> dict:
    m = whole_number("num_draws", num_draws, minimum=2)
    if antithetic and m % 2:
        raise VariationalError(f"num_draws={m} must be even with antithetic=True (draws come in pairs "
                               f"eps, -eps); use {m + 1} or antithetic=False")
    return {"num_draws": m, "antithetic": bool(antithetic), "init_scale": positive_float("init_scale", init_scale),
            "maxiter": whole_number("maxiter", maxiter, 1), "gtol": positive_float("gtol", gtol, allow_zero=True),
            "lr": bool(lr), "max_time": None if max_time is None else positive_float("max_time", max_time)}


def dadvi(num_draws: int = 30, antithetic: bool = True, lr: bool = True, init_scale: float = 1.0,
          maxiter: int = 1000, gtol: float = 1e-6, max_time: float | None = _newton.MAX_TIME) -> Family:
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
    maxiter, gtol : optional
        Trust-region Newton-CG: largest number of iterations; stop when the gradient's norm is
        below ``gtol`` (or when float precision no longer predicts a decrease);
        ``fit.converged`` then requires the optimum to be within 0.05 posterior sds by the local
        quadratic.
    max_time : float or None
        Time budget of the search in seconds (None: no limit). A search stopped by ``maxiter``
        or ``max_time`` keeps its last accepted iterate, is not converged, and ``fit.message``
        names the budget it hit.

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
    opts = _check(num_draws, antithetic, init_scale, maxiter, gtol, lr, max_time)
    return fixed_gaussian("dadvi", lambda problem: _solve(problem, opts), opts)


def _per_draw(problem: Problem) -> Any:
    """``f_m(eta)``: the objective of one base draw (its mean over the draws is F)."""
    def one(eta: jax.Array, e: jax.Array, data: Any) -> jax.Array:
        d = eta.shape[0] // 2
        return -problem.logp(eta[:d] + jnp.exp(eta[d:]) * e, data) - jnp.sum(eta[d:])
    return one


def _solve(problem: Problem, opts: dict) -> Solution:
    dim, dtype, m = problem.z0.shape[0], problem.z0.dtype, opts["num_draws"]
    eps = base_draws(jax.random.fold_in(problem.key, 7), m, dim, opts["antithetic"], dtype)
    scale0 = jnp.full((dim,), opts["init_scale"], dtype) if problem.scale0 is None else problem.scale0
    eta0 = jnp.concatenate([problem.z0, jnp.log(scale0).astype(dtype)])
    one = _per_draw(problem)
    sequential = _newton.uses_linear_algebra(one, eta0, eps[0], problem.data)   # see over_draws
    objective = lambda eta, de: jnp.mean(_newton.over_draws(lambda e: one(eta, e, de[0]), de[1], sequential))  # noqa: E731
    fgh = _newton.compile_fgh(objective, eta0, (problem.data, eps), problem.lift)
    for _ in range(4):   # a start whose draws leave the model's domain (an ODE that blows up): narrower
        if np.isfinite(fgh(eta0)[0]):
            break
        eta0 = eta0.at[dim:].add(-np.log(10.0))
    res = _newton.minimize(fgh, eta0, maxiter=opts["maxiter"], gtol=opts["gtol"], max_time=opts["max_time"])
    mu, sd = res.x[:dim], np.exp(res.x[dim:])
    info: dict = {"mean_field_std": sd, "objective": res.f, "num_draws": m,
                  "max_abs_grad": float(np.max(np.abs(res.g))), "linear_response": False}
    calls, chol, ok = res.calls, np.diag(sd), None
    message = "the DADVI optimisation " + res.message
    if opts["lr"] and dim <= LR_MAX_DIM:
        labels = tuple(f"mean of {x}" for x in problem.labels) + tuple(f"log sd of {x}" for x in problem.labels)
        hinv = _newton.covariance_from_precision(_newton.hessian(fgh, res.x), labels,
                                                 "the Hessian of the DADVI objective at its optimum")
        calls += 2 * dim
        chol = np.linalg.cholesky(hinv[:dim, :dim])
        away = _newton.distance(res.g, hinv)
        ok = away <= 0.05
        message += f"; the optimum is {away:.2g} posterior sds away by the local quadratic"
        info.update(linear_response=True, sds_from_optimum=away,
                    mcse=_later_mcse(problem, res.x, eps, hinv, opts["antithetic"], sequential))
    elif opts["lr"]:
        info["note"] = (f"linear-response covariance skipped: {dim} latent dimensions > {LR_MAX_DIM}; "
                        f"the sds are the mean-field ones")
    if ok is None:
        ok = float(np.linalg.norm(res.g)) <= max(opts["gtol"], 1e-3)
    ok = ok and res.budget is None
    params = {"loc": _newton.as_jax(mu, dtype), "chol": _newton.as_jax(chol, dtype)}
    # each call evaluates, for every base draw, one gradient and one Hessian-vector product
    return Solution(params, res.trace, res.iterations, 3 * calls * m, bool(ok), message, info)


def _later_mcse(problem: Problem, eta: np.ndarray, eps: jax.Array, hinv: np.ndarray, antithetic: bool,
                sequential: bool) -> Any:
    """``fit.mcse`` when first asked for: the standard errors of the means (:func:`_mcse`).

    It keeps the problem and plain arrays, never a function traced during the solve: JAX
    (0.10) keeps one canonical copy of each NumPy constant a model closes over while a trace
    of it lives, in the dtype of the mode it was traced in, so a float64 trace kept alive here
    made every later float32 program of the model mix float64 constants into float32 code
    (``fit.diagnose()`` failed to lower).
    """
    dim = eta.shape[0] // 2
    eps = np.asarray(eps)
    return lambda: _mcse(problem, eta, eps, hinv, antithetic, sequential)[:dim]


def _mcse(problem: Problem, eta: np.ndarray, eps: np.ndarray, hinv: np.ndarray,
          antithetic: bool, sequential: bool) -> np.ndarray:
    """Standard errors of the optimal parameters over the draw of the fixed draws (sandwich).

    With antithetic draws the independent units are the pairs ``(eps, -eps)``.
    """
    mode = _newton.float64() if eps.dtype == np.float64 else contextlib.nullcontext()
    with mode:   # asked for later, outside the solve
        grad = jax.grad(_per_draw(problem))

        def grads(x: jax.Array, es: jax.Array, d: Any) -> jax.Array:
            return _newton.over_draws(lambda e: grad(x, e, d), es, sequential)

        g = np.asarray(run_traced("gradient per draw", grads, np.asarray(eta, eps.dtype), eps, problem.data,
                                  lift=problem.lift), np.float64)
    if antithetic:
        half = g.shape[0] // 2
        g = 0.5 * (g[:half] + g[half:])
    n = g.shape[0]
    v = np.cov(g, rowvar=False, ddof=1).reshape(g.shape[1], g.shape[1])
    cov = hinv @ v @ hinv / n
    return np.sqrt(np.maximum(np.diag(cov), 0.0))


register_family("dadvi", dadvi, direct=True)
