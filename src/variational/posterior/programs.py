"""The compiled programs behind a fit's answers: draws, constrained values, importance weights.

Each is one compiled call, found by its own trace (see :mod:`variational.compilation`) and so
shared by every fit whose program traces alike, so ``sample``, ``mean``/``std``, ``summary``
and ``diagnose`` compile once per process (and, with the persistent cache, once per machine).

- :func:`importance_weights`: ``n`` draws of q with ``log p(x, z) - log q(z)`` on given rows;
- :func:`prepare`: these, the draws of q and their constrained values
  (:meth:`.approximation.Approximation.draw` and ``constrain``), compiled during a fit's steps.
"""

from __future__ import annotations

import os

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..compilation import compile_ahead, run_traced
from ..model.handlers import declared_only
from .approximation import Approximation

__all__ = ["importance_weights", "prepare", "ahead_enabled"]

#: elements of one (draws x rows) block of the log joint: 16M floats (64 MB) at a time
_BLOCK = 1 << 24


def _log_joint_many(ld: Any, zs: jax.Array, batch: Mapping[str, Any]) -> jax.Array:
    """``log p(x, z)`` of each draw on all rows of ``batch``, in blocks that fit in memory."""
    leaves = jax.tree_util.tree_leaves(batch)
    rows = max([int(np.shape(a)[0]) for a in leaves if np.ndim(a)] or [1])
    per = max(1, _BLOCK // rows)
    one = lambda z: ld.log_joint(z, batch, declared_only)  # noqa: E731  (total_size= kept)
    if per >= zs.shape[0]:
        return jax.vmap(one)(zs)
    return jax.lax.map(one, zs, batch_size=per)


def _weights_program(ld: Any, family: Any, params: Any, batch: Mapping[str, Any], key: jax.Array,
                     n: int) -> tuple[Any, ...]:
    batch = {k: jnp.asarray(v) for k, v in batch.items()}

    def fn(p: Any, k: jax.Array, b: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
        z, log_q = family.sample_and_log_q(p, jax.random.fold_in(k, 3), n)
        return z, _log_joint_many(ld, z, b), log_q

    return "importance weights", fn, params, key, batch


def importance_weights(ld: Any, family: Any, params: Any, batch: Mapping[str, Any], key: jax.Array,
                       n: int, fam_key: Any = None) -> tuple[jax.Array, np.ndarray]:
    """``n`` draws of q (from ``fold_in(key, 3)``) and their raw log weights ``log p - log q``
    (the difference taken in float64).

    ``log p`` is the model's log joint on all rows of ``batch``, without minibatch scaling.
    """
    z, log_p, log_q = run_traced(*_weights_program(ld, family, params, batch, key, n))
    return z, np.asarray(log_p, dtype=np.float64) - np.asarray(log_q, dtype=np.float64)


def ahead_enabled() -> bool:
    """Whether long fits compile their answers' programs in the background (the default; set the
    environment variable ``VARIATIONAL_COMPILE_AHEAD=0`` to turn it off, e.g. on one core)."""
    return os.environ.get("VARIATIONAL_COMPILE_AHEAD", "1").strip().lower() not in ("0", "off", "false", "no")


def prepare(q: Approximation) -> int:
    """Start compiling, on a background thread, what ``fit.diagnose()`` and ``fit.mean`` /
    ``fit.std`` / ``fit.sample(4000)`` will run (4000 draws each) for the approximation ``q``
    of a fit about to run, so that it overlaps the optimisation steps; returns the number of
    programs started. Programs in memory or on disk already, and those of fits whose data is
    streamed, are left alone."""
    if q.streamed:
        return 0
    started = 0
    ld = q.raw_logdensity
    if q.has_density:   # (an empirical family's summaries use its particles)
        started += compile_ahead(*q.draws_program(4000, q.key))
        started += compile_ahead(*q.constrain_program(jax.ShapeDtypeStruct((4000, ld.dim), ld.dtype)))
    # a family with a density q; a model with parameters is diagnosed at their fitted values
    if q.family.make_loss_and_grad is None and not ld.params:
        started += compile_ahead(*_weights_program(q.logdensity, q.family, q.params, dict(q.data), q.key, 4000))
    return int(started)
