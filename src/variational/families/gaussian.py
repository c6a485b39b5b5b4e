"""Gaussian families: mean-field (``method="advi"``) and full-rank (``"fullrank_advi"``).

Both are written in *whitened* coordinates: a draw is ``z = c + P (u + S eps)`` with
``eps ~ N(0, I)``, where ``c`` and ``P`` (the preconditioner: a diagonal for mean-field, a lower
triangular matrix for full-rank) are held fixed by the optimiser, and ``u`` (the location) and
``S`` (the scale) are trained. At the start ``c`` is the initial point and ``P = I``, so the
trained parameters are those of the plain parameterisation. :meth:`Family.rewhiten` moves the
current approximation into ``(c, P)`` and resets ``u = 0, S = I``: the distribution is the
same, but an optimiser step of a given size now moves the location and scale by that many of
q's own standard deviations, in every direction, whatever the posterior's scales and
correlations. The step-size schedule (:mod:`variational.engine.schedule`) does this at each of
its stages.

The full-rank scale is a *scaled unit lower Cholesky factor* ``S = diag(s) (I + L)`` with
``L`` strictly lower triangular (as NumPyro's ``AutoMultivariateNormal``): each off-diagonal
entry is measured in units of its row's scale, so its gradient steps scale with the posterior.

``fit.params`` shows the approximation in the plain form: mean-field ``{"loc", "rho"}`` with
``std = softplus(rho)``; full-rank ``{"loc", "scale_tril"}`` with covariance
``scale_tril @ scale_tril.T``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from ..errors import VariationalError
from ._checks import positive_float
from .base import LOG_2PI, Family, Params, register_family, softplus_inv

__all__ = ["mean_field", "full_rank", "softplus_inverse"]

_ONE = softplus_inv(1.0)  # raw scale parameter of a unit scale
_FROZEN = ("pre_loc", "pre_scale")


def softplus_inverse(s: jax.Array) -> jax.Array:
    """``rho`` with ``softplus(rho) = s`` (s > 0), without overflow for large ``s``."""
    s = jnp.asarray(s)
    return s + jnp.log(-jnp.expm1(-s))


def _pre(p: Params) -> tuple[jax.Array, jax.Array]:
    """The preconditioner ``(c, P)``, held out of the gradient; a plain ``{"loc", "rho", ...}``
    dict without one is read with ``c = 0, P = I`` (the unwhitened parameterisation)."""
    if "pre_loc" not in p:
        loc = p["loc"]
        eye = jnp.ones_like(loc) if "L" not in p else jnp.eye(loc.shape[0], dtype=loc.dtype)
        return jnp.zeros_like(loc), eye
    return jax.lax.stop_gradient(p["pre_loc"]), jax.lax.stop_gradient(p["pre_scale"])


def mean_field(init_scale: float = 0.1) -> Family:
    """Mean-field Gaussian: independent normals, ``std = P softplus(rho)`` in whitened coordinates.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> fam = mean_field()
    >>> p = fam.init(jax.random.PRNGKey(0), jnp.zeros(3))
    >>> z, lq = fam.sample_and_log_q(p, jax.random.PRNGKey(1), 5)
    >>> z.shape, lq.shape
    ((5, 3), (5,))
    >>> q = fam.rewhiten(p)                  # the same distribution in whitened coordinates
    >>> bool(jnp.allclose(fam.std(q), fam.std(p)))
    True
    """
    rho0 = softplus_inv(positive_float("init_scale", init_scale))

    def init(key: jax.Array, z0: jax.Array) -> Params:
        z0 = jnp.asarray(z0)
        return {"loc": jnp.zeros_like(z0), "rho": jnp.full_like(z0, rho0),
                "pre_loc": z0, "pre_scale": jnp.ones_like(z0)}

    def mean(p: Params) -> jax.Array:
        c, s = _pre(p)
        return c + s * p["loc"]

    def std(p: Params) -> jax.Array:
        return _pre(p)[1] * jax.nn.softplus(p["rho"])

    def log_q(p: Params, z: jax.Array) -> jax.Array:
        s = std(p)
        u = (z - mean(p)) / s
        return -0.5 * jnp.sum(u * u, -1) - jnp.sum(jnp.log(s)) - 0.5 * z.shape[-1] * LOG_2PI

    def sample_and_log_q(p: Params, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        c, s = _pre(p)
        sd = jax.nn.softplus(p["rho"])
        eps = jax.random.normal(key, (n,) + p["loc"].shape, p["loc"].dtype)
        z = c + s * (p["loc"] + sd * eps)
        lq = -0.5 * jnp.sum(eps * eps, -1) - jnp.sum(jnp.log(s * sd)) - 0.5 * z.shape[-1] * LOG_2PI
        return z, lq

    def rewhiten(p: Params) -> Params:
        # other entries (a model's own parameters next to q's) are kept as they are
        return {**p, "loc": jnp.zeros_like(p["loc"]), "rho": jnp.full_like(p["rho"], _ONE),
                "pre_loc": mean(p), "pre_scale": std(p)}

    def shown(p: Params) -> dict[str, jax.Array]:
        return {"loc": mean(p), "rho": softplus_inverse(std(p))}

    def from_gaussian(m: jax.Array, c: jax.Array) -> Params:
        m = jnp.asarray(m)
        return {"loc": jnp.zeros_like(m), "rho": jnp.full_like(m, _ONE), "pre_loc": m,
                "pre_scale": jnp.sqrt(jnp.diag(jnp.asarray(c, m.dtype)))}

    def from_shown(p: Params, new: dict) -> Params:
        # init_params= in the shown form: the location goes to the preconditioner, rho as given
        v = {**shown(p), **new}
        loc = jnp.asarray(v["loc"], p["loc"].dtype)
        return {**p, "loc": jnp.zeros_like(loc), "rho": jnp.asarray(v["rho"], p["rho"].dtype),
                "pre_loc": loc, "pre_scale": jnp.ones_like(loc)}

    return Family("advi", init, sample_and_log_q, log_q, mean=mean, std=std,
                  cov=lambda p: jnp.diag(std(p) ** 2), options={"init_scale": init_scale},
                  user_params=shown, frozen=_FROZEN, rewhiten=rewhiten, from_gaussian=from_gaussian,
                  from_user_params=from_shown, gaussian=True, factorised=True)


def full_rank(init_scale: float = 0.1) -> Family:
    """Full-rank Gaussian with covariance ``(P S)(P S)^T``, ``S`` a scaled unit lower Cholesky factor.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> fam = full_rank()
    >>> p = fam.init(jax.random.PRNGKey(0), jnp.zeros(2))
    >>> fam.cov(p).shape
    (2, 2)
    >>> bool(jnp.allclose(fam.cov(fam.rewhiten(p)), fam.cov(p)))
    True
    """
    rho0 = softplus_inv(positive_float("init_scale", init_scale))

    def init(key: jax.Array, z0: jax.Array) -> Params:
        z0 = jnp.asarray(z0)
        d = z0.shape[0]
        return {"loc": jnp.zeros_like(z0), "rho": jnp.full_like(z0, rho0),
                "L": jnp.zeros((d, d), z0.dtype), "pre_loc": z0, "pre_scale": jnp.eye(d, dtype=z0.dtype)}

    def scale(p: Params) -> jax.Array:
        """The trained factor ``S = diag(softplus(rho)) (I + tril(L, -1))``."""
        d = p["loc"].shape[0]
        unit = jnp.tril(p["L"], -1) + jnp.eye(d, dtype=p["L"].dtype)
        return jax.nn.softplus(p["rho"])[:, None] * unit

    def chol(p: Params) -> jax.Array:
        return _pre(p)[1] @ scale(p)

    def mean(p: Params) -> jax.Array:
        c, P = _pre(p)
        return c + P @ p["loc"]

    def _logdet(p: Params) -> jax.Array:
        return jnp.sum(jnp.log(jnp.diag(_pre(p)[1]))) + jnp.sum(jnp.log(jax.nn.softplus(p["rho"])))

    def log_q(p: Params, z: jax.Array) -> jax.Array:
        c, P = _pre(p)
        w = solve_triangular(P, (z - c).T, lower=True) - p["loc"][:, None]
        u = solve_triangular(scale(p), w, lower=True).T
        return -0.5 * jnp.sum(u * u, -1) - _logdet(p) - 0.5 * z.shape[-1] * LOG_2PI

    def sample_and_log_q(p: Params, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        c, P = _pre(p)
        eps = jax.random.normal(key, (n,) + p["loc"].shape, p["loc"].dtype)
        z = c + (p["loc"] + eps @ scale(p).T) @ P.T
        lq = -0.5 * jnp.sum(eps * eps, -1) - _logdet(p) - 0.5 * z.shape[-1] * LOG_2PI
        return z, lq

    def cov(p: Params) -> jax.Array:
        L = chol(p)
        return L @ L.T

    def rewhiten(p: Params) -> Params:
        return {**p, "loc": jnp.zeros_like(p["loc"]), "rho": jnp.full_like(p["rho"], _ONE),
                "L": jnp.zeros_like(p["L"]), "pre_loc": mean(p), "pre_scale": chol(p)}

    def from_gaussian(m: jax.Array, c: jax.Array) -> Params:
        m = jnp.asarray(m)
        return {"loc": jnp.zeros_like(m), "rho": jnp.full_like(m, _ONE), "L": jnp.zeros((m.shape[0],) * 2, m.dtype),
                "pre_loc": m, "pre_scale": jnp.linalg.cholesky(jnp.asarray(c, m.dtype))}

    def from_shown(p: Params, new: dict) -> Params:
        # init_params= in the shown form {"loc", "scale_tril"}: both go to the preconditioner
        v = {**user_params(p), **new}
        tril = jnp.asarray(v["scale_tril"], p["L"].dtype)
        if not bool(jnp.all(jnp.diag(tril) > 0)):
            raise VariationalError("init_params['scale_tril'] must have a positive diagonal (it is a "
                                   "Cholesky factor of the covariance)")
        return {**rewhiten(p), "pre_loc": jnp.asarray(v["loc"], p["loc"].dtype), "pre_scale": jnp.tril(tril)}

    def user_params(p: Params) -> dict[str, jax.Array]:
        return {"loc": mean(p), "scale_tril": chol(p)}

    def step_scale(p: Params) -> Params:
        # a row of S has up to D - 1 off-diagonal entries, each moved by about one learning
        # rate per step by Adam-like optimisers: their steps are scaled by 1/sqrt(D) so that
        # the row (a marginal standard deviation) moves by about one learning rate
        d = p["loc"].shape[0]
        off = 1.0 / float(np.sqrt(max(d - 1, 1)))
        return {k: jax.tree_util.tree_map(lambda _, f=(off if k == "L" else 1.0): f, v) for k, v in p.items()}

    return Family("fullrank_advi", init, sample_and_log_q, log_q, mean=mean,
                  std=lambda p: jnp.sqrt(jnp.sum(chol(p) ** 2, axis=1)), cov=cov,
                  options={"init_scale": init_scale}, user_params=user_params,
                  frozen=_FROZEN, rewhiten=rewhiten, step_scale=step_scale, from_gaussian=from_gaussian,
                  from_user_params=from_shown, gaussian=True)


register_family("advi", mean_field)
register_family("fullrank_advi", full_rank)
