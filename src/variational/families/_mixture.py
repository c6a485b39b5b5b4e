"""Pathfinder's Gaussians: the L-BFGS inverse Hessian as ``diag + low rank``, and their mixture.

One approximation (Zhang, Carpenter, Gelman and Vehtari 2022, section 2 and algorithm 4) is
``N(mu, Sigma)`` with ``Sigma = diag(alpha) + beta gamma beta^T`` (the compact form of the
L-BFGS inverse Hessian, Byrd, Nocedal and Schnabel 1994), stored in the form that samples and
evaluates it in ``O(D k)``: with ``Q R = qr(alpha^-1/2 beta)`` and ``L L^T = I + R gamma R^T``,

    z = mu + alpha^1/2 (u + Q (L - I) Q^T u),   u ~ N(0, I),
    log det Sigma = sum log alpha + 2 sum log diag L.

The factors are built on the host in float64 (:func:`approximation`); drawing and evaluating
work with numpy (the solver) or ``jax.numpy`` (the family, inside compiled code) alike. Several
paths give an equally weighted mixture (failed paths get weight zero); its density is what
importance weights and k-hat are computed against.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

LOG_2PI = float(np.log(2 * np.pi))

__all__ = ["Approx", "approximation", "draw", "log_q", "mixture_sample", "mixture_log_q", "placeholder"]


class Approx(NamedTuple):
    """One Gaussian in sampling form (stacked along a leading axis for several paths)."""

    mu: Any          # (D,)
    sqrt_alpha: Any  # (D,)
    Q: Any           # (D, k) orthonormal columns
    L: Any           # (k, k) lower triangular
    logdet: Any      # log det Sigma


def placeholder(dim: int, k: int, dtype: Any, paths: int = 0) -> Approx:
    """A standard normal in this form (the shapes of a solved approximation)."""
    a = Approx(jnp.zeros(dim, dtype), jnp.ones(dim, dtype), jnp.eye(dim, k, dtype=dtype),
               jnp.eye(k, dtype=dtype), jnp.zeros((), dtype))
    return a if not paths else jax.tree_util.tree_map(lambda x: jnp.stack([x] * paths), a)


def approximation(x: np.ndarray, g: np.ndarray, S: np.ndarray, Z: np.ndarray, alpha: np.ndarray,
                  k: int) -> Approx | None:
    """The Gaussian at iterate ``x`` (``g``: gradient of ``-log p``) from the kept pairs.

    ``S``, ``Z`` ``(m, D)``: the kept steps and gradient changes, oldest first (m may be 0);
    ``mu = x - Sigma g`` is the quasi-Newton step. The factors are padded to ``k`` columns so
    that every approximation has the same shapes. None when the factor is not positive definite.
    """
    dim, m = x.shape[0], S.shape[0]
    sa = np.sqrt(alpha)
    if m == 0:
        return Approx(x - alpha * g, sa, np.eye(dim, k), np.eye(k), float(np.sum(np.log(alpha))))
    sz = S @ Z.T
    rinv = np.linalg.solve(np.triu(sz), np.eye(m))   # (numpy: scipy's threaded BLAS stalls on tiny solves)
    beta = np.concatenate([(alpha[:, None] * Z.T), S.T], axis=1)
    inner = rinv.T @ (np.diag(np.diag(sz)) + Z @ (alpha[:, None] * Z.T)) @ rinv
    gamma = np.block([[np.zeros((m, m)), -rinv], [-rinv.T, inner]])
    mu = x - (alpha * g + beta @ (gamma @ (beta.T @ g)))
    q, r = np.linalg.qr(beta / sa[:, None])
    try:
        chol = np.linalg.cholesky(np.eye(q.shape[1]) + r @ gamma @ r.T)
    except np.linalg.LinAlgError:
        return None
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(chol))):
        return None
    logdet = float(np.sum(np.log(alpha)) + 2.0 * np.sum(np.log(np.diag(chol))))
    pad = k - q.shape[1]   # identity blocks on unused columns leave the Gaussian unchanged
    q = np.concatenate([q, np.zeros((dim, pad))], axis=1)
    chol = scipy.linalg.block_diag(chol, np.eye(pad))
    return Approx(mu, sa, q, chol, logdet)


def draw(a: Approx, u: Any, xp: Any = jnp) -> tuple[Any, Any]:
    """Draws ``z`` of ``a`` from standard normals ``u`` ``(n, D)``, and their log density."""
    c = u @ a.Q
    z = a.mu + a.sqrt_alpha * (u + (c @ (a.L - xp.eye(a.L.shape[0], dtype=u.dtype)).T) @ a.Q.T)
    return z, -0.5 * (u.shape[-1] * LOG_2PI + a.logdet + xp.sum(u * u, -1))


def log_q(a: Approx, z: Any, xp: Any = jnp) -> Any:
    """Log density of ``a`` at ``z`` ``(n, D)``."""
    w = (z - a.mu) / a.sqrt_alpha
    c = w @ a.Q
    qu = (solve_triangular(a.L, c.T, lower=True) if xp is jnp else np.linalg.solve(a.L, c.T)).T   # Q^T u
    u = w + (qu - c) @ a.Q.T
    return -0.5 * (z.shape[-1] * LOG_2PI + a.logdet + xp.sum(u * u, -1))


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
    comp = jax.random.categorical(k1, log_weight, shape=(n,))
    u = jax.random.normal(k2, (n, approx.mu.shape[-1]), approx.mu.dtype)

    def one(z: jax.Array, a_i: tuple) -> tuple[jax.Array, None]:
        a, i = a_i
        return jnp.where((comp == i)[:, None], draw(a, u)[0], z), None

    z, _ = jax.lax.scan(one, jnp.zeros_like(u), (approx, jnp.arange(log_weight.shape[0])))
    return z, mixture_log_q(approx, log_weight, z)
