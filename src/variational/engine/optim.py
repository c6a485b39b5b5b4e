"""Optimisers: any optax ``GradientTransformation``, or a name plus a learning rate."""

from __future__ import annotations

from typing import Callable

import optax

__all__ = ["make_optimizer", "OPTIMIZERS"]

OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "sgd": lambda lr: optax.sgd(lr),
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "adagrad": lambda lr: optax.adagrad(lr),
    "rmsprop": lambda lr: optax.rmsprop(lr),
    "adam": lambda lr: optax.adam(lr),
    "adamax": lambda lr: optax.adamax(lr),
}


def make_optimizer(optimizer: str | optax.GradientTransformation, learning_rate: float) -> optax.GradientTransformation:
    """Resolve ``optimizer`` into an optax ``GradientTransformation``.

    Parameters
    ----------
    optimizer : str or optax.GradientTransformation
        One of "sgd", "momentum", "adagrad", "rmsprop", "adam", "adamax", or an optax object
        (used as is; ``learning_rate`` is then ignored).
    learning_rate : float
        Step size for a named optimiser.

    Examples
    --------
    >>> opt = make_optimizer("adam", 1e-2)
    >>> hasattr(opt, "update")
    True
    """
    if isinstance(optimizer, optax.GradientTransformation) or (
            hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        return optimizer
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r} is not known; choose one of "
                         f"{sorted(OPTIMIZERS)} or pass an optax GradientTransformation")
    try:
        lr = float(learning_rate)
    except (TypeError, ValueError):
        raise ValueError(f"learning_rate={learning_rate!r} must be a positive number") from None
    if not lr > 0:
        raise ValueError(f"learning_rate={learning_rate!r} must be a positive number")
    return OPTIMIZERS[optimizer](lr)
