"""The compiled programs behind a fit's answers: draws, constrained values, importance weights.

Each is one compiled call, found by its own trace (see :mod:`variational.compilation`) and so
shared by every fit whose program traces alike, so ``sample``, ``mean``/``std``, ``summary``
and ``diagnose`` compile once per process (and, with the persistent cache, once per machine).

- :func:`draws`: ``n`` draws of q in the unconstrained space;
- :func:`importance_weights`: ``n`` draws of q with ``log p(x, z) - log q(z)`` on given rows;
- :func:`prepare`: these and the constrained values of draws
  (:func:`~variational.posterior.discrete.constrain_draws`), compiled during a fit's steps.
"""

from __future__ import annotations

import os

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..compilation import compile_ahead, freeze, run_traced
from ..model.handlers import declared_only
from .discrete import constrain_program

__all__ = ["family_key", "draws", "importance_weights", "prepare"]

#: elements of one (draws x rows) block of the log joint: 16M floats (64 MB) at a time
_BLOCK = 1 << 24


def family_key(fit: Any) -> Any:
    """The key of a fit's family (set by ``fit()`` for named methods; else the object itself)."""
    key = getattr(fit, "_family_key", None)
    return key if key is not None else freeze(fit.family)


def draws(fit: Any, n: int, key: jax.Array) -> jax.Array:
    """``n`` draws of q, unconstrained, shape ``(n, D)``."""
    return run_traced(*_draws_program(fit, n, key))


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


def _draws_program(fit: Any, n: int, key: jax.Array) -> tuple[Any, ...]:
    family = fit.family   # the reported approximation: fit._answer_params
    return "draws", lambda p, k: family.draw(p, k, n), fit._answer_params, key


def ahead_enabled() -> bool:
    """Whether long fits compile their answers' programs in the background (the default; set the
    environment variable ``VARIATIONAL_COMPILE_AHEAD=0`` to turn it off, e.g. on one core)."""
    return os.environ.get("VARIATIONAL_COMPILE_AHEAD", "1").strip().lower() not in ("0", "off", "false", "no")


def prepare(fit: Any) -> int:
    """Start compiling, on a background thread, what ``fit.diagnose()`` and ``fit.mean`` /
    ``fit.std`` / ``fit.sample(4000)`` will run (4000 draws each), so that it overlaps the
    optimisation steps; returns the number of programs started. Programs in memory or on
    disk already, and those of fits whose data is streamed, are left alone."""
    plan = getattr(fit, "_plan", None)
    if plan is not None and getattr(plan, "feeder", None) is not None:
        return 0
    started = 0
    if fit.family.particles is None:   # (an empirical family's summaries use its particles)
        started += compile_ahead(*_draws_program(fit, 4000, fit.key))
        z = jax.ShapeDtypeStruct((4000, fit._logdensity.dim), fit._logdensity.dtype)
        started += compile_ahead(*constrain_program(fit, z))
    # a family with a density q; a model with parameters is diagnosed at their fitted values
    if fit.family.make_loss_and_grad is None and not fit._logdensity.params:
        started += compile_ahead(*_weights_program(fit.logdensity, fit.family, fit.state.params,
                                                   dict(fit.data), fit.key, 4000))
    return int(started)
