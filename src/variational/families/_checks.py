"""Validation of family options, with errors that name the argument the user wrote."""

from __future__ import annotations

from typing import Any

from ..errors import VariationalError


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int of at least ``minimum``, else a VariationalError naming ``name``."""
    ok = isinstance(value, (int,)) and not isinstance(value, bool) and value >= minimum
    if not ok and hasattr(value, "__index__") and not isinstance(value, bool):
        ok = int(value) >= minimum
    if not ok:
        raise VariationalError(f"{name}={value!r} must be an integer of at least {minimum}")
    return int(value)


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
