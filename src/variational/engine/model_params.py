"""The model's own parameters (``numpyro.param``, network weights) optimised with the family's.

When the model declares parameters (see :mod:`variational.model.params`), the engine optimises
one pytree: the family's parameters with the model's next to them under the key ``"model"``
(unconstrained, named as the model names them). :func:`attach` wraps the family so that each
of its functions sees only its own parameters, and wraps the loss so that the model's
parameters reach the log density through the batch (:data:`~variational.model.params.PARAMS`)
and get their gradient from the same loss: for an ELBO family that is type-II maximum
likelihood (empirical Bayes) with the variational parameters; for SVGD the gradient of the
mean log joint over the particles. ``fit.params["model"]`` shows them constrained.

Imports: :mod:`variational.families`, :mod:`variational.model`, jax.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from ..errors import ModelError
from ..families.base import Family
from ..model import LogDensity
from ..model.params import PARAMS

__all__ = ["MODEL", "attach", "split"]

#: Key of the model's parameters in the engine's parameter pytree and in ``fit.params``.
MODEL = "model"


def split(params: Any) -> tuple[Any, Any]:
    """The family's parameters and the model's (unconstrained), from the engine's pytree."""
    return {k: v for k, v in params.items() if k != MODEL}, params[MODEL]


def _wrap(fn: Callable | None) -> Callable | None:
    if fn is None:
        return None
    return lambda params, *args: fn(split(params)[0], *args)


def attach(family: Family, ld: LogDensity, loss_and_grad: Callable) -> tuple[Family, Callable]:
    """``family`` and ``loss_and_grad`` extended with the model's parameters (unchanged without any).

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> from numpyro.distributions import constraints
    >>> import jax, jax.numpy as jnp
    >>> from variational.families import mean_field
    >>> from variational.objectives import make_loss_and_grad
    >>> def model(y):
    ...     s = numpyro.param("s", 1.0, constraint=constraints.positive)
    ...     mu = numpyro.sample("mu", dist.Normal(0, s))
    ...     numpyro.sample("y", dist.Normal(mu, 1), obs=y)
    >>> ld = LogDensity(model, {"y": jnp.ones(3)})
    >>> fam, lg = attach(mean_field(), ld, make_loss_and_grad(mean_field(), ld.logp))
    >>> p = fam.init(jax.random.PRNGKey(0), ld.init)
    >>> sorted(p), float(fam.user_params(p)["model"]["s"])
    (['loc', 'model', 'pre_loc', 'pre_scale', 'rho'], 1.0)
    """
    if not ld.params:
        return family, loss_and_grad
    mp = ld.params

    def _join(q: Any) -> Any:
        if not isinstance(q, dict) or MODEL in q:
            raise ModelError(
                f"the model has parameters (numpyro.param: {mp.names}), which are kept next to the "
                f"family's parameters under the key '{MODEL}'; the family '{family.name}' has "
                f"parameters that are not a dict without that key")
        return {**q, MODEL: mp.values}

    def init(key: jax.Array, z0: jax.Array) -> Any:
        return _join(family.init(key, z0))

    def init_with_logp(key: jax.Array, z0: jax.Array, logp: Callable) -> Any:
        return _join(family.init_with_logp(key, z0, logp))

    def user_params(params: Any) -> Any:
        q, theta = split(params)
        shown = family.user_params(q) if family.user_params is not None else q
        return {**shown, MODEL: mp.shown(theta)}

    wrapped = dataclasses.replace(
        family, init=init, sample_and_log_q=_wrap(family.sample_and_log_q), log_q=_wrap(family.log_q),
        mean=_wrap(family.mean), std=_wrap(family.std), cov=_wrap(family.cov),
        sample=_wrap(family.sample), particles=_wrap(family.particles), user_params=user_params,
        init_with_logp=None if family.init_with_logp is None else init_with_logp)

    def joint(params: Any, key: jax.Array, batch: Any, *step: Any) -> tuple[jax.Array, Any]:
        q, theta = split(params)
        loss, pullback, grads = jax.vjp(
            lambda th: family_loss(q, key, {**(batch or {}), PARAMS: th}, *step), theta, has_aux=True)
        (g_theta,) = pullback(jnp.ones_like(loss))
        return loss, {**grads, MODEL: g_theta}

    family_loss = loss_and_grad
    joint.takes_step = getattr(loss_and_grad, "takes_step", False)   # (annealed SVGD's schedule)
    return wrapped, joint
