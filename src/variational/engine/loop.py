"""The compiled optimisation loop.

``step(state, batch, key) -> (state, loss)`` is compiled once, inside a loop that runs ``n``
steps per call (``n`` is a runtime argument, so changing it never recompiles). Between calls
the host updates the progress bar, runs callbacks and checks the time budget.

Randomness: step ``t`` uses ``fold_in(key, t)``, so the numbers depend only on the seed and the
step index, never on how the steps were split into calls (resuming is exact).

A step whose loss or gradient is not finite is never applied: parameters and optimiser state
keep their old values, the step is counted in ``skipped``, and its loss is recorded as is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..compilation import program, signature, strong_types
from ..data.batching import FullBatch
from ..errors import DataError
from ..model.threads import MODEL_LOCK

__all__ = ["EngineState", "Batcher", "Engine", "RunReport"]


class EngineState(NamedTuple):
    """Everything the compiled loop carries from one step to the next."""

    params: Any
    opt_state: Any
    data_state: Any
    step: jax.Array      # int32: steps done so far
    skipped: jax.Array   # int32: non-finite steps skipped so far
    bad_run: jax.Array   # int32: non-finite steps in a row (for step-size reduction)


class Batcher(Protocol):
    """How the compiled loop gets the data for one step (see :mod:`variational.data`)."""

    def init(self, key: jax.Array) -> Any:  # pragma: no cover - protocol
        """Initial data state (a pytree carried through the loop)."""

    def next(self, data_state: Any, data: Any, step: jax.Array, key: jax.Array, x: Any) -> tuple[Any, Any]:  # pragma: no cover
        """Return ``(batch, data_state)`` for step ``step``; ``x`` is this step's streamed input."""


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


@dataclass
class RunReport:
    """What a call of :meth:`Engine.run` did."""

    losses: np.ndarray
    steps: int
    stopped_by: str | None = None      # "callback", "interrupt", "time", "error", or None (budget done)
    message: str = ""
    error: BaseException | None = None  # the data error that stopped the run ("error")
    compile_s: float = 0.0
    run_s: float = 0.0
    calls: int = 0


