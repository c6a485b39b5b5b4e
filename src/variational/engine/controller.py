"""The host side of the adaptive schedule: read the windows, decide, start the next stage.

:class:`Controller` is a callback the fit runs first, every ``BLOCK`` windows: it summarises the
window averages the compiled loop stored (one compiled call for all of them), updates the
statistics of the current half and, at the end of a half, tests stationarity and may start a new
stage (see :mod:`variational.engine.schedule` for the rule). Its decisions are written back into
the engine state, so that a checkpoint holds them. :class:`AnswerConvergence`, run right after
it, ends a ``steps=None`` fit when the answer has converged.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..compilation import program, signature
from .callbacks import Callback, Converged
from .schedule import BLOCK, WINDOW, Schedule, ScheduleSpec, describe, status

__all__ = ["Controller", "AnswerConvergence", "advance", "report_schedule"]

_tree = jax.tree_util.tree_map


class Controller(Callback):
    """Run the schedule's decisions every ``BLOCK`` windows (see :func:`advance`)."""

    every = WINDOW * BLOCK

    def __init__(self, spec: ScheduleSpec) -> None:
        self.spec = spec
        self._rewhiten = spec.rewhiten
        self._programs: dict[tuple, Any] = {}

    def _program(self, kind: str, fn: Any, *args: Any) -> Any:
        """``fn``'s program for arguments like ``args``: found by its trace the first time
        (:func:`~variational.compilation.program`, so the next fit of the same model compiles
        nothing), then kept by this controller for arguments of the same signature. ``fn`` is
        made of this controller's own fixed functions, so the same signature is the same
        program; tracing it at every block cost more than the block's host arithmetic."""
        key = (kind, signature(args))
        found = self._programs.get(key)
        if found is None:
            found = self._programs[key] = program(kind, fn, *args)
        return found

    def _summaries(self, buf: Any) -> Any:
        """The summaries of a buffer of window averages: one small compiled program, no eager
        operations."""
        return self._program("schedule summaries", jax.vmap(self.spec.summary), buf)(buf)

    def _summary(self, a: Any, buf: Any) -> np.ndarray:
        """The summary of the parameters ``a``, through the buffer's program (``a`` in every slot)."""
        full = _tree(lambda b, x: np.broadcast_to(np.asarray(x, b.dtype), b.shape), buf, a)
        return np.asarray(self._summaries(full), np.float64)[0]

    def _start(self, start: Any, whiten: bool) -> tuple[Any, Any]:
        """A new stage's parameters (rewhitened when ``whiten``) and its fresh optimiser state,
        in one compiled program for both cases."""
        rewhiten, reset = self._rewhiten, self.spec.reset

        def new_stage(p: Any, flag: Any) -> tuple[Any, Any]:
            if rewhiten is not None:
                p = _tree(lambda w, x: jnp.where(flag, w, x), rewhiten(p), p)
            return p, reset(p)

        flag = np.bool_(whiten)
        return self._program("schedule stage", new_stage, start, flag)(start, flag)

    def __call__(self, fit: Any, losses: np.ndarray, i: int) -> None:
        new = advance(self, fit.state)
        if new is not fit.state:
            fit._set_state(new)

    def pending(self, state: Any) -> bool:
        """Whether ``state`` ends a block whose windows were not read (a run stopped between
        the compiled call and this callback)."""
        return int(state.step) % self.every == 0 and int(state.opt_state.sched.buf_n) > 0


def advance(ctl: Controller, state: Any) -> Any:
    """Read the stored windows of ``state`` and apply the schedule's rule to them."""
    s = state.opt_state.sched
    n = min(int(s.buf_n), BLOCK)
    if n == 0:
        return state
    ys = np.asarray(ctl._summaries(s.buf), dtype=np.float64)[:n]
    h = _host(s)
    buf = h["buf"]
    params, scale, inner = None, None, None
    for j in range(n):
        w = _tree(lambda b: b[j].astype(np.float64), buf)
        if h["half_n"] == 0:
            h["y_ref"] = ys[j]
        h["y_win"][h["half_n"]] = ys[j] - h["y_ref"]  # deviations: precise in float32
        h["half_n"] += 1
        h["half_mean"] = _tree(lambda m, x: m + (x - m) / h["half_n"], h["half_mean"], w)
        if h["half_n"] >= h["half_len"]:
            new = _half_end(ctl, h, state, float(state.opt_state.scale))
            params, scale, inner = new or (params, scale, inner)
    h["buf_n"] = 0
    return _write(state, h, buf, params, scale, inner)


