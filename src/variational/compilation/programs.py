"""Keys of compiled programs and the in-process cache of compiled programs.

:func:`compiled` keeps compiled programs in this process, keyed on what determines them, so a
second fit of the same model, shapes and settings compiles nothing. :func:`fingerprint` turns a
traced program (a jaxpr) into such a key.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator

import jax
import numpy as np

from . import store
from .cache import caching, jax_settings
from .counts import hits_in_this_thread, record_load

__all__ = ["compiled", "compile_ahead", "fingerprint", "freeze", "signature", "run_traced",
           "code_key", "clear_programs"]

_lock = threading.Lock()


# --------------------------------------------------------------------------------------------

class _Identity:
    """A key part that is equal only to itself's object (for values that have no ``==``)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Identity) and other.obj is self.obj


def freeze(x: Any) -> Any:
    """A hashable key of ``x``: numbers and strings as they are, arrays by their contents,
    containers element by element, anything else by its own ``==`` or by identity.

    Examples
    --------
    >>> import numpy as np
    >>> freeze({"a": np.arange(3)}) == freeze({"a": np.arange(3)})
    True
    >>> freeze({"a": np.arange(3)}) == freeze({"a": np.arange(1, 4)})
    False
    """
    if x is None or isinstance(x, (bool, int, float, complex, str, bytes)):
        return (type(x).__name__, x)
    if isinstance(x, (np.ndarray, np.generic, jax.Array)):
        a = np.asarray(x)
        if a.dtype == object:
            return ("id", _Identity(x))
        return ("array", a.shape, str(a.dtype), hashlib.sha1(np.ascontiguousarray(a).view(np.uint8)).hexdigest())
    if isinstance(x, (tuple, list)):
        return (type(x).__name__, tuple(freeze(v) for v in x))
    if isinstance(x, dict):
        return ("dict", tuple(sorted(((str(k), freeze(v)) for k, v in x.items()), key=lambda kv: kv[0])))
    try:
        hash(x)
    except TypeError:
        return ("id", _Identity(x))
    return ("obj", x)


def _is_function(item: Any) -> bool:
    """Python code held by an equation (a callback, a custom derivative rule), not data."""
    if isinstance(item, (type, jax.sharding.Mesh, jax.sharding.AbstractMesh, jax.sharding.Sharding)):
        return False
    return callable(item) or type(item).__name__ == "WrappedFun"


def _functions_in(jaxpr: Any) -> Iterator[Any]:
    """Python functions held in the equations' parameters (custom derivatives, callbacks)."""
    from jax.extend.core import ClosedJaxpr, Jaxpr

    for eqn in jaxpr.eqns:
        for value in eqn.params.values():
            for item in (value if isinstance(value, (tuple, list)) else (value,)):
                if isinstance(item, ClosedJaxpr):
                    yield from _functions_in(item.jaxpr)
                elif isinstance(item, Jaxpr):
                    yield from _functions_in(item)
                elif _is_function(item):
                    yield freeze(item)


def fingerprint(closed_jaxpr: Any) -> tuple:
    """A key that is equal for two traced programs only when they compute the same thing.

    The jaxpr's text (equations, shapes, literal values, nested jaxprs), its constants by
    value and the Python functions named in its equations (custom derivative rules,
    callbacks) by identity.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> f = lambda x: jnp.sin(x) * 2.0
    >>> fingerprint(jax.make_jaxpr(f)(1.0)) == fingerprint(jax.make_jaxpr(f)(3.0))
    True
    >>> fingerprint(jax.make_jaxpr(f)(1.0)) == fingerprint(jax.make_jaxpr(jnp.cos)(1.0))
    False
    """
    text = str(closed_jaxpr.jaxpr)
    return (hashlib.sha256(text.encode()).hexdigest(),
            tuple(freeze(c) for c in closed_jaxpr.consts),
            tuple(_functions_in(closed_jaxpr.jaxpr)))


def code_key(fn: Any) -> tuple:
    """A key of a library function made by a factory (a closure): where its code is, the simple
    values it closes over (numbers, strings, arrays) and its attributes' names. Two closures
    from the same factory with the same settings are equal; a function swapped in is not."""
    cells = []
    for cell in getattr(fn, "__closure__", None) or ():
        value = cell.cell_contents
        cells.append(freeze(value) if isinstance(value, (bool, int, float, str, np.ndarray)) else "code")
    return (getattr(fn, "__module__", None), getattr(fn, "__qualname__", type(fn).__qualname__),
            tuple(cells), tuple(sorted(k for k in getattr(fn, "__dict__", {}))))


