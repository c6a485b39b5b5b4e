"""Optimisers: any optax ``GradientTransformation``, or a name plus a learning rate.

The names PyMC users know keep PyMC's semantics and defaults (``pymc.variational.updates``):
``"adagrad_window"`` (PyMC's ADVI default: each step divides the gradient by the root of the sum
of the last ``n_win`` squared gradients plus ``epsilon``), ``"nesterov_momentum"`` (momentum
0.9) and ``"adadelta"`` (rho 0.95, epsilon 1e-6).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["make_optimizer", "OPTIMIZERS", "adagrad_window", "scale_by_window_rms", "WindowState"]


class WindowState(NamedTuple):
    """The last ``n_win`` squared gradients (a leading window axis per leaf) and the next slot."""

    squares: Any
    index: jax.Array


def scale_by_window_rms(n_win: int = 10, epsilon: float = 0.1) -> optax.GradientTransformation:
    """Divide each gradient by ``sqrt(sum of its last n_win squares + epsilon)``.

    The current gradient's square is written into the window first (slot ``t mod n_win``), so
    the first step divides by ``sqrt(g^2 + epsilon)``, as PyMC's ``adagrad_window`` does.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> t = scale_by_window_rms(n_win=2, epsilon=0.0)
    >>> st = t.init(jnp.zeros(1))
    >>> u, st = t.update(jnp.array([3.0]), st)
    >>> u, st = t.update(jnp.array([4.0]), st)
    >>> round(float(u[0]), 6)                          # 4 / sqrt(9 + 16)
    0.8
    """
    if int(n_win) < 1:
        raise ValueError(f"n_win={n_win!r} must be a positive number of steps")
    if not float(epsilon) >= 0:
        raise ValueError(f"epsilon={epsilon!r} must be >= 0")

    def init(params: Any) -> WindowState:
        squares = jax.tree_util.tree_map(lambda p: jnp.zeros((int(n_win),) + jnp.shape(p), jnp.result_type(p)), params)
        return WindowState(squares, jnp.int32(0))

    def update(grads: Any, state: WindowState, params: Any = None) -> tuple[Any, WindowState]:
        squares = jax.tree_util.tree_map(lambda s, g: s.at[state.index].set(g * g), state.squares, grads)
        updates = jax.tree_util.tree_map(lambda s, g: g / jnp.sqrt(jnp.sum(s, axis=0) + epsilon), squares, grads)
        return updates, WindowState(squares, (state.index + 1) % int(n_win))

    return optax.GradientTransformation(init, update)


def adagrad_window(learning_rate: float = 1e-3, n_win: int = 10, epsilon: float = 0.1) -> optax.GradientTransformation:
    """PyMC's ADVI default optimiser: Adagrad over a running window of ``n_win`` steps.

    ``param -= learning_rate * g / sqrt(sum of the last n_win g^2 + epsilon)``. Defaults are
    PyMC's (``pm.adagrad_window``). ``optimizer="adagrad_window"`` in :func:`variational.fit`
    uses them with the fit's ``learning_rate``; pass this object for another window or epsilon.

    Examples
    --------
    >>> import jax.numpy as jnp, optax
    >>> opt = adagrad_window(0.1, n_win=10, epsilon=0.1)
    >>> u, _ = opt.update(jnp.array([1.0]), opt.init(jnp.zeros(1)))
    >>> round(float(u[0]), 5)                        # -0.1 * 1 / sqrt(1 + 0.1)
    -0.09535
    """
    return optax.chain(scale_by_window_rms(n_win, epsilon), optax.scale(-float(learning_rate)))


OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "sgd": lambda lr: optax.sgd(lr),
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "nesterov_momentum": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "adagrad": lambda lr: optax.adagrad(lr),
    "adagrad_window": lambda lr: adagrad_window(lr),
    "adadelta": lambda lr: optax.adadelta(lr, rho=0.95, eps=1e-6),
    "rmsprop": lambda lr: optax.rmsprop(lr),
    "adam": lambda lr: optax.adam(lr),
    "adamax": lambda lr: optax.adamax(lr),
}


def make_optimizer(optimizer: str | optax.GradientTransformation, learning_rate: float) -> optax.GradientTransformation:
    """Resolve ``optimizer`` into an optax ``GradientTransformation``.

    Parameters
    ----------
    optimizer : str or optax.GradientTransformation
        One of "sgd", "momentum", "nesterov_momentum", "adagrad", "adagrad_window",
        "adadelta", "rmsprop", "adam", "adamax", or an optax object (used as is;
        ``learning_rate`` is then ignored).
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
