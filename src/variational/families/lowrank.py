"""Low-rank Gaussian family: covariance ``W W^T + diag(d^2)`` with ``W`` of shape ``(D, k)``.

Between mean-field (k = 0) and full-rank (O(D^2) parameters): ``D (k + 2)`` parameters capture
the ``k`` strongest directions of posterior correlation.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from ..errors import whole_number
from ._checks import positive_float
from ..errors import VariationalError
from .base import Family, register_family, softplus_inv
from .gaussian import softplus_inverse

__all__ = ["low_rank"]


def low_rank(rank: int = 1, init_scale: float = 0.1) -> Family:
    """Gaussian with diagonal plus rank-``k`` covariance (``method="lowrank_advi"``).

    Parameters
    ----------
    rank : int
        Number of columns ``k`` of the factor ``W`` (at most the number of latent dimensions).
    init_scale : float
        Initial standard deviation of every coordinate.

    Returns
    -------
    Family

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> fam = low_rank(rank=1)
    >>> p = fam.init(jax.random.PRNGKey(0), jnp.zeros(3))
    >>> p["W"].shape, fam.cov(p).shape
    ((3, 1), (3, 3))
    """
    k = whole_number("rank", rank, 1)
    rho0 = softplus_inv(positive_float("init_scale", init_scale))

    def init(key: jax.Array, z0: jax.Array) -> Any:
        d = z0.shape[0]
        if k > d:
            raise VariationalError(
                f"rank={k} is larger than the model's {d} latent dimension(s); use rank<={d} "
                f"(or method='fullrank_advi')")
        # W = 0 is a stationary point of the expected gradient: start slightly off it
        w = 0.1 * float(init_scale) * jax.random.normal(key, (d, k), z0.dtype)
        return {"loc": jnp.asarray(z0), "W": w, "rho": jnp.full_like(z0, rho0)}

    def q(p: Any) -> dist.LowRankMultivariateNormal:
        return dist.LowRankMultivariateNormal(p["loc"], p["W"], jax.nn.softplus(p["rho"]) ** 2)

    def log_q(p: Any, z: jax.Array) -> jax.Array:
        return q(p).log_prob(z)

    def sample_and_log_q(p: Any, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        k1, k2 = jax.random.split(key)
        d = p["loc"].shape[0]
        e1 = jax.random.normal(k1, (n, k), p["loc"].dtype)
        e2 = jax.random.normal(k2, (n, d), p["loc"].dtype)
        z = p["loc"] + e1 @ p["W"].T + jax.nn.softplus(p["rho"]) * e2
        return z, log_q(p, z)

    def cov(p: Any) -> jax.Array:
        return p["W"] @ p["W"].T + jnp.diag(jax.nn.softplus(p["rho"]) ** 2)

    def std(p: Any) -> jax.Array:
        return jnp.sqrt(jnp.sum(p["W"] ** 2, axis=1) + jax.nn.softplus(p["rho"]) ** 2)

    def from_gaussian(mean: jax.Array, c: jax.Array) -> Any:
        # the k leading principal directions, less the average variance left over (as in
        # probabilistic PCA), and the diagonal that restores each coordinate's variance
        lam, vec = jnp.linalg.eigh(jnp.asarray(c))
        rest = jnp.mean(lam[:-k]) if lam.shape[0] > k else 0.0
        w = vec[:, -k:] * jnp.sqrt(jnp.maximum(lam[-k:] - rest, 0.0))
        d2 = jnp.maximum(jnp.diag(c) - jnp.sum(w * w, axis=1), 1e-6 * jnp.diag(c))
        return {"loc": jnp.asarray(mean), "W": w, "rho": softplus_inverse(jnp.sqrt(d2))}

    return Family("lowrank_advi", init, sample_and_log_q, log_q, mean=lambda p: p["loc"], std=std,
                  cov=cov, from_gaussian=from_gaussian, options={"rank": k, "init_scale": init_scale}, gaussian=True)


register_family("lowrank_advi", low_rank)
