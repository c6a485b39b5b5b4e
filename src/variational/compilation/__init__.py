"""Compiled programs: the persistent compilation cache, one compilation per program, counts.

**The persistent cache.** JAX can keep compiled programs on disk, so that a new Python session
loads them instead of compiling again. ``variational`` turns that cache on for the programs it
compiles, in a user cache directory (``$XDG_CACHE_HOME/variational/jax``, by default
``~/.cache/variational/jax``; ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows),
the first time it compiles something. It never touches a cache you configured yourself
(``jax_compilation_cache_dir`` or ``JAX_COMPILATION_CACHE_DIR``), nor one you turned off
(``jax_enable_compilation_cache=False``). ``VARIATIONAL_COMPILE_CACHE`` chooses the directory
(``=off`` turns it off) and :func:`set_compile_cache` does the same from Python. A directory
that cannot be written is left alone: programs are then compiled in each session, and
:func:`compile_cache` says why.

**One compilation per program.** :func:`compiled` keeps compiled programs in this process,
keyed on what determines them (the caller's key, such as a fingerprint of the model's log
density, the family and its options, the optimiser; and the shapes and dtypes of the
arguments), so a second fit of the same model, shapes and settings compiles nothing.
:func:`fingerprint` turns a traced program (a jaxpr) into such a key: its text, its constants
by value and the Python functions it calls by identity; two programs with the same
fingerprint compute the same thing.

**Counts.** :func:`stats` reports the XLA compilations of this process (programs loaded from
the persistent cache are not compilations) and the seconds spent in them, from JAX's
``jax.monitoring`` events.

Modules: :mod:`.cache` (the persistent cache), :mod:`.counts` (compilations and seconds),
:mod:`.programs` (keys and the in-process cache of compiled programs).
May import: jax, numpy. It is the bottom of the library, next to :mod:`variational.errors`.
"""

from .cache import ENV_VAR, CompileCache, caching, compile_cache, compiling, default_cache_dir, set_compile_cache
from .counts import CompileStats, measured, stats
from .programs import (
    clear_programs, code_key, compile_ahead, compiled, fingerprint, freeze, signature, run_traced,
)

__all__ = ["CompileCache", "compile_cache", "set_compile_cache", "default_cache_dir", "ENV_VAR",
           "caching", "compiling", "CompileStats", "stats", "measured", "compiled", "compile_ahead", "fingerprint",
           "freeze", "signature", "run_traced", "code_key", "clear_programs"]
