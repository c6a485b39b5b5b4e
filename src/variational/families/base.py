"""The Family interface and the registry of ``method=`` names.

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

__all__ = ["Family", "FAMILIES", "register_family", "make_family", "softplus_inv", "LOG_2PI"]

Params = Any

LOG_2PI = jnp.log(2.0 * jnp.pi)


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


def softplus_inv(y: float) -> float:
    return float(jnp.log(jnp.expm1(y)))


# name -> builder(**options) -> Family. Other modules register more (SVGD, low-rank, flows...).
FAMILIES: dict[str, Callable[..., Family]] = {}


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
