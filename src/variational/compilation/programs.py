"""Compiled programs found by their own trace, and kept in this process.

:func:`program` traces a function and keeps its compiled program under the trace's
:func:`fingerprint` and its arguments' :func:`signature`, so a second fit of the same model,
shapes and settings compiles nothing, and a program never runs for arguments or a trace it was
not made for. Between sessions, JAX's persistent compilation cache finds programs by what they
are (the lowered program, the compiler's options, the devices).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator

import jax
import numpy as np

from .cache import caching, jax_settings
from .constants import lifting

__all__ = ["Program", "program", "compile_ahead", "fingerprint", "freeze", "signature", "strong_types", "run_traced",
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
    """Python code held by an equation (a callback), not data."""
    if isinstance(item, (type, jax.sharding.Mesh, jax.sharding.AbstractMesh, jax.sharding.Sharding)):
        return False
    return callable(item) or type(item).__name__ == "WrappedFun"


# A custom derivative's call is compiled from its ``call_jaxpr`` alone: its rules (made afresh
# at every trace) were applied while tracing, so what they did is in the equations already.
_CUSTOM_CALLS = {"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"}


def _params_in(jaxpr: Any) -> Iterator[Any]:
    """The values in the equations' parameters that decide the compiled program, nested
    jaxprs' equations included (a custom derivative's rules left out)."""
    from jax.extend.core import ClosedJaxpr, Jaxpr

    for eqn in jaxpr.eqns:
        params = eqn.params
        if eqn.primitive.name in _CUSTOM_CALLS:
            params = {k: v for k, v in params.items() if k in ("call_jaxpr", "fun_jaxpr")}
        for value in params.values():
            for item in (value if isinstance(value, (tuple, list)) else (value,)):
                if isinstance(item, ClosedJaxpr):
                    yield from _params_in(item.jaxpr)
                elif isinstance(item, Jaxpr):
                    yield from _params_in(item)
                else:
                    yield item


def _functions_in(jaxpr: Any) -> Iterator[Any]:
    """Python functions held in the equations' parameters (custom derivatives, callbacks)."""
    return (freeze(item) for item in _params_in(jaxpr) if _is_function(item))


