"""Small steps of ``vi.fit`` that need no fit: checks of its arguments, a family's options from
them, and the plan of the data (one process or several).

May import: :mod:`variational.data`, :mod:`variational.engine`.
"""

from __future__ import annotations

from typing import Any, Callable

from ..data import plan as _plan
from . import devices as _devices

__all__ = ["check_arguments", "method_options", "plan_data"]


def check_arguments(steps: Any, num_particles: Any, checkpoint: Any, checkpoint_every: Any) -> None:
    """Refuse, by name, a negative ``steps``, a ``checkpoint_every`` without a file, no particles."""
    if steps is not None and int(steps) < 0:
        raise ValueError(f"steps={steps!r} must be a non-negative integer, or None to run until convergence")
    if checkpoint_every is not None and checkpoint is None:
        raise ValueError("checkpoint_every= needs checkpoint=path, the file to write")
    if int(num_particles) < 1:
        raise ValueError(f"num_particles={num_particles!r} must be at least 1")


def method_options(method: Any, options: dict, steps: Any) -> dict:
    """The options a family gets: annealed SVGD's schedule spans the fit's ``steps``."""
    if method == "asvgd" and "anneal_steps" not in options and steps is not None:
        return {**options, "anneal_steps": max(int(steps), 1)}
    return options


def plan_data(model: Callable, data: Any, batch_size: Any, replace: bool, model_kwargs: Any,
              seed: int, place: Any) -> _plan.Plan:
    """The data plan of a fit: this process's shards across processes, else all of ``data``."""
    if place is not None and place.multiprocess:
        return _devices.multiprocess_plan(model, data, batch_size, model_kwargs, seed)
    return _plan.plan(model, data, batch_size=batch_size, replace=replace,
                      model_kwargs=model_kwargs, seed=seed)
