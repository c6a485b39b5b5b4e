"""ELBO estimators, written once against the :class:`~variational.families.Family` interface."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from .families.base import Family

__all__ = ["elbo", "make_loss_and_grad"]


def elbo(
    family: Family,
    logp: Callable[[jax.Array, Any], jax.Array],
    params: Any,
    key: jax.Array,
    batch: Mapping[str, Any] | None = None,
    num_particles: int = 1,
    stl: bool = False,
) -> jax.Array:
    """Monte Carlo estimate of the ELBO, ``E_q[log p(x, z) - log q(z)]``.

    Parameters
    ----------
    family : Family
        The variational family.
    logp : callable
        ``logp(z_flat, batch) -> scalar`` (see :class:`variational.LogDensity`).
    params : pytree
        The family's parameters.
    key : jax.Array
        PRNG key.
    batch : mapping, optional
        Data passed to ``logp``.
    num_particles : int
        Number of draws averaged.
    stl : bool
        Sticking-the-landing: the score term of ``log q`` is dropped from the gradient
        (``log q`` evaluated at stopped parameters), which lowers variance near the optimum.

    Returns
    -------
    jax.Array
        Scalar ELBO estimate.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from variational.families import mean_field
    >>> fam = mean_field()
    >>> p = {"loc": jnp.zeros(1), "rho": jnp.full(1, 0.5413)}   # std = 1
    >>> logp = lambda z, b: -0.5 * jnp.sum(z ** 2)              # q equals p up to a constant
    >>> bool(jnp.isfinite(elbo(fam, logp, p, jax.random.PRNGKey(0))))
    True
    """
    z, log_q = family.sample_and_log_q(params, key, num_particles)
    if stl:
        if family.log_q is None:
            raise ValueError(f"stl=True needs a family with log_q; '{family.name}' has none")
        log_q = family.log_q(jax.lax.stop_gradient(params), z)
    lp = jax.vmap(logp, in_axes=(0, None))(z, batch)
    return jnp.mean(lp - log_q)


def make_loss_and_grad(
    family: Family,
    logp: Callable[[jax.Array, Any], jax.Array],
    num_particles: int = 1,
    stl: bool = False,
) -> Callable[[Any, jax.Array, Any], tuple[jax.Array, Any]]:
    """``f(params, key, batch) -> (loss, grads)`` with loss = -ELBO, for the engine."""
    if family.make_loss_and_grad is not None:
        return family.make_loss_and_grad(logp, num_particles=num_particles)

    def loss(params: Any, key: jax.Array, batch: Any) -> jax.Array:
        return -elbo(family, logp, params, key, batch, num_particles, stl)

    return jax.value_and_grad(loss)
