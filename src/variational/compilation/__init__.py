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

**One compilation per program.** :func:`program` traces a function and keeps its compiled
program in this process under the trace's :func:`fingerprint` (the jaxpr's text, its constants
by value, the Python functions it calls by identity, the shardings it names) and the
structure, shapes, dtypes and shardings of its arguments: everything that decides what the
program does decides how it is found. A second fit of the same model, shapes and settings
compiles nothing, and no program runs for a fit it was not made for. Nothing is keyed by hand.

**Counts.** :func:`stats` reports the XLA compilations of this process (programs loaded from
JAX's persistent cache are not compilations) and the seconds spent in them, from JAX's
``jax.monitoring`` events.

Modules: :mod:`.cache` (the persistent cache), :mod:`.counts` (compilations and seconds),
:mod:`.programs` (programs found by their trace, kept in this process), :mod:`.constants` (a
model's numbers as its programs' argument), :mod:`.host` (keys and flat vectors made without
an XLA operation).
May import: jax, numpy. It is the bottom of the library, next to :mod:`variational.errors`.
"""

from .cache import ENV_VAR, CompileCache, caching, compile_cache, compiling, default_cache_dir, set_compile_cache
from .counts import CompileStats, measured, stats
from .host import key_of, ravel
from .programs import (
    Handle, Program, clear_programs, code_key, compile_ahead, fingerprint, freeze, handle, program, run_traced,
    signature, strong_types,
)

__all__ = ["CompileCache", "compile_cache", "set_compile_cache", "default_cache_dir", "ENV_VAR",
           "caching", "compiling", "CompileStats", "stats", "measured", "Program", "program", "compile_ahead",
           "Handle", "handle",
           "fingerprint",
           "freeze", "signature", "strong_types", "run_traced", "code_key", "clear_programs", "key_of", "ravel"]
