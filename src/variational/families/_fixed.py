"""A Gaussian with a given mean and Cholesky factor: what Laplace and DADVI hand back.

Parameters ``{"loc": (D,), "chol": (D, D)}`` with ``cov = chol @ chol.T`` (``chol`` lower
triangular with a positive diagonal). They are computed by the method's ``solve``, never
moved by the engine, so the factor is stored as it is (no softplus). With a pool (Laplace's
importance sampling, :mod:`._pool`) the parameters also hold the weighted draws, and the fit's
draws and summaries are the weighted ones; the Gaussian stays q (its density, k-hat).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from . import _pool
from .base import LOG_2PI, Family, Params, Problem, Solution

__all__ = ["fixed_gaussian", "named_directions"]


def _init(key: jax.Array, z0: jax.Array, pool: int = 0) -> Params:
    """Placeholder parameters (N(z0, I)) with the shapes of a solved fit, before ``solve``."""
    p = {"loc": jnp.asarray(z0), "chol": jnp.eye(z0.shape[0], dtype=z0.dtype)}
    if pool:
        p.update(pool=jnp.zeros((pool, z0.shape[0]), z0.dtype),
                 pool_log_weight=jnp.full(pool, -np.log(pool), z0.dtype))
    return p


@jax.jit
def _log_q(p: Params, z: jax.Array) -> jax.Array:
    u = solve_triangular(p["chol"], (z - p["loc"]).T, lower=True).T
    logdet = jnp.sum(jnp.log(jnp.diag(p["chol"])))
    return -0.5 * jnp.sum(u * u, -1) - logdet - 0.5 * z.shape[-1] * LOG_2PI


@partial(jax.jit, static_argnums=2)
def _sample_and_log_q(p: Params, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    eps = jax.random.normal(key, (n,) + p["loc"].shape, p["loc"].dtype)
    z = p["loc"] + eps @ p["chol"].T
    logdet = jnp.sum(jnp.log(jnp.diag(p["chol"])))
    return z, -0.5 * jnp.sum(eps * eps, -1) - logdet - 0.5 * z.shape[-1] * LOG_2PI


def _cov(p: Params) -> jax.Array:
    return p["chol"] @ p["chol"].T


def _from_gaussian(mean: jax.Array, cov: jax.Array) -> Params:
    return {"loc": jnp.asarray(mean), "chol": jnp.linalg.cholesky(jnp.asarray(cov))}


def fixed_gaussian(name: str, solve: Callable[[Problem], Solution], options: dict, pool: int = 0) -> Family:
    """The Family of a method whose answer is one Gaussian ``N(loc, chol chol^T)``.

    ``pool``: the number of importance-weighted draws the parameters hold (0: none); the fit's
    draws and summaries then come from them.
    """
    if pool:
        return Family(name, partial(_init, pool=pool), _sample_and_log_q, _log_q, mean=_pool.mean,
                      std=_pool.std, cov=_pool.cov, sample=_pool.resample, solve=solve, options=options)
    return Family(name, _init, _sample_and_log_q, _log_q, mean=lambda p: p["loc"],
                  std=lambda p: jnp.sqrt(jnp.sum(p["chol"] ** 2, axis=1)), cov=_cov,
                  from_gaussian=_from_gaussian, solve=solve, options=options)


def named_directions(vectors: Any, labels: tuple[str, ...], top: int = 3) -> list[str]:
    """The coordinates that carry most of each direction (columns of ``vectors``), by name."""
    out = []
    for v in np.asarray(vectors).T:
        order = np.argsort(-np.abs(v))[:top]
        keep = [labels[i] for i in order if abs(v[i]) >= 0.25 * abs(v[order[0]])]
        out.append(" + ".join(keep))
    return out