def fingerprint(closed_jaxpr: Any) -> tuple:
    """A key that is equal for two traced programs only when they compute the same thing.

    The jaxpr's text (equations, shapes, literal values, nested jaxprs), its constants by
    value and the Python functions named in its equations (callbacks) by identity. A custom
    derivative's rules are left out: the program runs its ``call_jaxpr``, and where the rule
    was used (a gradient) its equations are in the text.

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


def _shardings_in(jaxpr: Any) -> Iterator[Any]:
    """Shardings and meshes named in the equations' parameters (a sharding constraint's mesh
    prints by its shape, not by its devices)."""
    kinds = (jax.sharding.Mesh, jax.sharding.Sharding)
    return (item for item in _params_in(jaxpr) if isinstance(item, kinds))


class Program:
    """A compiled program, called like the function it was traced from (JAX checks that the
    arguments' structure, shapes and dtypes are the ones it was compiled for)."""

    __slots__ = ("compiled",)

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled

    def __call__(self, *args: Any) -> Any:
        return self.compiled(*args)


class _Lifted:
    """A program traced with a model's numbers as its first argument, called with this fit's."""

    __slots__ = ("program", "numbers")

    def __init__(self, found: Program, numbers: tuple) -> None:
        self.program, self.numbers = found, numbers

    def __call__(self, *args: Any) -> Any:
        return self.program(self.numbers, *args)


def _traced(kind: str, fn: Callable, args: tuple, lift: Any = None) -> tuple[Any, Callable[[], Any], tuple | None]:
    """``fn`` traced on ``args``: the key of its program, its lowering (of this very trace) and
    the numbers it takes first (None: it takes ``args`` only).

    With ``lift`` (a model's recorded numbers ``(expected, values)``, see :mod:`.constants`),
    the program takes ``values`` as its first argument; a model whose trace fails so is traced
    with its numbers as they are."""
    if lift is not None and lift[1]:
        expected, numbers = lift

        def lifted(values: tuple, *a: Any) -> Any:
            with lifting(expected, values):
                return fn(*a)
        lifted.__name__ = lifted.__qualname__ = getattr(fn, "__name__", "fn")   # (the compile log's name)
        try:
            return (*_traced(kind, lifted, (numbers, *args))[:2], numbers)
        except Exception:   # (the model's own error is raised by the trace below)
            pass
    traced = jax.jit(fn).trace(*args)
    closed = traced.jaxpr
    key = (kind, fingerprint(closed), tuple(_shardings_in(closed.jaxpr)),
           str(jax.tree_util.tree_structure(traced.out_info)), signature(args), jax_settings())
    return key, traced.lower, None


def _bound(found: Program, numbers: tuple | None) -> Any:
    return found if numbers is None else _Lifted(found, numbers)


def program(kind: str, fn: Callable, *args: Any, lift: Any = None) -> Program:
    """``fn`` compiled for arguments like ``args``, found by its own trace.

    The program is traced each time (which is cheap beside lowering and compiling it) and is
    found by everything that decides what it computes: its jaxpr (equations, shapes, dtypes,
    literal values), its constants by value, the Python functions its equations call, the
    shardings it names, and the structure, shapes, dtypes and shardings of its arguments. Only
    a program traced alike in this process is reused; otherwise it is lowered and compiled
    (through JAX's persistent compilation cache, which finds it by the lowered program itself).
    A program :func:`compile_ahead` started is waited for. ``kind`` names it in the key.
    ``lift``: the numbers of the model ``fn`` runs (``LogDensity.lift``), taken as an argument
    (:mod:`.constants`), so that the program is the same for every value of them.

    Examples
    --------
    >>> import numpy as np
    >>> double = program("double", lambda x: 2 * x, np.ones(3, np.float32))
    >>> double(np.arange(3, dtype=np.float32)).tolist()
    [0.0, 2.0, 4.0]
    >>> program("double", lambda x: 2 * x, np.zeros(3, np.float32)) is double   # the same program
    True
    """
    key, lower, numbers = _traced(kind, fn, args, lift)
    return _bound(_resolve(key, lower), numbers)


def _resolve(key: Any, lower: Callable[[], Any]) -> Program:
    """The program of the trace ``key``: kept in this process, being compiled ahead (waited
    for), or compiled now from ``lower``."""
    with _lock:
        found = _programs.get(key)
        if found is not None:
            _programs.move_to_end(key)
    if isinstance(found, _Pending):
        try:
            found = Program(found.future.result())
        except Exception:
            with _lock:
                _programs.pop(key, None)
            raise
        return _keep(key, found)
    if found is not None:
        return found
    return _keep(key, Program(_compile(lower())))


def run_traced(kind: str, fn: Callable, *args: Any, lift: Any = None) -> Any:
    """``fn(*args)`` compiled: :func:`program` ``(kind, fn, *args, lift=lift)(*args)``."""
    return program(kind, fn, *args, lift=lift)(*args)


def _default_device() -> Any:
    device = jax.config.jax_default_device
    if isinstance(device, str):
        return jax.local_devices(backend=device)[0]
    return device if device is not None else jax.local_devices()[0]


def _placement(leaf: Any) -> Any:
    """Where an argument lives, when that changes the program: None on the default device (or
    for a NumPy array, a number, a shape without a sharding), else its sharding."""
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        return None
    devices = sharding.device_set
    if len(devices) == 1 and next(iter(devices)) == _default_device():
        return None
    return sharding


def signature(tree: Any) -> tuple:
    """The structure, shapes, dtypes and placement of a pytree of arrays (what a compiled
    program takes): arrays on the default device and NumPy arrays alike, a sharded array (or
    one on another device) by its sharding.

    Examples
    --------
    >>> import numpy as np, jax.numpy as jnp
    >>> signature({"a": np.zeros(3, np.float32)}) == signature({"a": jnp.ones(3)})
    True
    >>> signature({"a": np.zeros(3, np.float32)}) == signature({"a": np.zeros(4, np.float32)})
    False
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((np.shape(a), a.dtype if hasattr(a, "dtype") else np.result_type(a),
                           bool(getattr(a, "weak_type", False)), _placement(a)) for a in leaves)


def strong_types(tree: Any) -> Any:
    """``tree`` with its weakly typed leaves (Python numbers made arrays, for example a guide's
    ``numpyro.param("a", 1.0)``) made ordinary arrays of the same dtype and placement.

    A compiled loop returns ordinary arrays, so a state that starts weakly typed would change
    the program's signature after its first call and be compiled again; one with no weak
    leaves is returned as it is (no device work).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> x = strong_types({"a": jnp.asarray(1.0)})["a"]
    >>> x.dtype, bool(getattr(x, "weak_type", False))
    (dtype('float32'), False)
    """
    def strong(a: Any) -> Any:
        if not getattr(a, "weak_type", False):
            return a
        host = np.asarray(a)
        where = _placement(a)
        return host if where is None else jax.device_put(host, where)

    return jax.tree_util.tree_map(strong, tree)


_MAX_PROGRAMS = 128
_programs: "OrderedDict[Any, Any]" = OrderedDict()
_pool: ThreadPoolExecutor | None = None


class _Pending:
    """A program being compiled on the background thread."""

    def __init__(self, future: Future) -> None:
        self.future = future


def compile_ahead(kind: str, fn: Callable, *args: Any, lift: Any = None) -> bool:
    """Start compiling :func:`program` ``(kind, fn, *args)`` on a background thread.

    The program is traced and lowered here (tracing a model is not thread-safe); only XLA's
    compilation, which holds no Python lock, runs on the other thread, so it overlaps what this
    thread does next (running the steps of a fit, on another core); :func:`program` waits for
    it. Nothing is done for a program in memory already. Returns whether a compilation started.
    """
    return _start_ahead(*_traced(kind, fn, args, lift)[:2])


class Handle:
    """A program traced once, for calls with arguments like those it was traced on (see
    :func:`handle`); the first call finds or compiles it (waiting for a compilation started
    ahead)."""

    __slots__ = ("key", "_lower", "_program", "started", "_numbers")

    def __init__(self, key: Any, lower: Callable[[], Any], started: bool = False, numbers: tuple | None = None) -> None:
        self.key, self._lower, self._program, self._numbers = key, lower, None, numbers
        self.started = started   # whether a compilation ahead started for it

    def __call__(self, *args: Any) -> Any:
        if self._program is None:
            self._program = _bound(_resolve(self.key, self._lower), self._numbers)
        return self._program(*args)


def handle(kind: str, fn: Callable, *args: Any, ahead: bool = False, lift: Any = None) -> Handle:
    """``fn`` traced once on ``args`` (as :func:`program` does), its program found or compiled
    at the first call; with ``ahead`` its compilation starts now on the background thread
    (as :func:`compile_ahead`). For a caller that calls the same program several times with
    arguments of the same signature and keeps the handle for exactly those (a diagnosis runs
    its program once per check): tracing a large program again costs about as much as its run.

    Examples
    --------
    >>> import numpy as np
    >>> h = handle("double", lambda x: 2 * x, np.ones(3, np.float32))
    >>> h(np.arange(3, dtype=np.float32)).tolist(), h(np.ones(3, np.float32)).tolist()
    ([0.0, 2.0, 4.0], [2.0, 2.0, 2.0])
    """
    key, lower, numbers = _traced(kind, fn, args, lift)
    return Handle(key, lower, bool(ahead) and _start_ahead(key, lower), numbers)


def _start_ahead(key: Any, lower: Callable[[], Any]) -> bool:
    global _pool
    with _lock:
        if key in _programs:
            return False
    lowered = lower()
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="variational-compile")
        _programs[key] = _Pending(_pool.submit(_compile, lowered))
    return True


def _compile(lowered: Any) -> Any:
    """Compile, through JAX's persistent cache when it is on (see :func:`caching`)."""
    with caching():
        return lowered.compile()


def _keep(key: Any, found: Program) -> Program:
    with _lock:
        _programs[key] = found
        while len(_programs) > _MAX_PROGRAMS:
            _programs.popitem(last=False)
    return found


def clear_programs() -> None:
    """Forget the compiled programs kept in this process (the persistent cache stays)."""
    with _lock:
        _programs.clear()
