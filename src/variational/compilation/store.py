"""Compiled programs on disk, found by their key: a new session loads them without tracing.

JAX's persistent cache finds a compiled program from the program itself, so a new session must
still trace and lower every program to look it up (about as long as the steps of a fit on a
small model). This store finds it from the key :func:`~variational.compilation.compiled` is
given instead (the model's traced log density, the family and its options, the optimiser, the
shapes of the arguments), written out in a form that means the same thing in every session, and
from the environment that made it (versions of JAX, jaxlib, NumPyro, optax and Python; the
library's own source; the platform, its devices and the processor's features; XLA flags).
Keys that hold something only this process can name (a function defined in a user's module, a
``Family`` object, an optax object) are not stored, nor are programs JAX cannot serialise
(closed-over constants, host callbacks); those are found through JAX's cache.

Files are written atomically in ``<cache directory>/programs``; one that cannot be read is
removed and its program compiled again.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import platform
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .cache import compile_cache, jax_settings

__all__ = ["load", "save", "exists", "usable", "stable"]

_STABLE_MODULES = ("variational", "jax", "jaxlib", "numpyro", "optax", "numpy")
_environment: str | None = None


def _source_hash() -> str:
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _cpu_features() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def _env() -> str:
    global _environment
    if _environment is None:
        import jaxlib
        import numpyro
        import optax

        devices = jax.devices()
        _environment = repr((1, jax.__version__, jaxlib.__version__, numpyro.__version__, optax.__version__,
                             np.__version__, sys.version, _source_hash(), platform.machine(), _cpu_features(),
                             devices[0].platform, devices[0].client.platform_version,
                             tuple(d.device_kind for d in devices), os.environ.get("XLA_FLAGS", "")))
    return _environment + repr(jax_settings())   # settings can change during a session


def _library_dirs() -> tuple[str, ...]:
    import numpyro
    import optax

    return tuple(os.path.dirname(m.__file__) + os.sep for m in (jax, numpyro, optax))


def _named(x: Any) -> str | None:
    """A module-level function or class of a library whose version is part of the environment,
    or JAX's wrapper of a custom derivative rule written in JAX's, NumPyro's or optax's code."""
    if type(x).__name__ == "WrappedFun":
        where = getattr(getattr(x, "debug_info", None), "func_src_info", None) or ""
        path = where.rsplit(" at ", 1)[-1]
        return f"rule:{where}" if path.startswith(_library_dirs()) else None
    module, qualname = getattr(x, "__module__", None) or "", getattr(x, "__qualname__", "")
    if module.split(".")[0] in _STABLE_MODULES and "<" not in qualname:
        return f"{module}.{qualname}"
    return None


def _is_extended_dtype(x: Any) -> bool:
    try:
        return bool(jax.dtypes.issubdtype(x, jax.dtypes.extended))
    except TypeError:
        return False


def stable(key: Any) -> str | None:
    """``key`` written out the same way in every session; ``None`` when part of it is only this
    process's (an object known by its identity, a function of a user's module).

    Examples
    --------
    >>> import numpy as np
    >>> stable(("chunk", 3, np.dtype("float32"), 0.5))
    "('chunk',3,dtype:float32,0.5)"
    >>> stable(("model", lambda x: x)) is None
    True
    """
    if key is None or isinstance(key, (bool, int, float, str, bytes)):
        return repr(key)
    if isinstance(key, (tuple, list)):
        parts = [stable(k) for k in key]
        return None if any(p is None for p in parts) else "(" + ",".join(parts) + ")"
    if isinstance(key, jax.tree_util.PyTreeDef):
        return f"tree:{key}"
    if isinstance(key, np.dtype) or _is_extended_dtype(key):
        return f"dtype:{key}"
    if isinstance(key, (types.FunctionType, type)) or type(key).__name__ == "WrappedFun":
        name = _named(key)
        return None if name is None else f"fn:{name}"
    return None


def _path(text: str) -> Path | None:
    info = compile_cache()
    if info.directory is None or info.source not in ("variational", "set_compile_cache"):
        return None
    digest = hashlib.sha256((_env() + "\n" + text).encode()).hexdigest()
    return info.directory / "programs" / f"{digest}.xla"


def usable(key: Any) -> bool:
    """Whether the store can keep the program of ``key`` (it is on, and the key is stable)."""
    return key is not None and stable(key) is not None and _path("") is not None


def _default_device() -> Any:
    device = jax.config.jax_default_device
    if isinstance(device, str):
        return jax.local_devices(backend=device)[0]
    return device if device is not None else jax.local_devices()[0]


def exists(key: Any) -> bool:
    """Whether a program is stored for ``key``."""
    text = stable(key)
    path = None if text is None else _path(text)
    return path is not None and path.exists()


def load(key: Any) -> Any:
    """The compiled program stored for ``key``, or None."""
    text = stable(key)
    path = None if text is None else _path(text)
    if path is None or not path.exists():
        return None
    from jax.experimental.serialize_executable import deserialize_and_load

    try:
        payload, in_tree, out_tree = pickle.loads(path.read_bytes())
        # stored programs run on one device (placed fits are not stored): the default one
        return deserialize_and_load(payload, in_tree, out_tree, execution_devices=[_default_device()])
    except Exception:  # a torn or stale file: compile again (and write it anew)
        try:
            path.unlink()
        except OSError:
            pass
        return None


def save(key: Any, program: Any) -> bool:
    """Store ``program`` under ``key`` when both can be; returns whether it was stored."""
    text = stable(key)
    path = None if text is None else _path(text)
    if path is None:
        return False
    from jax.experimental.serialize_executable import serialize

    try:
        blob = pickle.dumps(serialize(program), protocol=pickle.HIGHEST_PROTOCOL)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    except Exception:  # not serialisable (constants, callbacks) or not writable: JAX's cache only
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)   # atomic: a reader sees the whole file or none
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
    return True
