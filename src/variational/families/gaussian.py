"""Gaussian families: mean-field (``method="advi"``) and full-rank (``"fullrank_advi"``)."""

from __future__ import annotations


import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from .base import LOG_2PI, Family, Params, register_family, softplus_inv

__all__ = ["mean_field", "full_rank", "softplus_inverse"]


def softplus_inverse(s: jax.Array) -> jax.Array:
    """``rho`` with ``softplus(rho) = s`` (s > 0), without overflow for large ``s``."""
    s = jnp.asarray(s)
    return s + jnp.log(-jnp.expm1(-s))


def mean_field(init_scale: float = 0.1) -> Family:
    """Mean-field Gaussian: independent normals, ``std = softplus(rho)``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> fam = mean_field()
    >>> p = fam.init(jax.random.PRNGKey(0), jnp.zeros(3))
    >>> z, lq = fam.sample_and_log_q(p, jax.random.PRNGKey(1), 5)
    >>> z.shape, lq.shape
    ((5, 3), (5,))
    """
    rho0 = softplus_inv(init_scale)

    def init(key: jax.Array, z0: jax.Array) -> Params:
        return {"loc": jnp.asarray(z0), "rho": jnp.full_like(z0, rho0)}

    def std(p: Params) -> jax.Array:
        return jax.nn.softplus(p["rho"])

    def log_q(p: Params, z: jax.Array) -> jax.Array:
        s = std(p)
        u = (z - p["loc"]) / s
        return -0.5 * jnp.sum(u * u, -1) - jnp.sum(jnp.log(s)) - 0.5 * z.shape[-1] * LOG_2PI

    def sample_and_log_q(p: Params, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        s = std(p)
        eps = jax.random.normal(key, (n,) + p["loc"].shape, p["loc"].dtype)
        z = p["loc"] + s * eps
        lq = -0.5 * jnp.sum(eps * eps, -1) - jnp.sum(jnp.log(s)) - 0.5 * z.shape[-1] * LOG_2PI
        return z, lq

    def from_gaussian(mean: jax.Array, cov: jax.Array) -> Params:
        return {"loc": jnp.asarray(mean), "rho": softplus_inverse(jnp.sqrt(jnp.diag(cov)))}

    return Family("advi", init, sample_and_log_q, log_q, mean=lambda p: p["loc"], std=std,
                  cov=lambda p: jnp.diag(std(p) ** 2), from_gaussian=from_gaussian,
                  options={"init_scale": init_scale}, gaussian=True)


def full_rank(init_scale: float = 0.1) -> Family:
    """Full-rank Gaussian with covariance ``L L^T`` (L lower-triangular, positive diagonal).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> fam = full_rank()
    >>> p = fam.init(jax.random.PRNGKey(0), jnp.zeros(2))
    >>> fam.cov(p).shape
    (2, 2)
    """
    rho0 = softplus_inv(init_scale)

    def init(key: jax.Array, z0: jax.Array) -> Params:
        d = z0.shape[0]
        return {"loc": jnp.asarray(z0), "L": jnp.diag(jnp.full((d,), rho0, z0.dtype))}

    def chol(p: Params) -> jax.Array:
        raw = p["L"]
        return jnp.tril(raw, -1) + jnp.diag(jax.nn.softplus(jnp.diag(raw)))

    def _logdet(L: jax.Array) -> jax.Array:
        return jnp.sum(jnp.log(jnp.diag(L)))

    def log_q(p: Params, z: jax.Array) -> jax.Array:
        L = chol(p)
        u = solve_triangular(L, (z - p["loc"]).T, lower=True).T
        return -0.5 * jnp.sum(u * u, -1) - _logdet(L) - 0.5 * z.shape[-1] * LOG_2PI

    def sample_and_log_q(p: Params, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        L = chol(p)
        eps = jax.random.normal(key, (n,) + p["loc"].shape, p["loc"].dtype)
        z = p["loc"] + eps @ L.T
        lq = -0.5 * jnp.sum(eps * eps, -1) - _logdet(L) - 0.5 * z.shape[-1] * LOG_2PI
        return z, lq

    def cov(p: Params) -> jax.Array:
        L = chol(p)
        return L @ L.T

    def from_gaussian(mean: jax.Array, c: jax.Array) -> Params:
        L = jnp.linalg.cholesky(jnp.asarray(c))
        return {"loc": jnp.asarray(mean), "L": jnp.tril(L, -1) + jnp.diag(softplus_inverse(jnp.diag(L)))}

    return Family("fullrank_advi", init, sample_and_log_q, log_q, mean=lambda p: p["loc"],
                  std=lambda p: jnp.sqrt(jnp.diag(cov(p))), cov=cov, from_gaussian=from_gaussian,
                  options={"init_scale": init_scale}, gaussian=True)


register_family("advi", mean_field)
register_family("fullrank_advi", full_rank)
