"""XLA compilations and the seconds spent tracing, lowering and compiling, from ``jax.monitoring``."""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import jax

from .cache import caching

__all__ = ["CompileStats", "stats", "measured"]

_lock = threading.Lock()


# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CompileStats:
    """XLA compilations of this process so far (see :func:`stats`)."""

    compilations: int        # programs compiled by XLA
    cache_hits: int          # programs loaded from JAX's persistent cache instead
    compile_s: float         # seconds in XLA compilation (cache loads included)
    trace_s: float           # seconds tracing Python functions into jaxprs
    lower_s: float           # seconds lowering jaxprs to XLA programs

    def __sub__(self, other: "CompileStats") -> "CompileStats":
        return CompileStats(self.compilations - other.compilations, self.cache_hits - other.cache_hits,
                            self.compile_s - other.compile_s, self.trace_s - other.trace_s,
                            self.lower_s - other.lower_s)


_counts = {"backend": 0, "hits": 0, "compile_s": 0.0, "trace_s": 0.0, "lower_s": 0.0}
_listening = False
_EVENTS = {"/jax/core/compile/backend_compile_duration": "compile_s",
           "/jax/core/compile/jaxpr_trace_duration": "trace_s",
           "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s"}


def _on_duration(event: str, duration: float, **kwargs: Any) -> None:
    field = _EVENTS.get(event)
    if field is not None:
        with _lock:   # programs also compile on the background thread
            _counts[field] += duration
            if field == "compile_s":
                _counts["backend"] += 1


def _on_event(event: str, **kwargs: Any) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        with _lock:
            _counts["hits"] += 1


def _listen() -> None:
    global _listening
    with _lock:
        if not _listening:
            jax.monitoring.register_event_duration_secs_listener(_on_duration)
            jax.monitoring.register_event_listener(_on_event)
            _listening = True


def stats() -> CompileStats:
    """XLA compilations and seconds spent compiling in this process since the library was imported.

    Examples
    --------
    >>> import variational as vi
    >>> from variational.compilation import stats
    >>> before = stats()
    >>> def model():
    ...     vi.Normal("height", 170.0, 10.0)
    >>> _ = vi.fit(model, steps=10, learning_rate=0.05, progress=False)
    >>> _ = vi.fit(model, steps=10, learning_rate=0.05, progress=False, seed=1)   # the same program again
    >>> after = stats()
    >>> (after - before).compilations >= 1
    True
    """
    _listen()
    c = _counts
    return CompileStats(c["backend"] - c["hits"], c["hits"], c["compile_s"], c["trace_s"], c["lower_s"])


_listen()

_outer = threading.local()


def measured(name: str) -> Callable:
    """Decorate a method of an object with a ``timings`` dict: its seconds are added to
    ``timings[name + "_s"]`` and the XLA compilations it caused to ``timings["compilations"]``
    (the outermost measured call only, so nothing counts twice); it runs in :func:`caching`."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(_outer, "busy", False):
                return method(self, *args, **kwargs)
            _outer.busy = True
            t0, s0 = time.perf_counter(), stats()
            try:
                with caching():
                    return method(self, *args, **kwargs)
            finally:
                _outer.busy = False
                timings = getattr(self, "timings", None)
                if isinstance(timings, dict):
                    timings[f"{name}_s"] = timings.get(f"{name}_s", 0.0) + time.perf_counter() - t0
                    timings["compilations"] = timings.get("compilations", 0) + (stats() - s0).compilations

        return call

    return decorate


