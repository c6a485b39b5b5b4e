"""A fit's engine and first state, and the key of its family.

Compiled programs are found by their own trace (see :mod:`variational.compilation`): a fit's
chunk of steps is shared with every other fit whose chunk traces alike, whatever objects built
it. :func:`family_key` names a fit's family for checkpoints and reports only.
"""

from __future__ import annotations

from typing import Any

import jax

from ..compilation import freeze, run_traced
from ..families.base import FAMILIES, Family
from .loop import Engine

__all__ = ["family_key", "keyed_engine", "first_state"]


def family_key(method: Any, options: dict, family: Family) -> tuple:
    """What determines a family's functions: a named method's builder and options (the same
    options give the same functions); any other family (a Family object, a guide) itself."""
    if isinstance(method, str) and family.name == method and method in FAMILIES:
        return ("method", method, freeze(FAMILIES[method]), freeze(options))
    return ("family", freeze(family))


def keyed_engine(loss_and_grad: Any, opt: Any, batcher: Any, capacity: Any, ld: Any, guard: Any,
                 settings: tuple) -> Engine:
    """The fit's :class:`Engine`, whose chunk takes the model's numbers as an argument
    (``ld.lift``); ``settings`` is kept for the callers' sake: the engine's chunk is found by
    its trace, which holds all it would say."""
    return Engine(loss_and_grad, opt, batcher, capacity=capacity, guard=guard, lift=getattr(ld, "lift", None))


def first_state(engine: Any, family: Family, z0: jax.Array, key: jax.Array) -> Any:
    """The engine's state at the family's initial parameters around ``z0``, in one compiled call.

    Found by its own trace (it holds no model, so tracing is cheap).
    """
    first = lambda k, z: engine.init_state(family.init(jax.random.fold_in(k, 0), z), k)  # noqa: E731
    return run_traced("first state", first, key, z0)
