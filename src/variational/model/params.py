"""Parameters of the model: ``numpyro.param`` sites and the networks of ``numpyro.module``.

A model may declare point-estimated quantities with ``numpyro.param`` (empirical Bayes, type-II
maximum likelihood) or through a neural network (``numpyro.contrib.module.flax_module``,
``eqx_module``, ``random_flax_module``, whose weights are one ``numpyro.param`` site named
``"<name>$params"``). They are optimised jointly with the variational parameters: the engine
keeps them unconstrained (each through the bijection of its ``constraint=``), and every
evaluation of the model substitutes their constrained values.

A batch may carry the unconstrained values under the reserved entry :data:`PARAMS`; without it
the model sees the values a :class:`ModelParams` was made with (the initial ones, or the fitted
ones of a bound log density, see :meth:`variational.LogDensity.bind`).

Imports: numpyro, jax, :mod:`variational.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import jax
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from ..errors import ModelError

__all__ = ["PARAMS", "ModelParams", "param_sites"]

#: Reserved batch entry: the model's parameters (unconstrained), substituted into the model.
PARAMS = "_model_params"


def param_sites(trace: Mapping[str, dict]) -> dict[str, dict]:
    """The ``numpyro.param`` sites of a model trace; refuses ``numpyro.mutable`` state."""
    mutable = [n for n, s in trace.items() if s["type"] == "mutable"]
    if mutable:
        raise ModelError(
            f"site '{mutable[0]}' is numpyro.mutable state (for example a flax BatchNorm's running "
            f"statistics), which a variational fit does not update; build the network without "
            f"mutable state (LayerNorm instead of BatchNorm, no mutable=)")
    return {n: s for n, s in trace.items() if s["type"] == "param"}


@dataclass(frozen=True)
class ModelParams:
    """The model's parameters: names, constraints and values (unconstrained pytrees).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro.distributions import constraints
    >>> mp = ModelParams({"s": constraints.positive}, {"s": jnp.log(2.0)})
    >>> float(mp.constrain(mp.values)["s"])
    2.0
    """

    constraints: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)   # unconstrained

    @classmethod
    def from_trace(cls, sites: Mapping[str, dict]) -> "ModelParams":
        """From the param sites of a concrete trace (their values are the initial values)."""
        cons = {n: s["kwargs"].get("constraint", constraints.real) for n, s in sites.items()}
        mp = cls(cons, {})
        return cls(cons, mp.unconstrain({n: s["value"] for n, s in sites.items()}))

    @property
    def names(self) -> list[str]:
        return sorted(self.constraints)

    def __bool__(self) -> bool:
        return bool(self.constraints)

    def constrain(self, theta: Mapping[str, Any]) -> dict[str, Any]:
        """Unconstrained values -> the values the model sees."""
        return {n: jax.tree_util.tree_map(biject_to(self.constraints[n]), theta[n]) for n in self.names}

    def unconstrain(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Values the model sees -> unconstrained values."""
        return {n: jax.tree_util.tree_map(biject_to(self.constraints[n]).inv, values[n])
                for n in self.names}

    def shown(self, theta: Mapping[str, Any]) -> dict[str, Any]:
        """Constrained values of the parameters that hold arrays (``fit.params["model"]``).

        ``random_flax_module`` leaves placeholders without arrays in its network's parameter
        site for the weights it samples; those are left out.
        """
        values = self.constrain(theta)
        return {n: v for n, v in values.items() if jax.tree_util.tree_leaves(v)}

    def substitute(self, model: Callable, theta: Any = None) -> Callable:
        """``model`` with its parameters fixed at ``theta`` (default: :attr:`values`)."""
        if not self.constraints:
            return model
        return handlers.substitute(model, data=self.constrain(self.values if theta is None else theta))

    def with_values(self, theta: Mapping[str, Any]) -> "ModelParams":
        return ModelParams(self.constraints, dict(theta))