def run_traced(kind: str, fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` compiled, keyed by its own trace: the program is traced each time (cheap for
    a function without a model, or where the trace is needed anyway) and neither lowered nor
    compiled again when the same program was compiled before, in this process or on disk."""
    from jax.extend.core import jaxpr_as_fun

    closed, out = jax.make_jaxpr(fn, return_shape=True)(*args)
    leaves, tree = jax.tree_util.tree_leaves(args), jax.tree_util.tree_structure(out)
    key = (kind, fingerprint(closed), str(tree), signature(args))
    program = compiled(key, lambda: jax.jit(jaxpr_as_fun(closed)).lower(*leaves))
    return jax.tree_util.tree_unflatten(tree, program(*leaves))


def signature(tree: Any) -> tuple:
    """The structure, shapes and dtypes of a pytree of arrays (what a compiled program takes)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((np.shape(a), a.dtype if hasattr(a, "dtype") else jax.numpy.result_type(a),
                           bool(getattr(a, "weak_type", False))) for a in leaves)


_MAX_PROGRAMS = 128
_programs: "OrderedDict[Any, Any]" = OrderedDict()
_pool: ThreadPoolExecutor | None = None


class _Pending:
    """A program being compiled on the background thread."""

    def __init__(self, future: Future) -> None:
        self.future = future


def compiled(key: Any, lower: Callable[[], Any]) -> Any:
    """The compiled program for ``key``: from this process, from the disk, or ``lower().compile()``.

    ``key`` must determine the program: everything its trace depends on, and the signature
    (:func:`signature`) of its arguments. A key written the same way in every session (see
    :func:`variational.compilation.store.stable`) finds the program on disk without tracing
    it. ``None`` compiles without keeping the result. The most recently used programs are kept
    in memory (at most 128). A program :func:`compile_ahead` started is waited for.
    """
    if key is not None:
        key = (key, jax_settings())   # a setting such as the PRNG implementation changes programs
        with _lock:
            found = _programs.get(key)
            if found is not None:
                _programs.move_to_end(key)
        if isinstance(found, _Pending):
            try:
                program, fresh = found.future.result()
            except Exception:
                with _lock:
                    _programs.pop(key, None)
                raise
            return _keep(key, program, fresh)
        if found is not None:
            return found
        program = store.load(key)
        if program is not None:
            record_load()
            return _keep(key, program, fresh=False)
    lowered = lower()
    program, fresh = _compile(lowered, store.usable(key) and _serializable(lowered))
    return program if key is None else _keep(key, program, fresh)


def compile_ahead(key: Any, lower: Callable[[], Any]) -> bool:
    """Start compiling the program for ``key`` on a background thread; :func:`compiled` waits for it.

    The program is traced and lowered here (tracing a model is not thread-safe); only XLA's
    compilation, which holds no Python lock, runs on the other thread, so it overlaps what this
    thread does next (running the steps of a fit, on another core). Nothing is done for a
    program that is in memory or on disk already. Returns whether a compilation was started.
    """
    global _pool
    full = (key, jax_settings())
    with _lock:
        if full in _programs:
            return False
    if store.exists(full):
        return False
    lowered = lower()
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="variational-compile")
        _programs[full] = _Pending(_pool.submit(_compile, lowered, store.usable(full) and _serializable(lowered)))
    return True


def _serializable(lowered: Any) -> bool:
    """Whether JAX can serialise the compiled program (no hoisted constants, no host callbacks)."""
    lowering = getattr(lowered, "_lowering", None)
    if lowering is None:
        return False
    host = (getattr(lowering, "compile_args", None) or {}).get("host_callbacks")
    return not getattr(lowering, "const_args", None) and not host


def _compile(lowered: Any, for_store: bool) -> tuple[Any, bool]:
    """Compile; returns the program and whether XLA made it here (not loaded from JAX's cache).

    A program the library's store will keep is compiled without writing it to JAX's cache too:
    an executable loaded from a cache cannot be serialised again (jaxlib writes an incomplete
    copy), so the store must get one that XLA has just made.
    """
    hits = hits_in_this_thread()
    with caching(write=not for_store):
        program = lowered.compile()
    return program, hits_in_this_thread() == hits


def _keep(key: Any, program: Any, fresh: bool) -> Any:
    with _lock:
        _programs[key] = program
        while len(_programs) > _MAX_PROGRAMS:
            _programs.popitem(last=False)
    if fresh:
        store.save(key, program)
    return program


def clear_programs() -> None:
    """Forget the compiled programs kept in this process (the persistent cache stays)."""
    with _lock:
        _programs.clear()
