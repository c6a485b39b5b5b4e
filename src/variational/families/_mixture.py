"""Pathfinder's Gaussians: the L-BFGS inverse Hessian as ``diag + low rank``, and their mixture.

One approximation (Zhang, Carpenter, Gelman and Vehtari 2022, section 2 and algorithm 4) is
``N(mu, Sigma)`` with ``Sigma = diag(alpha) + beta gamma beta^T`` (the compact form of the
L-BFGS inverse Hessian, Byrd, Nocedal and Schnabel 1994), stored in the form that samples and
evaluates it in ``O(D k)``: with ``Q R = qr(alpha^-1/2 beta)`` and ``L L^T = I + R gamma R^T``,

    z = mu + alpha^1/2 (u + Q (L - I) Q^T u),   u ~ N(0, I),
    log det Sigma = sum log alpha + 2 sum log diag L.

Several paths give an equally weighted mixture of such Gaussians (the paths that failed get
weight zero); its density is what importance weights and k-hat are computed against.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from .base import LOG_2PI

__all__ = ["Approx", "approximation", "draw", "log_q", "mixture_sample", "mixture_log_q", "placeholder"]


class Approx(NamedTuple):
    """One Gaussian in sampling form (stacked along a leading axis for several paths)."""

    mu: jax.Array          # (D,)
    sqrt_alpha: jax.Array  # (D,)
    Q: jax.Array           # (D, k) orthonormal columns
    L: jax.Array           # (k, k) lower triangular
    logdet: jax.Array      # log det Sigma


def placeholder(dim: int, k: int, dtype: Any, paths: int = 0) -> Approx:
    """A standard normal in this form (the shapes of a solved approximation)."""
    a = Approx(jnp.zeros(dim, dtype), jnp.ones(dim, dtype), jnp.eye(dim, k, dtype=dtype),
               jnp.eye(k, dtype=dtype), jnp.zeros((), dtype))
    return a if not paths else jax.tree_util.tree_map(lambda x: jnp.stack([x] * paths), a)


def approximation(x: jax.Array, g: jax.Array, S: jax.Array, Z: jax.Array, mask: jax.Array,
                  alpha: jax.Array) -> Approx:
    """The Gaussian at iterate ``x`` (``g``: gradient of ``-log p``) from the kept pairs.

    ``S``, ``Z`` ``(J, D)``: steps and gradient changes, oldest first; ``mask`` the pairs that
    are kept (the others are zero rows). ``mu = x - Sigma g`` is the quasi-Newton step.
    """
    m = mask.astype(x.dtype)
    S, Z = S * m[:, None], Z * m[:, None]
    sz = S @ Z.T
    R = jnp.triu(sz) + jnp.diag(1.0 - m)          # unit diagonal where no pair is kept
    Rinv = solve_triangular(R, jnp.eye(R.shape[0], dtype=x.dtype), lower=False)
    beta = jnp.concatenate([(alpha[:, None] * Z.T), S.T], axis=1)
    inner = Rinv.T @ (jnp.diag(jnp.diag(sz)) + Z @ (alpha[:, None] * Z.T)) @ Rinv
    zero = jnp.zeros_like(Rinv)
    gamma = jnp.block([[zero, -Rinv], [-Rinv.T, inner]])
    mu = x - (alpha * g + beta @ (gamma @ (beta.T @ g)))
    sa = jnp.sqrt(alpha)
    Q, Rq = jnp.linalg.qr(beta / sa[:, None])
    L = jnp.linalg.cholesky(jnp.eye(Q.shape[1], dtype=x.dtype) + Rq @ gamma @ Rq.T)
    logdet = jnp.sum(jnp.log(alpha)) + 2.0 * jnp.sum(jnp.log(jnp.diag(L)))
    return Approx(mu, sa, Q, L, logdet)


def draw(a: Approx, u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Draws ``z`` of ``a`` from standard normals ``u`` ``(n, D)``, and their log density."""
    c = u @ a.Q
    z = a.mu + a.sqrt_alpha * (u + (c @ (a.L - jnp.eye(a.L.shape[0], dtype=u.dtype)).T) @ a.Q.T)
    return z, -0.5 * (u.shape[-1] * LOG_2PI + a.logdet + jnp.sum(u * u, -1))


def log_q(a: Approx, z: jax.Array) -> jax.Array:
    """Log density of ``a`` at ``z`` ``(n, D)``."""
    w = (z - a.mu) / a.sqrt_alpha
    c = w @ a.Q
    qu = solve_triangular(a.L, c.T, lower=True).T   # Q^T u
    u = w + (qu - c) @ a.Q.T
    return -0.5 * (z.shape[-1] * LOG_2PI + a.logdet + jnp.sum(u * u, -1))


def mixture_log_q(approx: Approx, log_weight: jax.Array, z: jax.Array) -> jax.Array:
    """Log density at ``z`` of the mixture of the stacked ``approx`` with ``log_weight`` per path."""
    def one(carry: None, a_w: tuple) -> tuple[None, jax.Array]:
        a, w = a_w
        return None, jnp.where(jnp.isfinite(w), log_q(a, z) + w, -jnp.inf)

    _, per_path = jax.lax.scan(one, None, (approx, log_weight))
    return logsumexp(per_path, axis=0)


def mixture_sample(approx: Approx, log_weight: jax.Array, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """``n`` draws of the mixture and their log density under it."""
    k1, k2 = jax.random.split(key)
    comp = jax.random.categorical(k1, jnp.where(jnp.isfinite(log_weight), log_weight, -jnp.inf), shape=(n,))
    u = jax.random.normal(k2, (n, approx.mu.shape[-1]), approx.mu.dtype)

    def one(z: jax.Array, a_i: tuple) -> tuple[jax.Array, None]:
        a, i = a_i
        zi, _ = draw(a, u)
        return jnp.where((comp == i)[:, None], zi, z), None

    z, _ = jax.lax.scan(one, jnp.zeros_like(u), (approx, jnp.arange(log_weight.shape[0])))
    return z, mixture_log_q(approx, log_weight, z)
