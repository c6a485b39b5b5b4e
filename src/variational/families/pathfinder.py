"""Pathfinder (``method="pathfinder"``): Gaussians along L-BFGS paths, the best by ELBO, resampled.

Zhang, Carpenter, Gelman and Vehtari (2022), "Pathfinder: Parallel quasi-Newton variational
inference". For each of ``num_paths`` starts (the initial point jittered uniformly by
``jitter``), all paths in one compiled call (``vmap``):

1. L-BFGS (optax) on ``-log p``. After each accepted step the pair (step, gradient change) is
   kept when it has positive curvature, and the diagonal of the inverse Hessian is updated as in
   the paper's algorithm 3 (Gilbert and Lemarechal).
2. At each iterate, the Gaussian ``N(x - Sigma grad, Sigma)`` with ``Sigma`` the inverse Hessian
   from the last ``maxcor`` pairs (:mod:`._mixture`); its ELBO is estimated from
   ``num_elbo_draws`` draws and the best Gaussian of the path is kept (nothing else is stored,
   so memory does not grow with the number of iterations).
3. ``num_draws_per_path`` draws from each path's best Gaussian; their importance weights
   ``p / q`` are taken against the **equal mixture of the paths' Gaussians** (not each draw's
   own path: with the mixture density, two modes get their posterior mass whatever the number
   of paths that found each), Pareto-smoothed (PSIS, k-hat reported) or plain.

``fit.sample(n)`` resamples the weighted draws (with replacement); ``fit.diagnose()`` and
``fit.sample(n, importance=True)`` use the mixture density, so its k-hat is Pathfinder's own.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import VariationalError
from . import _lbfgs
from ._checks import positive_float, positive_int
from ._mixture import Approx, approximation, draw, mixture_log_q, mixture_sample, placeholder
from ._psis import psis_log_weights
from .base import Family, Params, Problem, Solution, register_family

__all__ = ["pathfinder", "PathState"]

RESAMPLING = ("psis", "plain", None)


class PathState(NamedTuple):
    """What a path carries next to L-BFGS: its pairs, diagonal, and best Gaussian so far."""

    S: jax.Array         # (J, D) steps, oldest first
    Z: jax.Array         # (J, D) gradient changes
    mask: jax.Array      # (J,) pairs kept
    alpha: jax.Array     # (D,) diagonal of the initial inverse Hessian
    best_elbo: jax.Array
    best: Approx
    best_iter: jax.Array
    key: jax.Array


def _push(ps: PathState, s: jax.Array, z: jax.Array, eps: float) -> PathState:
    """Keep the pair ``(s, z)`` when its curvature is positive, and update the diagonal."""
    sz = s @ z
    ok = jnp.isfinite(sz) & (sz > eps * (z @ z))
    a = ps.alpha
    za, sa = z @ (a * z), s @ (s / a)
    inv = za / (sz * a) + z * z / sz - za * s * s / (sz * sa * a * a)
    alpha = jnp.where(ok & jnp.all(inv > 0) & jnp.all(jnp.isfinite(inv)), 1.0 / inv, a)
    shift = lambda buf, new: jnp.where(ok, jnp.roll(buf, -1, axis=0).at[-1].set(new), buf)  # noqa: E731
    return ps._replace(S=shift(ps.S, s), Z=shift(ps.Z, z), mask=shift(ps.mask, True), alpha=alpha)


def _observer(problem: Problem, data: Any, opts: dict) -> Any:
    """After each accepted step: update the pairs, build the Gaussian, estimate its ELBO."""
    def observe(ps: PathState, x_prev: jax.Array, g_prev: jax.Array, x: jax.Array, f: jax.Array,
                g: jax.Array, it: jax.Array) -> tuple[PathState, jax.Array]:
        ps = _push(ps, x - x_prev, g - g_prev, opts["epsilon"])
        a = approximation(x, g, ps.S, ps.Z, ps.mask, ps.alpha)
        u = jax.random.normal(jax.random.fold_in(ps.key, it), (opts["num_elbo_draws"], x.shape[0]), x.dtype)
        z, lq = draw(a, u)
        lp = jax.vmap(problem.logp, in_axes=(0, None))(z, data)
        elbo = jnp.mean(lp - lq)
        elbo = jnp.where(jnp.isfinite(elbo), elbo, -jnp.inf)
        better = elbo > ps.best_elbo
        best = jax.tree_util.tree_map(lambda new, old: jnp.where(better, new, old), a, ps.best)
        ps = ps._replace(best_elbo=jnp.where(better, elbo, ps.best_elbo), best=best,
                         best_iter=jnp.where(better, it, ps.best_iter))
        return ps, -elbo

    return observe


def _memory(maxcor: int | None, dim: int) -> int:
    """Pairs kept: ``maxcor``, by default ``max(5, ceil(3 log D))`` as in pymc-extras."""
    return int(maxcor) if maxcor is not None else max(5, math.ceil(3 * math.log(max(dim, 1))))


def _paths(problem: Problem, opts: dict, j: int) -> Any:
    """The compiled run of every path, then the draws of each path's best Gaussian."""
    dim, dtype = problem.z0.shape[0], problem.z0.dtype
    k = min(dim, 2 * j)

    def one_path(x0: jax.Array, key: jax.Array, data: Any) -> _lbfgs.LBFGSState:
        ps = PathState(jnp.zeros((j, dim), dtype), jnp.zeros((j, dim), dtype), jnp.zeros(j, bool),
                       jnp.ones(dim, dtype), jnp.asarray(-jnp.inf, dtype), placeholder(dim, k, dtype),
                       jnp.int32(0), key)
        return _lbfgs.minimize(lambda x: -problem.logp(x, data), x0, maxiter=opts["maxiter"],
                               gtol=opts["gtol"], ftol=opts["ftol"], memory=j, maxls=opts["maxls"],
                               observe=_observer(problem, data, opts), extra=ps)

    @jax.jit
    def run(x0s: jax.Array, keys: jax.Array, data: Any, key: jax.Array) -> tuple:
        st = jax.vmap(one_path, in_axes=(0, 0, None))(x0s, keys, data)
        ok = jnp.isfinite(st.extra.best_elbo)
        log_w = jnp.where(ok, -jnp.log(jnp.maximum(jnp.sum(ok), 1)).astype(dtype), -jnp.inf)
        m = opts["num_draws_per_path"]
        u = jax.random.normal(key, (x0s.shape[0], m, dim), dtype)
        pool = jax.vmap(lambda a, uu: draw(a, uu)[0])(st.extra.best, u).reshape(-1, dim)
        lq = mixture_log_q(st.extra.best, log_w, pool)
        lp = jax.lax.map(lambda z: problem.logp(z, data), pool, batch_size=256)
        return st, log_w, pool, lp - lq

    return run


