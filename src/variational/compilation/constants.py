"""A model's numbers as arguments of its programs, so that a fit after an edit of them compiles nothing.

The numbers a model gives its distributions (a prior's scale, a likelihood's fixed sd) are, traced
as they are, literals of every compiled program that runs the model: changing one (the next fit
after a user edits a prior) would make every program new. Instead, a log density records those
numbers once (:func:`recording`), and a program that runs its model is traced with them as an
argument (``program(..., lift=numbers)``, see :mod:`.programs`): while it is traced,
:func:`lifting` says which numbers to expect, in order, and what stands for each in the trace.
The model's handler (:class:`variational.model.constants.LiftConstants`) puts the argument's
entry in place of a number only where the two are equal, so the program computes exactly what the
model says, and it is one program for every value of those numbers: found again in this process,
and in JAX's persistent cache by a new process.

Examples
--------
>>> import numpy as np
>>> with recording() as numbers:
...     recorder().append(np.asarray(2.5))
>>> [float(x) for x in numbers]
[2.5]
>>> current() is None
True
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["lifting", "current", "recording", "recorder"]

_local = threading.local()


@contextmanager
def lifting(expected: tuple, traced: tuple) -> Iterator[None]:
    """While a program is traced: the numbers expected (host values, in the order the model
    meets them) and the traced argument entries that stand for them."""
    previous = getattr(_local, "lift", None)
    _local.lift = (expected, traced)
    try:
        yield
    finally:
        _local.lift = previous


def current() -> tuple | None:
    """``(expected, traced)`` of the program being traced with its model's numbers as an
    argument, or None."""
    return getattr(_local, "lift", None)


@contextmanager
def recording() -> Iterator[list]:
    """Collect the numbers a model run meets (host values, in order) into the list yielded."""
    previous = getattr(_local, "record", None)
    _local.record = found = []
    try:
        yield found
    finally:
        _local.record = previous


def recorder() -> list | None:
    """The list a model run's numbers go to (inside :func:`recording`), or None."""
    return getattr(_local, "record", None)
