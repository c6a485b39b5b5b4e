"""A weighted pool of draws: how Pathfinder and Laplace report importance-corrected answers.

A direct method draws a pool from its Gaussian(s) ``q``, weighs each draw by ``p / q``
(Pareto-smoothed, PSIS) and keeps the pool and the weights in its parameters
(``{"pool": (N, D), "pool_log_weight": (N,)}``). The fit then reports the corrected answer:
``fit.sample(n)`` resamples the pool by the weights (with replacement), and the summaries are the
weighted moments. Above k-hat 0.7 the weights cannot be trusted (their variance is infinite in
effect, and resampling by them returns a handful of distinct draws), so the pool keeps equal
weights, q's own answer, and the method's message says so.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._psis import psis_log_weights

__all__ = ["KHAT_BAD", "CHOICES", "weigh", "describe", "resample", "mean", "cov", "std"]

KHAT_BAD = 0.7
CHOICES = ("psis", "plain", None)


def weigh(raw: np.ndarray, how: str | None) -> tuple[np.ndarray, float, float]:
    """Normalised log weights of the pool, the Pareto k-hat and the ESS of the weights.

    ``how``: ``"psis"`` (smoothed; equal weights above k-hat 0.7), ``"plain"`` (raw importance
    weights) or None (equal weights). Draws whose log density is not finite get weight zero.
    """
    lw, khat = psis_log_weights(raw)
    if how != "psis" or khat > KHAT_BAD:
        fin = np.isfinite(raw)
        base = raw if how == "plain" else np.where(fin, 0.0, -np.inf)
        lw = base - np.logaddexp.reduce(base[fin])
    ess = float(1.0 / np.sum(np.exp(2 * lw[np.isfinite(lw)])))
    return lw, khat, ess


def describe(khat: float, ess: float, n: int, how: str | None) -> str:
    """The words for what the weights did."""
    text = f"Pareto k-hat {khat:.2f} over {n} draws"
    if how == "psis" and khat > KHAT_BAD:
        return text + (f"; k-hat > {KHAT_BAD}: the importance weights are unreliable, so the draws are "
                       f"unweighted")
    return text + (f" (ESS {ess:.0f})" if how is not None else "; draws unweighted (importance_sampling=None)")


@partial(jax.jit, static_argnums=2)
def resample(p: Any, key: jax.Array, n: int) -> jax.Array:
    """``n`` draws of the pool, with replacement, by their weights."""
    idx = jax.random.choice(key, p["pool"].shape[0], (n,), p=jnp.exp(p["pool_log_weight"]))
    return p["pool"][idx]


@jax.jit
def mean(p: Any) -> jax.Array:
    """Weighted mean of the pool."""
    return jnp.exp(p["pool_log_weight"]) @ jnp.nan_to_num(p["pool"])


@jax.jit
def cov(p: Any) -> jax.Array:
    """Weighted covariance of the pool."""
    d = jnp.nan_to_num(p["pool"]) - mean(p)
    return (jnp.exp(p["pool_log_weight"])[:, None] * d).T @ d


@jax.jit
def std(p: Any) -> jax.Array:
    """Weighted standard deviations of the pool."""
    return jnp.sqrt(jnp.diag(cov(p)))
