"""What determines a fit's compiled programs, as keys (see :mod:`variational.compilation`).

A fit's chunk of steps is shared with every other fit whose keys are equal: the same model
program (:meth:`variational.LogDensity.key`), family and options, optimiser, minibatch settings,
guard and argument shapes. Whatever only one object knows (a ``Family`` object, a guide, an
optax object, a device placement) is keyed by identity, so it is shared with no other fit.
"""

from __future__ import annotations

from typing import Any

import jax

from ..compilation import code_key, freeze, run_traced
from ..families.base import FAMILIES, Family
from .loop import Engine

__all__ = ["family_key", "program_key", "keyed_engine", "first_state"]


def family_key(method: Any, options: dict, family: Family) -> tuple:
    """What determines a family's functions: a named method's builder and options (the same
    options give the same functions); any other family (a Family object, a guide) itself."""
    if isinstance(method, str) and family.name == method and method in FAMILIES:
        return ("method", method, freeze(FAMILIES[method]), freeze(options))
    return ("family", freeze(family))


def program_key(fam_key: tuple, optimizer: Any, num_particles: int, stl: bool, place: Any,
                batcher: Any, guard: Any, objective: Any = None) -> tuple:
    """What determines a fit's compiled chunk besides the model and the shapes of its arguments."""
    opt = ("optimizer", optimizer if isinstance(optimizer, str) else freeze(optimizer))
    target = None if objective is None else (
        "objective", objective.name, objective.alpha, float(objective.kl_weight))
    return (fam_key, opt, int(num_particles), bool(stl), freeze(place),
            (type(batcher).__qualname__, freeze(vars(batcher))), ("guard", code_key(guard)), target)


def keyed_engine(loss_and_grad: Any, opt: Any, batcher: Any, capacity: Any, ld: Any, guard: Any,
                 settings: tuple) -> Engine:
    """An :class:`Engine` whose chunk is shared with every fit of the same model program and
    settings ``(family key, optimizer, num_particles, stl, placement, objective)``."""
    fam_key, optimizer, num_particles, stl, place, objective = settings
    return Engine(loss_and_grad, opt, batcher, capacity=capacity, guard=guard,
                  program_key=program_key(fam_key, optimizer, num_particles, stl, place, batcher,
                                          guard, objective),
                  model_key=lambda batch: ld.key("logp", batch))


def first_state(engine: Any, family: Family, z0: jax.Array, key: jax.Array) -> Any:
    """The engine's state at the family's initial parameters around ``z0``, in one compiled call.

    Keyed by its own trace (it holds no model, so tracing is cheap): the optimiser's state holds
    constants, such as the learning rate, that no other key names.
    """
    first = lambda k, z: engine.init_state(family.init(jax.random.fold_in(k, 0), z), k)  # noqa: E731
    return run_traced("first state", first, key, z0)
