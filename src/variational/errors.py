"""Exceptions raised by ``variational``.

Every error names what the user wrote (a site, a column, an argument) and says what to do.
They subclass :class:`ValueError` so that generic handlers keep working.
"""

from __future__ import annotations

import numbers
import os
import sys

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


class VariationalError(ValueError):
    """Base class of the library's user-facing errors."""


class ModelError(VariationalError):
    """The model cannot be turned into a log density (bad site, bad shape, bad support...)."""


class DataError(VariationalError):
    """The data does not fit the model or is malformed (mismatched columns, NaN, empty...)."""


class CheckpointError(VariationalError):
    """A saved fit or checkpoint is corrupt or does not match the model."""


def whole_number(name: str, value: object, minimum: int = 0) -> int:
    """``value`` as an int when it is a whole number >= ``minimum``, else an error naming ``name``.

    The one check of counts in the library (steps, draws, particles, ranks, iterations):
    ``1e4`` is a whole number; ``10.7``, ``True`` and ``"10"`` are not.

    Examples
    --------
    >>> whole_number("steps", 1e4)
    10000
    >>> whole_number("n", 2.7, 1)
    Traceback (most recent call last):
    ...
    variational.errors.VariationalError: n=2.7 must be a whole number >= 1
    """
    boolean = isinstance(value, bool) or type(value).__name__ == "bool_"
    ok = not boolean and (isinstance(value, numbers.Integral) or hasattr(value, "__index__"))
    if not ok and not boolean and isinstance(value, numbers.Real):
        f = float(value)
        ok, value = (True, int(f)) if f == f and abs(f) != float("inf") and f.is_integer() else (False, value)
    if not ok or int(value) < minimum:  # type: ignore[call-overload]
        raise VariationalError(f"{name}={value!r} must be a whole number >= {minimum}"
                               + (", or None to run until convergence" if name == "steps" else ""))
    return int(value)  # type: ignore[call-overload]


def user_stacklevel() -> int:
    """``stacklevel`` for ``warnings.warn`` in the calling function that points at the first
    frame outside this package: the line of the user's code that led to the warning.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     warnings.warn("here", stacklevel=user_stacklevel())
    >>> w[0].filename.endswith("errors.py")
    False
    """
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level
