"""Variational families over the flat unconstrained space.

A family is a set of pure functions over a parameter pytree (see :class:`Family`):

- ``init(key, z0) -> params``: parameters centred on the initial point ``z0`` (shape ``(D,)``);
- ``sample_and_log_q(params, key, n) -> (z, log_q)``: ``n`` reparameterised draws ``(n, D)``
  and their log density under q;
- ``log_q(params, z)``: log density of given draws (used for sticking-the-landing), optional;
- ``mean``, ``std``, ``cov``: summaries in unconstrained space where defined.

The ELBO (:mod:`variational.objectives`) is written once, against this interface. A method
that is not an ELBO method (SVGD) supplies ``loss_and_grad`` itself and plugs into the same
engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

__all__ = ["Family", "mean_field", "full_rank", "FAMILIES", "register_family", "make_family"]

Params = Any

_LOG_2PI = jnp.log(2.0 * jnp.pi)


@dataclass(frozen=True)
class Family:
    """A variational family: pure functions over a parameter pytree."""

    name: str
    init: Callable[[jax.Array, jax.Array], Params]
    sample_and_log_q: Callable[[Params, jax.Array, int], tuple[jax.Array, jax.Array]]
    log_q: Callable[[Params, jax.Array], jax.Array] | None = None
    mean: Callable[[Params], jax.Array] | None = None
    std: Callable[[Params], jax.Array] | None = None
    cov: Callable[[Params], jax.Array] | None = None
    # a method that is not an ELBO method supplies its own (loss, grads) function builder:
    # make_loss_and_grad(logp, family_options) -> f(params, key, batch) -> (loss, grads)
    make_loss_and_grad: Callable[..., Callable] | None = None
    # draws of the approximation, shape (n, D) (defaults to sample_and_log_q's draws)
    sample: Callable[[Params, jax.Array, int], jax.Array] | None = None
    options: dict = field(default_factory=dict)
    # an empirical family's support points (P, D): summaries use them exactly, not resampled draws
    particles: Callable[[Params], jax.Array] | None = None
    # the parameters as the user sees them in ``fit.params`` (a guide's constrained values);
    # the engine always optimises the raw pytree (``fit.state.params``)
    user_params: Callable[[Params], Any] | None = None
    # an init that evaluates the model: f(key, z0, logp_fn) -> params, used instead of ``init``
    # when given; logp_fn(z_flat) is the log joint on the full data (SVGD's resampled start)
    init_with_logp: Callable[[jax.Array, jax.Array, Callable], Params] | None = None

    def draw(self, params: Params, key: jax.Array, n: int) -> jax.Array:
        """``n`` draws in the unconstrained space, shape ``(n, D)``."""
        if self.sample is not None:
            return self.sample(params, key, n)
        return self.sample_and_log_q(params, key, n)[0]


def _softplus_inv(y: float) -> float:
    return float(jnp.log(jnp.expm1(y)))


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
    rho0 = _softplus_inv(init_scale)

    def init(key: jax.Array, z0: jax.Array) -> Params:
        return {"loc": jnp.asarray(z0), "rho": jnp.full_like(z0, rho0)}

    def std(p: Params) -> jax.Array:
        return jax.nn.softplus(p["rho"])

    def log_q(p: Params, z: jax.Array) -> jax.Array:
        s = std(p)
        u = (z - p["loc"]) / s
        return -0.5 * jnp.sum(u * u, -1) - jnp.sum(jnp.log(s)) - 0.5 * z.shape[-1] * _LOG_2PI

    def sample_and_log_q(p: Params, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        s = std(p)
        eps = jax.random.normal(key, (n,) + p["loc"].shape, p["loc"].dtype)
        z = p["loc"] + s * eps
        lq = -0.5 * jnp.sum(eps * eps, -1) - jnp.sum(jnp.log(s)) - 0.5 * z.shape[-1] * _LOG_2PI
        return z, lq

    return Family("advi", init, sample_and_log_q, log_q, mean=lambda p: p["loc"], std=std,
                  cov=lambda p: jnp.diag(std(p) ** 2), options={"init_scale": init_scale})


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
    rho0 = _softplus_inv(init_scale)

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
        return -0.5 * jnp.sum(u * u, -1) - _logdet(L) - 0.5 * z.shape[-1] * _LOG_2PI

    def sample_and_log_q(p: Params, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        L = chol(p)
        eps = jax.random.normal(key, (n,) + p["loc"].shape, p["loc"].dtype)
        z = p["loc"] + eps @ L.T
        lq = -0.5 * jnp.sum(eps * eps, -1) - _logdet(L) - 0.5 * z.shape[-1] * _LOG_2PI
        return z, lq

    def cov(p: Params) -> jax.Array:
        L = chol(p)
        return L @ L.T

    return Family("fullrank_advi", init, sample_and_log_q, log_q, mean=lambda p: p["loc"],
                  std=lambda p: jnp.sqrt(jnp.diag(cov(p))), cov=cov,
                  options={"init_scale": init_scale})


# name -> builder(**options) -> Family. Other modules register more (SVGD, low-rank, flows...).
FAMILIES: dict[str, Callable[..., Family]] = {
    "advi": mean_field,
    "fullrank_advi": full_rank,
}


def register_family(name: str, builder: Callable[..., Family]) -> None:
    """Make ``method=name`` available to :func:`variational.fit`."""
    FAMILIES[name] = builder


def make_family(method: str | Family, **options: Any) -> Family:
    """Resolve ``method`` (a name or a :class:`Family`) into a :class:`Family`."""
    if isinstance(method, Family):
        return method
    if method not in FAMILIES:
        raise ValueError(f"method={method!r} is not known; choose one of {sorted(FAMILIES)}")
    return FAMILIES[method](**options)
