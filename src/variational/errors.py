"""Exceptions raised by ``variational``.

Every error names what the user wrote (a site, a column, an argument) and says what to do.
They subclass :class:`ValueError` so that generic handlers keep working.
"""

from __future__ import annotations


class VariationalError(ValueError):
    """Base class of the library's user-facing errors."""


class ModelError(VariationalError):
    """The model cannot be turned into a log density (bad site, bad shape, bad support...)."""


class DataError(VariationalError):
    """The data does not fit the model or is malformed (mismatched columns, NaN, empty...)."""


class CheckpointError(VariationalError):
    """A saved fit or checkpoint is corrupt or does not match the model."""
