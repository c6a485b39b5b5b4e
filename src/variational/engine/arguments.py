"""Checks of ``vi.fit``'s arguments, made before anything is traced or run.

A number of steps must be a whole number (``steps=10.7`` is refused, not run as 10), an option
the method does not take is a misspelt argument (named, with the nearest known word), and a
checkpoint path must be writable before the fit starts (see
:func:`variational.engine.checkpoint.check_target`).

Imports: numpy, :mod:`variational.families.base`, :mod:`.checkpoint`.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping

import numpy as np

from ..families.base import Family, method_options
from .checkpoint import check_target

__all__ = ["whole_number", "check_arguments", "check_method_options", "family_options"]


def whole_number(name: str, value: Any, minimum: int = 0) -> int:
    """``value`` as an int when it is a whole number >= ``minimum`` (``1e4`` is; ``10.7`` is not).

    Examples
    --------
    >>> whole_number("steps", 1e4)
    10000
    """
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        ok, value = True, int(value)
    if not ok or int(value) < minimum:
        raise ValueError(f"{name}={value!r} must be a whole number >= {minimum}"
                         + (", or None to run until convergence" if name == "steps" else ""))
    return int(value)


def check_arguments(steps: Any, num_particles: Any, checkpoint: Any, checkpoint_every: Any,
                    max_steps: Any) -> tuple[int | None, int]:
    """``(steps, num_particles)`` as ints after checking the counts and the checkpoint path.

    Examples
    --------
    >>> check_arguments(1e3, 1, None, None, 10_000)
    (1000, 1)
    """
    steps = None if steps is None else whole_number("steps", steps)
    if steps is None:
        whole_number("max_steps", max_steps, 1)
    if checkpoint_every is not None:
        if checkpoint is None:
            raise ValueError("checkpoint_every= needs checkpoint=path, the file to write")
        whole_number("checkpoint_every", checkpoint_every, 1)
    if checkpoint is not None:
        check_target(checkpoint)  # a folder, or no permission: say so before running
    return steps, whole_number("num_particles", num_particles, 1)


def check_method_options(method: Any, guide: Any, options: Mapping[str, Any], arguments: Iterable[str]) -> None:
    """An option the method does not take is a misspelt argument: name it, suggest the nearest.

    ``arguments`` are the other keyword arguments of the call (``vi.fit``'s parameters).

    Examples
    --------
    >>> check_method_options("advi", None, {"init_scale": 0.1}, ["steps"])
    >>> check_method_options("advi", None, {"n_steps": 5}, ["steps"])
    Traceback (most recent call last):
    ...
    TypeError: vi.fit() got an unexpected keyword argument 'n_steps' (did you mean 'steps'?); method 'advi' takes the options ['init_scale']
    """
    if guide is not None or not options:
        return  # guide= with options is refused with its own message
    known = set() if isinstance(method, Family) else method_options(method)
    if known is None:
        return  # an unknown method: make_family lists the known ones
    unknown = [k for k in options if k not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(set(arguments) | known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        name = method.name if isinstance(method, Family) else method
        raise TypeError(f"vi.fit() got an unexpected keyword argument {unknown[0]!r}{hint}; method "
                        f"{name!r} takes the options {sorted(known) if known else 'none'}")


def family_options(method: Any, options: dict, steps: Any) -> dict:
    """The options the family of ``method`` is built with: ``asvgd``'s schedule spans the fit.

    Examples
    --------
    >>> family_options("asvgd", {}, 300)
    {'anneal_steps': 300}
    """
    if method == "asvgd" and "anneal_steps" not in options and steps is not None:
        return {**options, "anneal_steps": max(int(steps), 1)}   # the schedule spans the fit
    return options
