"""Exceptions raised by ``variational``.

Every error names what the user wrote (a site, a column, an argument) and says what to do.
They subclass :class:`ValueError` so that generic handlers keep working.
"""

from __future__ import annotations

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
