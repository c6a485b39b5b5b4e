"""Validation of family options, with errors that name the argument the user wrote.

Counts are checked by :func:`variational.errors.whole_number`, the one integer check.
"""

from __future__ import annotations

from typing import Any

from ..errors import VariationalError


def positive_float(name: str, value: Any, allow_zero: bool = False) -> float:
    """``value`` as a positive (or non-negative) float, else a VariationalError naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (v >= 0 if allow_zero else v > 0):
        kind = "non-negative" if allow_zero else "positive"
        raise VariationalError(f"{name}={value!r} must be a {kind} number")
    return v
