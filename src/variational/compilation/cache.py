"""JAX's persistent compilation cache, on for the library's programs in a user cache directory.

See :mod:`variational.compilation` for what is decided and how to change it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import jax

__all__ = ["CompileCache", "compile_cache", "set_compile_cache", "default_cache_dir", "ENV_VAR",
           "caching", "compiling", "jax_settings"]

logger = logging.getLogger("variational")

ENV_VAR = "VARIATIONAL_COMPILE_CACHE"
_OFF_WORDS = {"", "0", "off", "false", "no", "none"}


# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CompileCache:
    """Where compiled programs are kept between Python sessions.

    Attributes
    ----------
    directory : pathlib.Path or None
        The cache directory; ``None`` when programs are not kept.
    source : str
        ``"variational"`` (the default directory, or ``VARIATIONAL_COMPILE_CACHE``),
        ``"set_compile_cache"``, ``"jax"`` (the cache you configured in JAX, used as it is)
        or ``"off"``.
    note : str
        What was decided and why (for example why the directory could not be used).
    """

    directory: Path | None
    source: str
    note: str

    @property
    def enabled(self) -> bool:
        """Whether compiled programs are kept on disk."""
        return self.directory is not None


_lock = threading.RLock()
_current: CompileCache | None = None
_ours: str | None = None   # the directory this module pointed JAX at (not the user's own)


def default_cache_dir() -> Path:
    """The user cache directory of compiled programs, before ``VARIATIONAL_COMPILE_CACHE``.

    Examples
    --------
    >>> default_cache_dir().parts[-2:]
    ('variational', 'jax')
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        base = Path(xdg)
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path.home() / ".cache"
    return base / "variational" / "jax"


def _unwritable(directory: Path) -> str | None:
    """Why ``directory`` cannot hold the cache (None when it can): create it, write a file."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    return None


def _point_jax_at(directory: Path | None) -> None:
    from jax.experimental.compilation_cache import compilation_cache as cc

    global _ours
    _ours = None if directory is None else str(directory)
    jax.config.update("jax_compilation_cache_dir", _ours)
    cc.reset_cache()  # JAX opens its cache once; a new directory needs a fresh start


def _decide() -> CompileCache:
    env = os.environ.get(ENV_VAR)
    if env is not None and env.strip().lower() in _OFF_WORDS:
        return CompileCache(None, "off", f"{ENV_VAR}={env!r} turned the persistent compilation cache off")
    if jax.config.jax_compilation_cache_dir and jax.config.jax_compilation_cache_dir != _ours:
        where = Path(jax.config.jax_compilation_cache_dir)
        return CompileCache(where, "jax", f"JAX's own compilation cache ({where}), configured outside "
                                          f"variational, is used as it is")
    if not jax.config.jax_enable_compilation_cache:
        return CompileCache(None, "off", "JAX's compilation cache is disabled "
                                         "(jax_enable_compilation_cache=False); left off")
    directory = Path(env).expanduser() if env else default_cache_dir()
    why = _unwritable(directory)
    if why is not None:
        return CompileCache(None, "off", f"the compilation cache directory {directory} cannot be "
                                         f"written ({why}); programs are compiled in every session. "
                                         f"Set {ENV_VAR} to a writable directory, or to 'off'")
    _point_jax_at(directory)
    return CompileCache(directory, "variational", f"compiled programs are kept in {directory}")


def compile_cache() -> CompileCache:
    """The persistent compilation cache in use (set up on the first call).

    Returns
    -------
    CompileCache
        ``directory`` (None when off), ``source`` and a ``note`` saying what was decided.

    Examples
    --------
    >>> import variational as vi
    >>> info = vi.compile_cache()
    >>> info.source in ("variational", "set_compile_cache", "jax", "off")
    True
    """
    global _current
    with _lock:
        if _current is None:
            _current = _decide()
            logger.info(_current.note)
        return _current


def set_compile_cache(path: str | os.PathLike | None) -> CompileCache:
    """Keep compiled programs in ``path`` (``None``: keep none) from now on, in this process.

    This overrides ``VARIATIONAL_COMPILE_CACHE`` and the default directory, and also a cache
    directory configured in JAX. Compiled programs already loaded stay in memory.

    Parameters
    ----------
    path : str, path-like or None
        The directory (created when missing), or ``None`` to turn the cache off.

    Returns
    -------
    CompileCache
        The cache now in use.

    Raises
    ------
    OSError
        ``path`` cannot be created or written.

    Examples
    --------
    >>> import tempfile
    >>> import variational as vi
    >>> before = vi.compile_cache()
    >>> vi.set_compile_cache(tempfile.mkdtemp()).enabled
    True
    >>> vi.set_compile_cache(None).enabled
    False
    >>> _ = vi.set_compile_cache(before.directory)   # back as it was
    """
    global _current
    with _lock:
        if path is None:
            _point_jax_at(None)
            _current = CompileCache(None, "off", "turned off with set_compile_cache(None)")
            return _current
        directory = Path(path).expanduser()
        why = _unwritable(directory)
        if why is not None:
            raise OSError(f"set_compile_cache({str(path)!r}): the directory cannot be written ({why})")
        _point_jax_at(directory)
        _current = CompileCache(directory, "set_compile_cache", f"compiled programs are kept in {directory}")
        return _current


def _min_compile_time(seconds: float) -> Any:
    """Context: JAX's persistent-cache threshold for programs compiled in this thread."""
    try:
        from jax._src import config as jax_config

        return jax_config.persistent_cache_min_compile_time_secs(seconds)
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - another JAX
        return contextlib.nullcontext()


@contextlib.contextmanager
def caching() -> Iterator[CompileCache]:
    """Context for compiling the library's programs: the persistent cache set up, and used for
    every program whatever its compile time (JAX keeps only programs that took a second or more
    by default; the library's take 0.1-2 s and each one saved counts). A cache you configured
    in JAX is used with your own settings."""
    info = compile_cache()
    if info.source in ("variational", "set_compile_cache"):
        with _min_compile_time(0.0):
            yield info
    else:
        yield info


def compiling(function: Callable) -> Callable:
    """Decorate a function that compiles the library's programs: it runs in :func:`caching`."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        with caching():
            return function(*args, **kwargs)

    return call


def jax_settings() -> tuple:
    """JAX's settings (x64, PRNG implementation, precision, ...), less those that only say where
    files go or what to log (they do not change a program)."""
    skip = ("cache", "log", "explain", "dump", "profil", "traceback")
    values = jax.config.values
    return tuple((k, repr(values[k])) for k in sorted(values) if not any(w in k for w in skip))