def _starts(problem: Problem, opts: dict) -> jax.Array:
    key = jax.random.fold_in(problem.key, 11)
    jit = jax.random.uniform(key, (opts["num_paths"], problem.z0.shape[0]), problem.z0.dtype, -1.0, 1.0)
    scale = 1.0 if problem.scale0 is None else problem.scale0
    return problem.z0 + opts["jitter"] * scale * jit


def _check(num_paths: Any, num_draws_per_path: Any, maxcor: Any, maxiter: Any, ftol: Any, gtol: Any,
           maxls: Any, num_elbo_draws: Any, jitter: Any, epsilon: Any, importance_sampling: Any) -> dict:
    if importance_sampling not in RESAMPLING:
        raise VariationalError(f"importance_sampling={importance_sampling!r} must be one of {RESAMPLING}")
    return {"num_paths": positive_int("num_paths", num_paths),
            "num_draws_per_path": positive_int("num_draws_per_path", num_draws_per_path),
            "maxcor": None if maxcor is None else positive_int("maxcor", maxcor),
            "maxiter": positive_int("maxiter", maxiter), "ftol": positive_float("ftol", ftol, allow_zero=True),
            "gtol": positive_float("gtol", gtol, allow_zero=True), "maxls": positive_int("maxls", maxls),
            "num_elbo_draws": positive_int("num_elbo_draws", num_elbo_draws),
            "jitter": positive_float("jitter", jitter, allow_zero=True),
            "epsilon": positive_float("epsilon", epsilon, allow_zero=True), "importance_sampling": importance_sampling}


