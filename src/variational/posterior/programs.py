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

from ..compilation import compile_ahead, handle, run_traced, signature

from ..model.handlers import declared_only
from .approximation import Approximation
from .hierarchy import candidate_sites, scales_and_jacobian
from .verdict import CURVATURE_DRAWS, CURVATURE_MAX_DIM

__all__ = ["importance_weights", "verdict_programs", "wants_curvature", "prepare", "ahead_enabled"]

#: the search for centred hierarchies differentiates each scale
CENTRED_MAX_DIM = 20_000
#: the branches of the importance-weights program (see :func:`_weights_program`)
WEIGHTS, CENTRED, CURVATURE = 0, 1, 2

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


def _hessian(ld: Any) -> Any:
    """``(zs (k, D), data) -> (D, D)``: the mean Hessian of the log joint on ``data`` (no
    minibatch scaling) over the ``k`` points (traceable)."""

    hess = jax.hessian(ld.log_joint)   # (the model as it states itself: no minibatch scaling)
    # one draw at a time: a Hessian batched over draws of a model with a Cholesky factor
    # deadlocks jaxlib's CPU runtime (see families._newton.over_draws); k is a handful
    return lambda zs, data: jnp.mean(jax.lax.map(lambda z: hess(z, data), zs), 0)


def wants_curvature(ld: Any, family: Any) -> bool:
    """Whether the verdict may check q's sds against the curvature of the log joint: a Gaussian
    variational family of a model of at most ``CURVATURE_MAX_DIM`` coordinates."""
    return bool(family.gaussian and family.solve is None and ld.dim <= CURVATURE_MAX_DIM)


def _weights_program(ld: Any, family: Any, params: Any, batch: Mapping[str, Any], key: jax.Array,
                     n: int, mode: int = WEIGHTS, zs: Any = None, at: Any = None) -> tuple[Any, ...]:
    """The program of the importance weights, which also runs the verdict's checks: one compiled
    program per model and family whatever k-hat turns out to be (so a second fit compiles
    nothing), its branch picked at run time by ``mode``: :data:`WEIGHTS` (the draws, their log
    joint and log q, q's moments when the family gives them), :data:`CENTRED` (the scales of the
    centred-hierarchy candidates and their Jacobian at ``at``) or :data:`CURVATURE` (these and
    the mean Hessian of the log joint over the draws ``zs (CURVATURE_DRAWS, D)``)."""
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    sites = candidate_sites(ld, batch) if ld.dim <= CENTRED_MAX_DIM else []
    curvature = wants_curvature(ld, family)
    moments = family.mean is not None and family.std is not None
    zs = np.zeros((CURVATURE_DRAWS, ld.dim), ld.dtype) if zs is None else np.asarray(zs)
    at = np.zeros((ld.dim,), ld.dtype) if at is None else np.asarray(at, ld.dtype)

    def weights(p: Any, k: jax.Array, b: dict) -> tuple:
        z, log_q = family.sample_and_log_q(p, jax.random.fold_in(k, 3), n)
        m = (family.mean(p), family.std(p)) if moments else ()
        return z, _log_joint_many(ld, z, b), log_q, m

    def checks(p: Any, b: dict, zs: jax.Array, at: jax.Array, hessian: bool) -> tuple:
        centred = scales_and_jacobian(ld, b, sites)(at) if sites else ()
        return centred, (_hessian(ld)(zs, b) if curvature and hessian else ())

    def fn(p: Any, k: jax.Array, b: dict, zs: jax.Array, at: jax.Array, mode: jax.Array) -> tuple:
        shapes = [jax.eval_shape(weights, p, k, b), jax.eval_shape(lambda *a: checks(*a, True), p, b, zs, at)]
        zeros = [jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), s) for s in shapes]
        hess_zeros = jax.tree_util.tree_map(jnp.zeros_like, zeros[1][1])
        return jax.lax.switch(mode, [lambda: (weights(p, k, b), zeros[1]),
                                     lambda: (zeros[0], (checks(p, b, zs, at, False)[0], hess_zeros)),
                                     lambda: (zeros[0], checks(p, b, zs, at, True))])

    return "importance weights", fn, params, key, batch, zs, at, np.asarray(mode, np.int32)


def _weights_handle(ld: Any, family: Any, params: Any, batch: Mapping[str, Any], key: jax.Array, n: int,
                    mode: int = WEIGHTS, zs: Any = None, at: Any = None, ahead: bool = False) -> tuple[Any, tuple]:
    """The importance-weights program of ``ld`` and ``family`` and its arguments, traced once per
    (family, ``n``, signature of the arguments) and kept on ``ld``: a diagnosis runs it once for
    the weights and once for the checks, and the fit compiled it ahead (each trace of it, with
    the model's Hessian, cost seconds on the radon survey)."""
    kind, fn, *args = _weights_program(ld, family, params, batch, key, n, mode, zs, at)
    memo = ld.__dict__.setdefault("_weights_handles", {})
    sig = (int(n), signature(args))
    hit = memo.get(sig)
    if hit is None or hit[0] is not family:   # (the same family object: the same program)
        memo[sig] = (family, handle(kind, fn, *args, ahead=ahead, lift=ld.lift))
        return memo[sig][1], tuple(args)
    return hit[1], tuple(args)


def importance_weights(ld: Any, family: Any, params: Any, batch: Mapping[str, Any], key: jax.Array,
                       n: int, fam_key: Any = None) -> tuple[jax.Array, np.ndarray, tuple]:
    """``n`` draws of q (from ``fold_in(key, 3)``), their raw log weights ``log p - log q``
    (the difference taken in float64) and q's (mean, sd) per flat coordinate (``()`` when the
    family does not give them).

    ``log p`` is the model's log joint on all rows of ``batch``, without minibatch scaling.
    """
    prog, args = _weights_handle(ld, family, params, batch, key, n)
    (z, log_p, log_q, moments), _ = prog(*args)
    return z, np.asarray(log_p, dtype=np.float64) - np.asarray(log_q, dtype=np.float64), moments


def verdict_programs(ld: Any, family: Any, params: Any, batch: Mapping[str, Any], key: jax.Array,
                     n: int, zs: Any, at: Any, curvature: bool) -> tuple[Any, Any]:
    """The checks' branch of the importance-weights program: the centred candidates' (scales,
    Jacobians) at ``at`` and, when ``curvature``, the mean Hessian of the log joint over ``zs``."""
    prog, args = _weights_handle(ld, family, params, batch, key, n, CURVATURE if curvature else CENTRED, zs, at)
    return prog(*args)[1]


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
        started += compile_ahead(*q.constrain_program(jax.ShapeDtypeStruct((4000, ld.dim), ld.dtype)), lift=ld.lift)
    # a family with a density q; a model with parameters is diagnosed at their fitted values
    if q.family.make_loss_and_grad is None and not ld.params:
        memo = q.logdensity.__dict__.get("_weights_handles", {})
        before = {id(h) for _, h in memo.values()}
        made = _weights_handle(q.logdensity, q.family, q.params, dict(q.data), q.key, 4000, ahead=True)[0]
        started += id(made) not in before and made.started
    return int(started)