def _host(s: Schedule) -> dict[str, Any]:
    """The schedule's state as NumPy values (float64 statistics)."""
    h = jax.device_get(s._asdict())    # (one transfer)
    h["_fetched"] = {k: _tree(np.array, v) for k, v in h.items() if k not in _READ_ONLY}  # what the host changes
    for k, v in h.items():
        if isinstance(v, np.ndarray) and v.ndim == 0:
            h[k] = v.item()  # Python scalars (device_get's are read-only arrays)
    for k in ("half_mean", "avg"):
        h[k] = _tree(lambda a: np.array(a, np.float64), h[k])
    for k in ("y_ref", "y_win", "stage_y", "stage_se"):
        h[k] = np.array(h[k], np.float64)
    return h


def _window_stats(h: dict) -> tuple[np.ndarray, np.ndarray]:
    """Mean summary of the half's windows and its standard error, with the scatter of the windows
    inflated for their autocorrelation (lag 1, pooled over the coordinates)."""
    k = int(h["half_len"])
    y = h["y_win"][:k]
    mean = y.mean(0)
    dev = y - mean
    var = (dev ** 2).sum(0) / (k - 1.0)
    rho = float(np.sum(dev[1:] * dev[:-1]) / max(float(np.sum(dev ** 2)), 1e-300))
    rho = min(max(rho, 0.0), 0.9)
    return h["y_ref"] + mean, np.sqrt(var / k * (1.0 + rho) / (1.0 - rho))


