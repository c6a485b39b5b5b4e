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

__all__ = ["Family", "FAMILIES", "register_family", "make_family", "default_method", "softplus_inv",
           "LOG_2PI", "FULLRANK_MAX_DIM"]

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
    # top-level keys of the parameter dict that the optimiser leaves alone (a preconditioner)
    frozen: tuple[str, ...] = ()
    # the same distribution reparameterised so that the trained parameters start again from
    # the origin and unit scale of q itself (see variational.families.gaussian)
    rewhiten: Callable[[Params], Params] | None = None
    # per-leaf factors on the optimiser's steps (a pytree like params, of numbers), so that a
    # learning rate moves q by about as much whatever the number of parameters in a leaf
    step_scale: Callable[[Params], Any] | None = None

    def draw(self, params: Params, key: jax.Array, n: int) -> jax.Array:
        """``n`` draws in the unconstrained space, shape ``(n, D)``."""
        if self.sample is not None:
            return self.sample(params, key, n)
        return self.sample_and_log_q(params, key, n)[0]

    def trainable(self, params: Params) -> Any:
        """A pytree like ``params`` of booleans: which leaves the optimiser updates."""
        if not self.frozen or not isinstance(params, dict):
            return jax.tree_util.tree_map(lambda _: True, params)
        return {k: jax.tree_util.tree_map(lambda _, keep=k not in self.frozen: keep, v)
                for k, v in params.items()}


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


FULLRANK_MAX_DIM = 64
"""``method="auto"`` fits a full-rank Gaussian up to this many latent dimensions, mean-field above."""


def default_method(dim: int) -> str:
    """The family ``method="auto"`` chooses for a model with ``dim`` unconstrained dimensions.

    Full-rank where the dimension allows (its parameters grow as ``dim**2``): it is exact on a
    Gaussian posterior whatever its correlations, where a mean-field fit shrinks every sd to
    the conditional one. Above ``FULLRANK_MAX_DIM``, mean-field. See ``docs/control.md`` for the
    measurements behind the choice.

    Examples
    --------
    >>> default_method(5), default_method(175)
    ('fullrank_advi', 'advi')
    """
    return "fullrank_advi" if int(dim) <= FULLRANK_MAX_DIM else "advi"
