"""Threads and processes: one model traced at a time, and no fit in a forked copy of JAX.

NumPyro's effect handlers live on one module-global stack (``numpyro.primitives._PYRO_STACK``):
two threads that run a model's Python code at the same time see each other's handlers, and
each gets the other's sites. So every library call that may run a model's Python code (to
trace it, compile it, or run it eagerly) holds :data:`MODEL_LOCK`, a per-thread re-entrant
lock. Compiled code does not touch the stack: the engine releases the lock while its compiled
chunks run (:meth:`ModelLock.released`), so the optimisation loops of fits in several
threads run side by side, and only tracing and the host work between chunks take turns.

JAX's runtime (its thread pools and device client) does not survive ``fork``: a child forked
after JAX started hangs in its first computation. :func:`check_not_forked` turns that hang into
an error that says what to do (start workers with ``"spawn"`` or ``"forkserver"``).

Imports: the standard library and :mod:`variational.errors`.
"""

from __future__ import annotations

import functools
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from ..errors import VariationalError

__all__ = ["MODEL_LOCK", "ModelLock", "exclusive", "exclusive_methods", "check_not_forked", "ForkError"]

F = TypeVar("F", bound=Callable[..., Any])


class ForkError(VariationalError):
    """This process was forked from one in which JAX had already started."""


_FORKED_AFTER_JAX = False


def _jax_started() -> bool:
    """Whether JAX has created its backends (its runtime threads) in this process."""
    try:
        from jax._src import xla_bridge

        return bool(getattr(xla_bridge, "_backends", True))
    except Exception:  # a JAX without that attribute: assume started (the library uses it)
        return True


def _mark_child() -> None:
    global _FORKED_AFTER_JAX
    if _PARENT_HAD_JAX[0]:
        _FORKED_AFTER_JAX = True
    MODEL_LOCK._reset_after_fork()


_PARENT_HAD_JAX = [False]


def _before_fork() -> None:
    _PARENT_HAD_JAX[0] = _FORKED_AFTER_JAX or _jax_started()


def check_not_forked() -> None:
    """Raise :class:`ForkError` in a process forked after JAX had started (it would hang).

    Examples
    --------
    >>> check_not_forked()   # this process was not forked from a JAX process
    """
    if _FORKED_AFTER_JAX:
        raise ForkError(
            f"this process (pid {os.getpid()}) was forked from one in which JAX had already "
            f"started; JAX's runtime does not survive fork and a fit here would hang. Start "
            f"worker processes with multiprocessing.get_context('spawn') (or 'forkserver'), or "
            f"import JAX only inside the workers")


class ModelLock:
    """A re-entrant lock that its holder can let go of for a while (around compiled code).

    Ownership lives in the lock itself (a :class:`threading.RLock`, released and restored
    whole, as :class:`threading.Condition` does), so Ctrl-C arriving anywhere leaves it either
    held by this thread or free, never held with no owner to release it.

    Examples
    --------
    >>> lock = ModelLock()
    >>> with lock:
    ...     with lock.released():
    ...         pass
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def __enter__(self) -> "ModelLock":
        check_not_forked()
        self._lock.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._lock._is_owned():  # type: ignore[attr-defined]
            self._lock.release()

    @contextmanager
    def released(self) -> Iterator[None]:
        """Let other threads trace while this block runs (it must not run Python model code)."""
        if not self._lock._is_owned():  # type: ignore[attr-defined]
            yield
            return
        state = self._lock._release_save()  # type: ignore[attr-defined]
        try:
            yield
        finally:
            self._lock._acquire_restore(state)  # type: ignore[attr-defined]

    def _reset_after_fork(self) -> None:
        # a thread of the parent may have held the lock at the fork; the child has only the
        # forking thread, which errors out before using it anyway
        self._lock = threading.RLock()


MODEL_LOCK = ModelLock()


def exclusive(fn: F) -> F:
    """Decorator: run ``fn`` holding :data:`MODEL_LOCK` (see the module documentation)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with MODEL_LOCK:
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def exclusive_methods(*names: str) -> Callable[[type], type]:
    """Class decorator: the methods ``names`` of the class (or of its bases) run holding
    :data:`MODEL_LOCK`, as with :func:`exclusive` on each.

    Examples
    --------
    >>> @exclusive_methods("draw")
    ... class Box:
    ...     def draw(self):
    ...         return MODEL_LOCK._lock._is_owned()
    >>> Box().draw()
    True
    """

    def wrap(cls: type) -> type:
        for name in names:
            setattr(cls, name, exclusive(getattr(cls, name)))
        return cls

    return wrap


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_mark_child)