def _half_end(ctl: Controller, h: dict, state: Any, scale: float) -> tuple | None:
    """End of a half. After the first (a burn-in), the second begins; after the second, the
    stage's answer is its average, compared with the last stage's, and the next stage starts."""
    spec = ctl.spec
    half = h["half_mean"]
    h.update(half_mean=_tree(np.zeros_like, half), half_n=0)
    if not h["second"]:
        h["second"] = True
        if not h["stage_ok"]:  # nothing reported yet: the latest average is the best there is
            h.update(avg=half, avg_ok=True)
        return None
    a = half
    _, se = _window_stats(h)
    ya = ctl._summary(a, h["buf"])
    ratio, change, allowed, mcse = _compare(spec, ya, se, h)
    agree = ratio <= spec.stationary   # stationary at this learning rate
    # the first stationary answer rewhitens the family (when it can): from then on a step is a
    # fraction of q's own sds; before, the learning rate is the one chosen for travelling
    whiten = ctl._rewhiten is not None and (h["whitened"] or agree)
    floor = spec.min_lr if h["whitened"] else 0.0
    # converged: the answer did not move when the learning rate was lowered (or could not be)
    converged = ratio <= 1.0 and mcse <= spec.tol_se and (h["lowered"] or scale <= floor * (1 + 1e-6))
    if whiten and not h["whitened"]:  # the step that moved q by as much, in q's median sd
        new_scale = float(np.clip(scale / np.median(np.exp(ya[ya.size // 2:])), spec.min_lr,
                                  spec.whitened_lr))
    else:
        # lower the learning rate once the answer is stationary at this one, or when the
        # answers are too noisy to tell (the iterates jitter too much); keep it while precise
        # answers still move (the answer is on its way)
        noisy = mcse > spec.noisy * spec.tol_se
        new_scale = max(scale * spec.factor, floor) if agree or noisy else scale
    was_whitened = h["whitened"]
    h.update(stage=h["stage"] + 1, second=False, avg=a, avg_ok=True, stage_y=ya, stage_se=se,
             stage_ok=True, whitened=whiten, done=converged, change=change, allowed=allowed,
             mcse=mcse, lowered=new_scale < scale)
    if whiten and not was_whitened:
        h["half_len"] = spec.half          # a new regime: start again with short stages
    elif agree and mcse > spec.tol_se:    # stationary but imprecise: average over more windows
        h["half_len"] = min(2 * h["half_len"], spec.max_half)
    if converged:
        h["done_at"] = int(state.step)
    # a stationary stage starts the next from its answer; a moving one from the iterate (the
    # average lags behind it)
    start = _tree(lambda x, r: _like(x, r), a, state.params) if agree else state.params
    params, inner = ctl._start(start, whiten)
    return params, new_scale, inner


def _compare(spec: ScheduleSpec, ya: np.ndarray, se: np.ndarray, h: dict) -> tuple:
    """The largest change from the last stage's answer relative to what convergence allows
    (``tol`` or the noise), that change and its allowance, and the Monte Carlo error (all in q
    standard deviations)."""
    d = ya.size // 2
    unit = np.concatenate([np.exp(ya[d:]), np.ones(d)])
    mcse = float(np.max(se / unit))
    if not h["stage_ok"]:
        return np.inf, np.inf, spec.tol, mcse
    change = np.abs(ya - h["stage_y"]) / unit
    noise = np.sqrt(se ** 2 + h["stage_se"] ** 2) / unit
    z = np.sqrt(2.0 * np.log(max(ya.size, 2)) + 4.0)  # about the largest of 2D normal deviates
    allowed = np.maximum(spec.tol, z * noise)
    worst = int(np.argmax(change / allowed))
    return float(change[worst] / allowed[worst]), float(change[worst]), float(allowed[worst]), mcse


#: the fields of the schedule that the host only reads: written back as they are on the device
_READ_ONLY = ("win_sum", "win_n", "buf")


def _write(state: Any, h: dict, buf: Any, params: Any, scale: float | None, inner: Any) -> Any:
    """``state`` with the host's schedule (and a new stage's parameters) written back, each array
    with the dtype and placement of the one it replaces: only the fields whose values the host
    changed are transferred, in one call (a transfer per field cost more than the decisions)."""
    old = state.opt_state.sched
    h["buf"] = buf
    fetched = h.pop("_fetched")
    changed = {k: h[k] for k in Schedule._fields
               if k not in _READ_ONLY and not _same(h[k], fetched[k])}
    moved = _like(changed, {k: getattr(old, k) for k in changed})
    new = old._replace(**moved)
    opt = state.opt_state._replace(sched=new)
    if params is None:
        return state._replace(opt_state=opt)
    opt = opt._replace(inner=_tree(_like, inner, opt.inner),
                       scale=_like(scale, opt.scale))
    return state._replace(params=_tree(_like, params, state.params), opt_state=opt)


def _same(a: Any, b: Any) -> bool:
    """Whether two host values (pytrees of NumPy arrays and scalars) are equal, NaNs included."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.shape(x) == np.shape(y) and np.array_equal(x, y, equal_nan=True)
                                      for x, y in zip(la, lb))


def _like(value: Any, ref: Any) -> Any:
    """``value`` with the dtypes and placement of ``ref``'s arrays, transferred in one call."""
    leaves, tree = jax.tree_util.tree_flatten(ref)
    vals = tree.flatten_up_to(value)
    out = list(vals)
    at = [i for i, r in enumerate(leaves) if isinstance(r, jax.Array)]
    if at:
        moved = jax.device_put([np.asarray(vals[i], dtype=leaves[i].dtype) for i in at],
                               [leaves[i].sharding for i in at])
        for i, m in zip(at, moved):
            out[i] = m
    return jax.tree_util.tree_unflatten(tree, out)


class AnswerConvergence(Callback):
    """End a ``steps=None`` fit when the adaptive schedule's answer has converged.

    Runs right after :class:`Controller` (at the end of its blocks) and raises
    :class:`~variational.callbacks.Converged` at the step where the answer converged.
    """

    every = WINDOW * BLOCK

    def __init__(self) -> None:
        self.converged_at: int | None = None
        self.message = ""

    def __call__(self, fit: Any, losses: np.ndarray, i: int) -> None:
        st = status(fit.state)
        if st is not None and st["done"] and st["done_at"] == i:
            self.converged_at = i
            self.message = f"converged at step {i}: " + describe(st)
            raise Converged(self.message)


def report_schedule(fit: Any) -> None:
    """After a fixed number of steps with the schedule: did the answer converge on the way?"""
    st = status(fit.state)
    fit.converged = st["done"]
    if st["done"]:
        fit.message = f"{fit.steps} steps; the answer converged at step {st['done_at']}: " + describe(st)
    else:
        fit.message = f"{fit.steps} steps; the answer has not converged: " + describe(st)
