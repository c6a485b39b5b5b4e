"""Low-rank Gaussian family: covariance ``W W^T + diag(d^2)`` with ``W`` of shape ``(D, k)``.

Between mean-field (k = 0) and full-rank (O(D^2) parameters): ``D (k + 2)`` parameters capture
the ``k`` strongest directions of posterior correlation.

Like the other Gaussians (:mod:`variational.families.gaussian`) it is written in whitened
coordinates, with a diagonal preconditioner: ``z = c + s (u + W' e1 + d' e2)``, ``c`` and ``s``
held fixed by the optimiser. :meth:`Family.rewhiten` moves q's mean into ``c`` and its marginal
sds into ``s``, so that the adaptive schedule's learning rate is a fraction of q's own sd in
every coordinate. ``fit.params`` shows the plain form ``{"loc", "W", "rho"}``.
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
from .gaussian import _FROZEN, _pre, softplus_inverse

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
    >>> bool(jnp.allclose(fam.cov(fam.rewhiten(p)), fam.cov(p)))
    True
    """
    k = whole_number("rank", rank, 1)
    rho0 = softplus_inv(positive_float("init_scale", init_scale))

    def init(key: jax.Array, z0: jax.Array) -> Any:
        z0 = jnp.asarray(z0)
        d = z0.shape[0]
        if k > d:
            raise VariationalError(
                f"rank={k} is larger than the model's {d} latent dimension(s); use rank<={d} "
                f"(or method='fullrank_advi')")
        # W = 0 is a stationary point of the expected gradient: start slightly off it
        w = 0.1 * float(init_scale) * jax.random.normal(key, (d, k), z0.dtype)
        return {"loc": jnp.zeros_like(z0), "W": w, "rho": jnp.full_like(z0, rho0),
                "pre_loc": z0, "pre_scale": jnp.ones_like(z0)}

    def plain(p: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Location, factor and diagonal sd of q in the model's coordinates."""
        c, s = _pre(p)
        return c + s * p["loc"], s[:, None] * p["W"], s * jax.nn.softplus(p["rho"])

    def q(p: Any) -> dist.LowRankMultivariateNormal:
        loc, w, d = plain(p)
        return dist.LowRankMultivariateNormal(loc, w, d ** 2)

    def log_q(p: Any, z: jax.Array) -> jax.Array:
        return q(p).log_prob(z)

    def sample_and_log_q(p: Any, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        k1, k2 = jax.random.split(key)
        d = p["loc"].shape[0]
        e1 = jax.random.normal(k1, (n, k), p["loc"].dtype)
        e2 = jax.random.normal(k2, (n, d), p["loc"].dtype)
        loc, w, sd = plain(p)
        z = loc + e1 @ w.T + sd * e2
        return z, log_q(p, z)

    def cov(p: Any) -> jax.Array:
        _, w, sd = plain(p)
        return w @ w.T + jnp.diag(sd ** 2)

    def std(p: Any) -> jax.Array:
        _, w, sd = plain(p)
        return jnp.sqrt(jnp.sum(w ** 2, axis=1) + sd ** 2)

    def rewhiten(p: Any) -> Any:
        # the same q, its trained parameters measured in q's own marginal sds (each coordinate's
        # variance is 1 after it), so that a learning rate is a fraction of q's sd everywhere
        loc, w, sd = plain(p)
        s = std(p)
        return {**p, "loc": jnp.zeros_like(loc), "W": w / s[:, None], "rho": softplus_inverse(sd / s),
                "pre_loc": loc, "pre_scale": s}

    def shown(p: Any) -> dict[str, jax.Array]:
        loc, w, sd = plain(p)
        return {"loc": loc, "W": w, "rho": softplus_inverse(sd)}

    def from_shown(p: Any, new: dict) -> Any:
        # init_params= in the shown form (no preconditioner: it starts at c = 0, P = 1)
        v = {**shown(p), **new}
        loc = jnp.asarray(v["loc"], p["loc"].dtype)
        return {**p, "loc": jnp.zeros_like(loc), "W": jnp.asarray(v["W"], p["W"].dtype),
                "rho": jnp.asarray(v["rho"], p["rho"].dtype), "pre_loc": loc, "pre_scale": jnp.ones_like(loc)}

    def step_scale(p: Any) -> Any:
        # a row of W has k entries, each moved by about one learning rate per step by Adam-like
        # optimisers: their steps are scaled by 1/sqrt(k), so that the row moves by about one
        off = 1.0 / float(k) ** 0.5
        return {n: jax.tree_util.tree_map(lambda _, f=(off if n == "W" else 1.0): f, v) for n, v in p.items()}

    def from_gaussian(mean: jax.Array, c: jax.Array) -> Any:
        mean = jnp.asarray(mean)
        w, d2 = _principal(jnp.asarray(c), k)
        return rewhiten({"loc": mean, "W": w.astype(mean.dtype), "rho": softplus_inverse(jnp.sqrt(d2)).astype(mean.dtype)})

    return Family("lowrank_advi", init, sample_and_log_q, log_q, mean=lambda p: plain(p)[0], std=std,
                  cov=cov, from_gaussian=from_gaussian, options={"rank": k, "init_scale": init_scale},
                  user_params=shown, frozen=_FROZEN, rewhiten=rewhiten, step_scale=step_scale,
                  from_user_params=from_shown, min_lr_factor=min(1.0, 1.0 / (2.0 * k) ** 0.5), gaussian=True)


def _principal(c: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The factor and diagonal variances of a rank-``k`` Gaussian close to covariance ``c``: the
    k leading principal directions, less the average variance left over (as in probabilistic
    PCA), and the diagonal that restores each coordinate's variance."""
    lam, vec = jnp.linalg.eigh(c)
    rest = jnp.mean(lam[:-k]) if lam.shape[0] > k else 0.0
    w = vec[:, -k:] * jnp.sqrt(jnp.maximum(lam[-k:] - rest, 0.0))
    return w, jnp.maximum(jnp.diag(c) - jnp.sum(w * w, axis=1), 1e-6 * jnp.diag(c))


register_family("lowrank_advi", low_rank)