def pathfinder(num_paths: int = 4, num_draws_per_path: int = 1000, maxcor: int | None = None,
               maxiter: int = 1000, ftol: float = 1e-5, gtol: float = 1e-8, maxls: int = 25,
               num_elbo_draws: int = 10, jitter: float = 2.0, epsilon: float = 1e-12,
               importance_sampling: str | None = "psis") -> Family:
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
        L-BFGS: largest number of iterations; stop when a step lowers ``-log p`` by less than
        ``ftol`` relative, or every gradient coordinate is below ``gtol``; line-search trials.
    num_elbo_draws : int
        Draws estimating the ELBO of each iterate's Gaussian.
    jitter : float
        Each path starts at the initial point plus uniform noise in ``[-jitter, jitter]`` per
        coordinate (times the sds of an ``init=`` fit).
    epsilon : float
        A pair is kept only when its curvature ``s.y > epsilon |y|^2``.
    importance_sampling : {"psis", "plain", None}
        How the pool is weighted against the mixture of the paths' Gaussians: Pareto-smoothed,
        raw importance weights, or not at all (draws of the mixture as they are).

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
                  jitter, epsilon, importance_sampling)
    n_pool = opts["num_paths"] * opts["num_draws_per_path"]

    def init(key: jax.Array, z0: jax.Array) -> Params:
        dim = z0.shape[0]
        k = min(dim, 2 * _memory(opts["maxcor"], dim))
        return {"approx": placeholder(dim, k, z0.dtype, opts["num_paths"]),
                "log_weight": jnp.full(opts["num_paths"], -math.log(opts["num_paths"]), z0.dtype),
                "pool": jnp.zeros((n_pool, dim), z0.dtype),
                "pool_log_weight": jnp.full(n_pool, -math.log(n_pool), z0.dtype)}

    def sample_and_log_q(p: Params, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        return mixture_sample(p["approx"], p["log_weight"], key, n)

    def resample(p: Params, key: jax.Array, n: int) -> jax.Array:
        idx = jax.random.choice(key, n_pool, (n,), p=jnp.exp(p["pool_log_weight"]))
        return p["pool"][idx]

    def weights(p: Params) -> jax.Array:
        return jnp.exp(p["pool_log_weight"])[:, None]

    def mean(p: Params) -> jax.Array:
        return jnp.sum(weights(p) * jnp.nan_to_num(p["pool"]), axis=0)

    def cov(p: Params) -> jax.Array:
        d = jnp.nan_to_num(p["pool"]) - mean(p)
        return (weights(p) * d).T @ d

    weighted = opts["importance_sampling"] is not None
    return Family("pathfinder", init, sample_and_log_q,
                  lambda p, z: mixture_log_q(p["approx"], p["log_weight"], z),
                  mean=mean if weighted else None, std=(lambda p: jnp.sqrt(jnp.diag(cov(p)))) if weighted else None,
                  cov=cov if weighted else None, sample=resample if weighted else None,
                  solve=lambda problem: _solve(problem, opts), options=dict(opts))


def _solve(problem: Problem, opts: dict) -> Solution:
    dim, dtype = problem.z0.shape[0], problem.z0.dtype
    j = _memory(opts["maxcor"], dim)
    keys = jax.random.split(jax.random.fold_in(problem.key, 12), opts["num_paths"])
    st, log_w, pool, raw = _paths(problem, opts, j)(_starts(problem, opts), keys, problem.data,
                                                    jax.random.fold_in(problem.key, 13))
    elbo = np.asarray(st.extra.best_elbo, np.float64)
    ok = np.isfinite(elbo)
    if not ok.any():
        raise VariationalError("no Pathfinder path found a Gaussian with a finite ELBO (the log density is "
                               "not finite around its starts); give start= values, a smaller jitter=, "
                               "or use method='advi'")
    raw = np.asarray(raw, np.float64)
    lw, khat = psis_log_weights(raw)
    if opts["importance_sampling"] != "psis":
        fin = np.isfinite(raw)
        base = raw if opts["importance_sampling"] == "plain" else np.where(fin, 0.0, -np.inf)
        lw = base - np.logaddexp.reduce(base[fin])
    best = int(np.nanargmax(np.where(ok, elbo, -np.inf)))
    its, grads, status = (np.asarray(a) for a in (st.it, st.n_grad, st.status))
    paths = [{"elbo": float(elbo[i]), "best_iteration": int(st.extra.best_iter[i]), "iterations": int(its[i]),
              "grad_evals": int(grads[i]), "stopped": _lbfgs.status_message(int(status[i]), int(its[i]))}
             for i in range(opts["num_paths"])]
    ess = float(1.0 / np.sum(np.exp(2 * lw[np.isfinite(lw)])))
    params = {"approx": st.extra.best, "log_weight": log_w, "pool": pool,
              "pool_log_weight": jnp.asarray(lw, dtype)}
    info = {"paths": paths, "khat": khat, "ess": ess, "memory": j,
            "logp_evals": int(its.sum()) * opts["num_elbo_draws"] + raw.shape[0]}
    message = (f"{int(ok.sum())} of {opts['num_paths']} paths found a Gaussian; best ELBO {elbo[best]:.6g} "
               f"(path {best}, iteration {paths[best]['best_iteration']}); Pareto k-hat {khat:.2f} over "
               f"{raw.shape[0]} draws (ESS {ess:.0f})")
    trace = np.asarray(st.trace[best], np.float64)[:int(its[best])]
    return Solution(params, trace, int(its[best]), int(grads.sum()), True, message, info)


register_family("pathfinder", pathfinder)
