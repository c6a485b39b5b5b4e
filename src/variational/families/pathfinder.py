"""Pathfinder (``method="pathfinder"``): Gaussians along L-BFGS paths, the best by ELBO, resampled.

Zhang, Carpenter, Gelman and Vehtari (2022), "Pathfinder: Parallel quasi-Newton variational
inference". For each of ``num_paths`` starts (the initial point jittered uniformly by
``jitter``):

1. L-BFGS (scipy's L-BFGS-B, as in pymc-extras) on ``-log p``, recording every accepted iterate
   and its gradient. After each step the pair (step, gradient change) is kept when it has
   positive curvature, and the diagonal of the inverse Hessian is updated as in the paper's
   algorithm 3 (Gilbert and Lemarechal).
2. At each iterate, the Gaussian ``N(x - Sigma grad, Sigma)`` with ``Sigma`` the inverse Hessian
   from the last ``maxcor`` kept pairs (:mod:`._mixture`, in float64 on the host); its ELBO is
   estimated from ``num_elbo_draws`` draws and the best Gaussian of the path is kept.
3. ``num_draws_per_path`` draws from each path's best Gaussian; their importance weights
   ``p / q`` are taken against the **equal mixture of the paths' Gaussians** (not each draw's
   own path: with the mixture density, two modes get their posterior mass whatever the number
   of paths that found each), Pareto-smoothed (PSIS, k-hat reported) or plain.

``fit.sample(n)`` resamples the weighted draws (with replacement); ``fit.diagnose()`` and
``fit.sample(n, importance=True)`` use the mixture density, so its k-hat is Pathfinder's own.

Only two functions of the model are compiled: its value and gradient (for L-BFGS) and its
value on a block of points (for every ELBO draw and the pool). A vectorised design that ran all
paths through optax's L-BFGS in one compiled call was measured first: it compiled about five
copies of the model's gradient (the line search alone holds two) and took five times the
engine's compile time on radon, more than pymc-extras' whole run; the paths themselves take
milliseconds.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import VariationalError, whole_number
from . import _newton
from ._checks import positive_float
from ._mixture import Approx, approximation, draw, log_q, mixture_log_q, mixture_sample, placeholder
from . import _pool
from ._psis import prefetch
from .base import Family, Params, Problem, Solution, register_family

__all__ = ["pathfinder"]

BLOCK = 64   # iterates whose ELBO draws are evaluated together


def _memory(maxcor: int | None, dim: int) -> int:
    """Pairs kept: ``maxcor``, by default ``max(5, ceil(3 log D))`` as in pymc-extras."""
    return int(maxcor) if maxcor is not None else max(5, math.ceil(3 * math.log(max(dim, 1))))


def _lbfgs_path(vg: Any, x0: np.ndarray, opts: dict, j: int, clock: _newton.Clock
                ) -> tuple[np.ndarray, np.ndarray, int, str, str | None]:
    """One L-BFGS path: the iterates and their gradients (of ``-log p``), evaluations, why it
    ended, and the budget that ended it ("maxiter", "max_time" or None)."""
    xs: list[np.ndarray] = []
    gs: list[np.ndarray] = []

    def timed(x: np.ndarray) -> tuple[float, np.ndarray]:
        if len(xs) > 2:   # (a Gaussian needs two steps)
            clock.check()
        return vg(x)

    driver = _newton.ScipyDriver(timed, guard=True)

    def keep(intermediate_result: Any) -> None:
        x = np.array(intermediate_result.x, np.float64)
        xs.append(x)
        gs.append(driver.gradient_at(x))

    f0, g0 = driver.fun(x0)
    if not np.isfinite(f0):
        empty = np.empty((0, x0.shape[0]))
        return empty, empty, driver.calls, "log density not finite at the start", None
    xs.append(np.array(x0, np.float64))
    gs.append(g0)
    try:
        res = driver.minimize(x0, method="L-BFGS-B", callback=keep, options={
            "maxcor": j, "maxiter": opts["maxiter"], "ftol": opts["ftol"], "gtol": opts["gtol"], "maxls": opts["maxls"]})
    except _newton.OutOfTime:
        budget = "max_time"
    else:
        budget = "maxiter" if res.status == 1 else None   # status 1: maxiter reached
        if budget is None:
            why = f"{str(res.message).lower()} after {int(res.nit)} iteration(s)"
            return np.stack(xs), np.stack(gs), driver.calls, why, None
    why = _newton.budget_text(budget, opts["maxiter"], opts["max_time"], len(xs) - 1, clock.elapsed())
    return np.stack(xs), np.stack(gs), driver.calls, why, budget


def _gaussians(xs: np.ndarray, gs: np.ndarray, j: int, k: int, eps: float) -> list[Approx | None]:
    """The Gaussian at every iterate after the first (algorithm 3's pairs and diagonal)."""
    dim = xs.shape[1]
    alpha, S, Z, out = np.ones(dim), np.empty((0, dim)), np.empty((0, dim)), []
    for l in range(1, xs.shape[0]):
        s, z = xs[l] - xs[l - 1], gs[l] - gs[l - 1]
        sz = float(s @ z)
        if np.isfinite(sz) and sz > eps * float(z @ z):
            za, sa = float(z @ (alpha * z)), float(s @ (s / alpha))
            inv = za / (sz * alpha) + z * z / sz - za * s * s / (sz * sa * alpha * alpha)
            if np.all(inv > 0) and np.all(np.isfinite(inv)):
                alpha = 1.0 / inv
            S, Z = np.concatenate([S, s[None]])[-j:], np.concatenate([Z, z[None]])[-j:]
        out.append(approximation(xs[l], gs[l], S, Z, alpha, k))
    return out


def _best(gaussians: list[Approx | None], logp: Any, rng: np.random.Generator, draws: int
          ) -> tuple[float, int, Approx | None, np.ndarray]:
    """The Gaussian with the highest ELBO estimate, its iterate, and every ELBO (-inf: failed)."""
    elbo = np.full(len(gaussians), -np.inf)
    for start in range(0, len(gaussians), BLOCK):
        block = [(i, a) for i, a in enumerate(gaussians[start:start + BLOCK], start) if a is not None]
        if not block:
            continue
        pts, lqs = zip(*(draw(a, rng.standard_normal((draws, a.mu.shape[0])), np) for _, a in block))
        lp = logp(np.concatenate(pts)).reshape(len(block), draws)
        for (i, _), lpi, lqi in zip(block, lp, lqs):
            e = float(np.mean(lpi - lqi))
            elbo[i] = e if np.isfinite(e) else -np.inf
    best = int(np.argmax(elbo)) if len(elbo) else 0
    ok = len(elbo) > 0 and np.isfinite(elbo[best])
    return (float(elbo[best]) if ok else -np.inf), best + 1, (gaussians[best] if ok else None), elbo


def pathfinder(num_paths: int = 4, num_draws_per_path: int = 1000, maxcor: int | None = None,
               maxiter: int = 1000, ftol: float = 1e-9, gtol: float = 1e-8, maxls: int = 25,
               num_elbo_draws: int = 10, jitter: float = 2.0, epsilon: float = 1e-12,
               importance_sampling: str | None = "psis", max_time: float | None = _newton.MAX_TIME) -> Family:
    """Multi-path Pathfinder, with the options named as in Stan and pymc-extras.

    Parameters
    ----------
    num_paths : int
        Independent L-BFGS paths, run together in one compiled call.
    num_draws_per_path : int
        Draws of each path's best Gaussian; ``fit.sample(n)`` resamples their pool.
    maxcor : int, optional
        Pairs kept for the inverse Hessian (default ``max(5, ceil(3 log D))``).
    maxiter, ftol, gtol, maxls : optional
        L-BFGS (scipy's L-BFGS-B): largest number of iterations; stop when a step lowers
        ``-log p`` by less than ``ftol`` relative, or every gradient coordinate is below
        ``gtol``; line-search trials.
    num_elbo_draws : int
        Draws estimating the ELBO of each iterate's Gaussian.
    jitter : float
        Each path starts at the initial point plus uniform noise in ``[-jitter, jitter]`` per
        coordinate (times the sds of an ``init=`` fit).
    epsilon : float
        A pair is kept only when its curvature ``s.y > epsilon |y|^2``.
    importance_sampling : {"psis", "plain", None}
        How the pool is weighted against the mixture of the paths' Gaussians: Pareto-smoothed
        (when k-hat is at most 0.7; above it the weights are unreliable and the pool is used
        unweighted, as the message says), raw importance weights, or not at all (draws of the
        mixture as they are).
    max_time : float or None
        Time budget of all the paths' L-BFGS searches together, in seconds (None: no limit).
        A path stopped by ``maxiter`` or ``max_time`` keeps its iterates so far, but the fit is
        not converged and ``fit.message`` names the budget; paths not started within the
        budget are left out.

    Returns
    -------
    Family
        The mixture of the paths' best Gaussians with the weighted pool, found by ``solve``.

    Examples
    --------
    >>> import numpy as np
    >>> import variational as vi
    >>> def model(y):
    ...     mu = vi.Normal("mu", 0, 10)
    ...     vi.Normal("y", mu, 1.0, observed=y)
    >>> fit = vi.fit(model, {"y": np.ones(20)}, method="pathfinder", progress=False)
    >>> bool(abs(float(fit.mean["mu"]) - 20 / (20 + 0.01)) < 0.05)
    True
    """
    opts = _check(num_paths, num_draws_per_path, maxcor, maxiter, ftol, gtol, maxls, num_elbo_draws,
                  jitter, epsilon, importance_sampling, max_time)
    n_pool = opts["num_paths"] * opts["num_draws_per_path"]

    def init(key: jax.Array, z0: jax.Array) -> Params:
        dim = z0.shape[0]
        k = min(dim, 2 * _memory(opts["maxcor"], dim))
        return {"approx": placeholder(dim, k, z0.dtype, opts["num_paths"]),
                "log_weight": jnp.full(opts["num_paths"], -math.log(opts["num_paths"]), z0.dtype),
                "pool": jnp.zeros((n_pool, dim), z0.dtype),
                "pool_log_weight": jnp.full(n_pool, -math.log(n_pool), z0.dtype)}

    weighted = opts["importance_sampling"] is not None
    return Family("pathfinder", init, _sample_and_log_q, _log_q,
                  mean=_pool.mean if weighted else None, std=_pool.std if weighted else None,
                  cov=_pool.cov if weighted else None, sample=_pool.resample if weighted else None,
                  solve=lambda problem: _solve(problem, opts), options=dict(opts))


# the family's functions, compiled once per shape and shared by every Pathfinder fit
@partial(jax.jit, static_argnums=2)
def _sample_and_log_q(p: Params, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    return mixture_sample(p["approx"], p["log_weight"], key, n)


@jax.jit
def _log_q(p: Params, z: jax.Array) -> jax.Array:
    return mixture_log_q(p["approx"], p["log_weight"], z)


def _solve(problem: Problem, opts: dict) -> Solution:
    prefetch()
    dim, dtype, m = problem.z0.shape[0], problem.z0.dtype, opts["num_draws_per_path"]
    j = _memory(opts["maxcor"], dim)
    k = min(dim, 2 * j)
    vg = _newton.compile_vg(lambda z, data: -problem.logp(z, data), problem.z0, problem.data, problem.lift)
    logp = _newton.compile_batch(problem.logp, problem.z0, problem.data, lift=problem.lift)
    rng = _newton.seed_of(problem.key)
    z0 = np.asarray(problem.z0, np.float64)
    scale = 1.0 if problem.scale0 is None else np.asarray(problem.scale0, np.float64)
    paths, best, traces, clock = [], [], [], _newton.Clock(opts["max_time"])
    for i in range(opts["num_paths"]):
        start = z0 + opts["jitter"] * scale * rng.uniform(-1, 1, dim)
        if i and opts["max_time"] is not None and clock.elapsed() > opts["max_time"]:
            break   # (the first path always runs)
        xs, gs, calls, why, budget = _lbfgs_path(vg, start, opts, j, clock)
        elbo, it, a, elbos = _best(_gaussians(xs, gs, j, k, opts["epsilon"]), logp, rng, opts["num_elbo_draws"])
        paths.append({"elbo": elbo, "best_iteration": it, "iterations": max(len(xs) - 1, 0),
                      "grad_evals": calls, "stopped": why, "budget": budget})
        best.append(a)
        traces.append(-elbos)
    skipped = opts["num_paths"] - len(best)
    best += [None] * skipped   # (the parameters keep one slot per path)
    ok = np.array([a is not None for a in best])
    if not ok.any():
        raise VariationalError("no Pathfinder path found a Gaussian with a finite ELBO (the log density is "
                               "not finite around its starts); give start= values, a smaller jitter=, "
                               "or use method='advi'")
    log_w = np.where(ok, -np.log(ok.sum()), -np.inf)
    blank = Approx(z0, np.ones(dim), np.eye(dim, k), np.eye(k), 0.0)
    stacked = Approx(*(np.stack([np.asarray((a or blank)[i], np.float64) for a in best]) for i in range(5)))
    pool = np.concatenate([draw(a or blank, rng.standard_normal((m, dim)), np)[0] for a in best])
    per_path = np.stack([log_q(Approx(*(f[i] for f in stacked)), pool, np) + w for i, w in enumerate(log_w)])
    raw = logp(pool) - np.logaddexp.reduce(per_path, axis=0)
    raw[~np.repeat(ok, m)] = -np.inf
    lw, khat, ess = _pool.weigh(raw, opts["importance_sampling"])
    cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    params = {"approx": Approx(*(cast(f) for f in stacked)), "log_weight": cast(log_w), "pool": cast(pool),
              "pool_log_weight": cast(lw)}
    top = int(np.argmax([p["elbo"] for p in paths]))
    info = {"paths": paths, "khat": khat, "ess": ess, "memory": j,
            "logp_evals": sum(p["iterations"] for p in paths) * opts["num_elbo_draws"] + pool.shape[0]}
    message = (f"{int(ok.sum())} of {opts['num_paths']} paths found a Gaussian; best ELBO {paths[top]['elbo']:.6g} "
               f"(path {top}, iteration {paths[top]['best_iteration']}); "
               + _pool.describe(khat, ess, pool.shape[0], opts["importance_sampling"]))
    ended = [f"path {i} {p['stopped']}" for i, p in enumerate(paths) if p["budget"]]
    if skipped:
        ended.append(f"{skipped} path(s) not started within the time budget (max_time={opts['max_time']:g} s)")
    if ended:
        message += "; not converged: " + "; ".join(ended)
    return Solution(params, traces[top], paths[top]["iterations"], sum(p["grad_evals"] for p in paths),
                    not ended, message, info)


def _check(num_paths: Any, num_draws_per_path: Any, maxcor: Any, maxiter: Any, ftol: Any, gtol: Any,
           maxls: Any, num_elbo_draws: Any, jitter: Any, epsilon: Any, importance_sampling: Any,
           max_time: Any) -> dict:
    if importance_sampling not in _pool.CHOICES:
        raise VariationalError(f"importance_sampling={importance_sampling!r} must be one of {_pool.CHOICES}")
    return {"num_paths": whole_number("num_paths", num_paths, 1),
            "num_draws_per_path": whole_number("num_draws_per_path", num_draws_per_path, 1),
            "maxcor": None if maxcor is None else whole_number("maxcor", maxcor, 1),
            "maxiter": whole_number("maxiter", maxiter, 1), "ftol": positive_float("ftol", ftol, allow_zero=True),
            "gtol": positive_float("gtol", gtol, allow_zero=True), "maxls": whole_number("maxls", maxls, 1),
            "num_elbo_draws": whole_number("num_elbo_draws", num_elbo_draws, 1),
            "jitter": positive_float("jitter", jitter, allow_zero=True),
            "epsilon": positive_float("epsilon", epsilon, allow_zero=True), "importance_sampling": importance_sampling,
            "max_time": None if max_time is None else positive_float("max_time", max_time)}


register_family("pathfinder", pathfinder, direct=True)