@dataclass
class Engine:
    """Compile and drive the optimisation loop.

    Parameters
    ----------
    loss_and_grad : callable
        ``f(params, key, batch) -> (loss, grads)``; with a true ``takes_step`` attribute it is
        called as ``f(params, key, batch, step)`` (the number of steps done so far).
    optimizer : optax.GradientTransformation
        The optimiser.
    batcher : Batcher
        Supplies each step's batch.
    capacity : int
        Largest number of steps in one compiled call (size of the loss buffer).
    guard : callable, optional
        ``guard(before, after, loss, ok) -> after``: called inside the compiled loop with the
        states before and after a step, the step's loss and whether it was applied; it may
        adjust the new state (see :func:`variational.engine.control.make_guard`, which keeps a restore
        point and lowers the learning rate after a run of non-finite steps). When the guard has
        an ``alert(before, after, loss) -> bool`` attribute, it is called only for the steps
        that are not finite or for which ``alert`` is true; every other step takes a fast path
        that leaves the guard's state as it is (``alert`` must be true whenever the guard would
        change anything after a finite step).
    """

    loss_and_grad: Callable[[Any, jax.Array, Any], tuple[jax.Array, Any]]
    optimizer: optax.GradientTransformation
    batcher: Any = field(default_factory=FullBatch)
    capacity: int = 4096
    guard: Callable[[EngineState, EngineState, jax.Array, jax.Array], EngineState] | None = None
    # devices: split each step's batch across a mesh (see variational.engine.devices)
    shard_batch: Callable[[Any], Any] | None = None
    # size chunks from wall-clock time (off for multi-process runs, which must agree on sizes)
    adaptive: bool = True
    # the model's numbers, an argument of the chunk (LogDensity.lift): an edit of them compiles nothing
    lift: Any = None
    _compiled: Any = field(default=None, init=False, repr=False)
    _signature: Any = field(default=None, init=False, repr=False)

    # ---------------------------------------------------------------------------------------
    def init_state(self, params: Any, key: jax.Array, opt_state: Any = None) -> EngineState:
        """A fresh state at ``params`` (optimiser state initialised unless given)."""
        if opt_state is None:
            opt_state = self.optimizer.init(params)
        return EngineState(params, opt_state, self.batcher.init(jax.random.fold_in(key, 1)),
                           jnp.int32(0), jnp.int32(0), jnp.int32(0))

    def _step(self, state: EngineState, data: Any, key: jax.Array, x: Any) -> tuple[EngineState, jax.Array]:
        k = jax.random.fold_in(key, state.step)
        k_batch, k_obj = jax.random.split(k)
        batch, data_state = self.batcher.next(state.data_state, data, state.step, k_batch, x)
        if self.shard_batch is not None:
            batch = self.shard_batch(batch)
        if getattr(self.loss_and_grad, "takes_step", False):   # e.g. an annealing schedule
            loss, grads = self.loss_and_grad(state.params, k_obj, batch, state.step)
        else:
            loss, grads = self.loss_and_grad(state.params, k_obj, batch)
        ok = jnp.isfinite(loss) & _all_finite(grads)
        if hasattr(self.optimizer, "apply"):   # updates only some rows (variational.engine.local)
            # it keeps the old values itself when ok is false (no pass over all rows, no branch)
            params, opt_state, ok = self.optimizer.apply(grads, state.opt_state, state.params, ok)
            bad = jnp.where(ok, 0, 1).astype(state.skipped.dtype)
            return EngineState(params, opt_state, data_state, state.step + 1, state.skipped + bad,
                               jnp.where(ok, 0, state.bad_run + 1).astype(state.bad_run.dtype)), loss
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ok = ok & _all_finite(params)
        # The common step (finite, nothing for the guard to do) takes the new state as it is;
        # the rest goes through one branch that keeps the old parameters when the step was not
        # finite and then runs the guard. One branch per step, taken rarely, is much cheaper on
        # the CPU than selecting every array of the state at every step.
        fast = EngineState(params, opt_state, data_state, state.step + 1, state.skipped,
                           jnp.zeros_like(state.bad_run))

        def slow() -> EngineState:
            p, o = jax.lax.cond(ok, lambda: (params, opt_state), lambda: (state.params, state.opt_state))
            new = EngineState(p, o, data_state, state.step + 1,
                              state.skipped + jnp.where(ok, 0, 1).astype(state.skipped.dtype),
                              jnp.where(ok, 0, state.bad_run + 1).astype(state.bad_run.dtype))
            return new if self.guard is None else self.guard(state, new, loss, ok)

        alert = ~ok
        if self.guard is not None:  # a guard without alert sees every step
            alert = alert | (self.guard.alert(state, fast, loss) if hasattr(self.guard, "alert") else True)
        new = jax.lax.cond(alert, slow, lambda: fast)
        return new, loss

    def _chunk(self, state: EngineState, data: Any, key: jax.Array, n: jax.Array, xs: Any) -> tuple[EngineState, jax.Array]:
        losses = jnp.full((self.capacity,), jnp.nan, dtype=jnp.result_type(float))

        def body(i: jax.Array, carry: tuple) -> tuple:
            st, ls = carry
            x = None if xs is None else jax.tree_util.tree_map(lambda a: a[i], xs)
            st, loss = self._step(st, data, key, x)
            return st, ls.at[i].set(loss.astype(ls.dtype))

        return jax.lax.fori_loop(0, n, body, (state, losses))

    def compile(self, state: EngineState, data: Any, key: jax.Array, xs: Any = None) -> float:
        """Compile the chunk function for these arguments; returns seconds spent.

        The chunk is found by its own trace (:func:`variational.compilation.program`): an engine
        whose chunk traces alike (the same model, family, optimiser, settings and argument
        shapes and shardings) compiled it already in this process, or JAX's persistent cache
        holds it.
        """
        sig = signature((state, data, key, xs))
        if self._compiled is not None and sig == self._signature:
            return 0.0
        t0 = time.perf_counter()
        self._compiled = program("chunk", self._chunk, state, data, key, np.int32(1), xs, lift=self.lift)
        self._signature = sig
        return time.perf_counter() - t0

    def run_chunk(self, state: EngineState, data: Any, key: jax.Array, n: int, xs: Any = None) -> tuple[EngineState, np.ndarray]:
        """Run ``n`` (<= capacity) steps in one compiled call; returns the state and n losses."""
        self.compile(state, data, key, xs)
        with MODEL_LOCK.released():  # compiled code: other threads may trace meanwhile
            state, losses = self._compiled(state, data, key, np.int32(n), xs)
            losses = np.asarray(losses)[:n]  # (slicing on the host: no new op per n)
        return state, losses

    # ---------------------------------------------------------------------------------------
    def run(
        self,
        state: EngineState,
        data: Any,
        key: jax.Array,
        steps: int,
        *,
        callbacks: Sequence[Callable] = (),
        on_chunk: Callable[[EngineState, np.ndarray, int], None] | None = None,
        progress: Any = None,
        feed: Callable[[int, int], Any] | None = None,
        max_seconds: float | None = None,
        target_seconds: float = 0.2,
        history: np.ndarray | None = None,
    ) -> tuple[EngineState, RunReport]:
        """Run ``steps`` steps, in compiled chunks, with the host work between chunks.

        ``callbacks`` are called as ``cb(state, losses_so_far, steps_done)`` every
        ``cb.every`` steps (every step when the attribute is missing); a callback may return
        a new state, which the loop continues from; raising
        ``StopIteration`` ends the run cleanly. ``feed(n, at)`` returns the streamed inputs of
        the ``n`` steps from step ``at`` on (leading dimension ``capacity``); asking by step
        number means that inputs fed to a chunk that never ran (Ctrl-C) are fed again.
        ``progress`` is an object with ``update(n, losses)`` (for example a tqdm wrapper), or a
        factory of one (called after compilation, so the bar's rate is the loop's).

        Ctrl-C (during compilation, while waiting for data, or between chunks) ends the run
        with the state of the last finished chunk (``stopped_by="interrupt"``); a
        :class:`~variational.errors.DataError` raised by ``feed`` ends it the same way
        (``stopped_by="error"``, the error in ``report.error``).
        """
        everies = [max(1, int(getattr(cb, "every", 1) or 1)) for cb in callbacks]
        report = RunReport(losses=np.empty(0), steps=0)
        chunks: list[np.ndarray] = []
        hist0 = np.empty(0) if history is None else np.asarray(history)
        start_step = int(state.step)
        n_next = min(self.capacity, 64 if (progress is not None and self.adaptive) else self.capacity)
        done = 0
        try:
            pending_xs = feed(1, start_step) if feed is not None else None
            state = strong_types(state)  # (the loop returns ordinary arrays: one signature)
            report.compile_s = self.compile(state, data, key, pending_xs)
            if progress is not None and not hasattr(progress, "update"):
                progress = progress()  # a factory: the bar starts after compilation
            t_start = time.perf_counter()
            while done < steps:
                n = min(n_next, steps - done, self.capacity)
                for e in everies:  # stop on the next callback boundary
                    n = min(n, e - (start_step + done) % e)
                if pending_xs is not None:
                    n = 1  # the inputs fed for compilation hold one step
                xs = pending_xs if pending_xs is not None else (
                    feed(n, start_step + done) if feed is not None else None)
                pending_xs = None
                t0 = time.perf_counter()
                state, losses = self.run_chunk(state, data, key, n, xs)
                dt = time.perf_counter() - t0
                report.run_s += dt
                report.calls += 1
                done += n
                chunks.append(losses)
                if progress is not None:
                    progress.update(n, losses)
                if progress is not None and self.adaptive:
                    # size the next call so that the bar refreshes about every target_seconds
                    n_next = int(np.clip(n * target_seconds / max(dt, 1e-6), 1, self.capacity))
                step_now = start_step + done
                state = self._call_back(callbacks, everies, state, hist0, chunks, step_now)
                if on_chunk is not None:
                    on_chunk(state, losses, step_now)
                if max_seconds is not None and time.perf_counter() - t_start > max_seconds:
                    report.stopped_by, report.message = "time", f"time budget of {max_seconds}s reached at step {step_now}"
                    break
        except StopIteration as e:
            state = getattr(e, "state", state)
            report.stopped_by = "callback"
            report.message = f"interrupted at step {start_step + done}" + (f": {e}" if str(e) else "")
        except KeyboardInterrupt:
            report.stopped_by = "interrupt"
            report.message = f"interrupted at step {start_step + done}" + ("" if report.calls else " (before the first step ran)")
        except DataError as e:  # raised by feed: the data stream failed; the steps so far stand
            report.stopped_by, report.error = "error", e
            report.message = f"stopped at step {start_step + done} by a data error: {e}"
        report.losses = np.concatenate(chunks) if chunks else np.empty(0)
        report.steps = done
        return state, report

    @staticmethod
    def _call_back(callbacks: Sequence[Callable], everies: list[int], state: EngineState,
                   hist0: np.ndarray, chunks: list[np.ndarray], step_now: int) -> EngineState:
        all_losses = None
        for cb, e in zip(callbacks, everies):
            if step_now % e == 0:
                if all_losses is None:
                    all_losses = np.concatenate([hist0, *chunks])
                try:
                    moved = cb(state, all_losses, step_now)
                except StopIteration as stop:  # the run ends with what earlier callbacks moved
                    stop.state = state  # type: ignore[attr-defined]
                    raise
                if isinstance(moved, EngineState):  # a callback may hand back a new state
                    state = moved
        return state
