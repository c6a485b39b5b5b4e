"""Fit control inside the compiled loop: the learning rate as state, back-off after non-finite
steps, and the automatic step-size search (run from the host by :mod:`.run`).

The learning rate lives in the optimiser state (:class:`ScaledState`): every update of the
underlying optax optimiser is multiplied by ``scale``. A named optimiser is built with learning
rate 1, so ``scale`` *is* its learning rate; a user's optax object keeps its own, and ``scale``
is a factor on it (1 to begin with). Because the rate is state and not a constant of the
compiled code, changing it (the step-size search trying a grid of values, the back-off halving
it) never recompiles the loop.

Back-off: when ``BACKOFF_AFTER`` steps in a row (or ``BACKOFF_AFTER`` of a window of
``BACKOFF_WINDOW`` steps) are not finite, the compiled loop returns to the
parameters with the lowest finite loss seen so far, restarts the optimiser's state there and
multiplies the learning rate by ``BACKOFF_FACTOR``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .loop import EngineState
from .optim import make_optimizer
from .schedule import ScheduleSpec, make_spec

__all__ = ["ScaledState", "scaled", "make_guard", "build_optimizer", "search_learning_rate",
           "resolve_step_size",
           "with_learning_rate", "learning_rate", "LR_GRID", "BACKOFF_AFTER", "BACKOFF_FACTOR",
           "DEFAULT_MAX_STEPS"]

# Stan's eta adaptation tries 100, 10, 1, 0.1, 0.01 with its own step-size sequence. For Adam-like
# optimisers, whose steps are about the learning rate in size in every coordinate, rates of 0.3
# and 1 won short trials (they travel furthest) and then wrecked the long run (a scale collapsing
# to 1e-22 on a unit Gaussian): the grid stops at 0.1, and the schedule lowers a rate that jitters.
LR_GRID: tuple[float, ...] = (0.1, 0.03, 0.01, 0.003, 0.001)
LR_TRIAL_STEPS = 300
LR_EVAL_STEPS = 100
LR_EVAL_STEP0 = 2**30   # step index of the evaluation draws (apart from any step a fit runs)
BACKOFF_AFTER = 10
BACKOFF_FACTOR = 0.5
BACKOFF_WINDOW = 100
DEFAULT_MAX_STEPS = 100_000
STREAM_LEARNING_RATE = 1e-2   # the default step of a fit whose data cannot be replayed for trials


class ScaledState(NamedTuple):
    """Optimiser state with the learning rate (``scale``) as a value the compiled loop can change."""

    inner: Any             # the wrapped optimiser's state
    scale: jax.Array       # multiplies every update
    reductions: jax.Array  # times the back-off lowered ``scale``
    best: Any              # parameters with the lowest finite loss seen so far
    best_loss: jax.Array   # that loss
    recent_bad: jax.Array  # non-finite steps in the current window of BACKOFF_WINDOW steps
    sched: Any = None      # the adaptive schedule's state (variational.engine.schedule), if any


def scaled(optimizer: optax.GradientTransformation, scale: float = 1.0,
           spec: ScheduleSpec | None = None, step_scale: Any = None) -> optax.GradientTransformation:
    """Wrap ``optimizer`` so that its updates are multiplied by a ``scale`` held in its state.

    With ``spec`` (an adaptive schedule) the state also carries the schedule's state, and
    every update adds the current parameters to its window sum. ``step_scale(params)``, a
    pytree of numbers like the parameters, multiplies each leaf's updates as well.

    Examples
    --------
    >>> import jax.numpy as jnp, optax
    >>> opt = scaled(optax.sgd(1.0), scale=0.1)
    >>> st = opt.init(jnp.zeros(2))
    >>> u, st = opt.update(jnp.ones(2), st, jnp.zeros(2))
    >>> [round(float(v), 3) for v in u]
    [-0.1, -0.1]
    """

    def init(params: Any) -> ScaledState:
        return ScaledState(optimizer.init(params), jnp.asarray(scale, jnp.float32), jnp.int32(0),
                           params, jnp.asarray(jnp.inf, jnp.result_type(float)), jnp.int32(0),
                           None if spec is None else spec.init(params))

    def update(grads: Any, state: ScaledState, params: Any = None) -> tuple[Any, ScaledState]:
        updates, inner = optimizer.update(grads, state.inner, params)
        if step_scale is not None:
            updates = jax.tree_util.tree_map(lambda u, f: f * u, updates, step_scale(params))
        updates = jax.tree_util.tree_map(lambda u: (state.scale * u).astype(u.dtype), updates)
        sched = state.sched if spec is None else spec.accumulate(state.sched, params)
        return updates, state._replace(inner=inner, sched=sched)

    return optax.GradientTransformation(init, update)


def make_guard(optimizer: optax.GradientTransformation, after: int = BACKOFF_AFTER,
               factor: float = BACKOFF_FACTOR, window: int = BACKOFF_WINDOW,
               spec: ScheduleSpec | None = None) -> Any:
    """The engine's guard: remember the best parameters; back off after non-finite steps.

    ``optimizer`` is the *inner* optimiser of :func:`scaled`. Each step whose loss is finite and
    the lowest so far makes its parameters the fit's restore point. When ``after`` steps in a
    row were not finite, or ``after`` of the steps of a window of ``window`` steps (counted
    from step 0), the loop returns to the restore point, restarts the optimiser's state there
    and multiplies the learning rate by ``factor``, all inside the compiled code.
    """

    def guard(before: EngineState, state: EngineState, loss: jax.Array, ok: jax.Array) -> EngineState:
        o = state.opt_state
        better = ok & jnp.isfinite(loss) & (loss < o.best_loss)
        best = jax.lax.cond(better, lambda: before.params, lambda: o.best)
        o = o._replace(best=best, best_loss=jnp.where(better, loss.astype(o.best_loss.dtype), o.best_loss))
        recent = o.recent_bad + jnp.where(ok, 0, 1).astype(o.recent_bad.dtype)
        window_end = state.step % window == 0
        hit = (state.bad_run >= after) | (window_end & (recent >= after))
        o = o._replace(recent_bad=jnp.where(hit | window_end, 0, recent).astype(recent.dtype))

        def back(o: ScaledState) -> tuple[Any, ScaledState]:
            return o.best, o._replace(inner=optimizer.init(o.best),
                                      scale=(o.scale * factor).astype(o.scale.dtype),
                                      reductions=o.reductions + 1)

        params, o = jax.lax.cond(hit, back, lambda o: (state.params, o), o)
        state = state._replace(params=params, opt_state=o,
                               bad_run=jnp.where(hit, 0, state.bad_run).astype(state.bad_run.dtype))
        if spec is None:
            return state
        return jax.lax.cond(spec.is_window_end(state), spec.close_window, lambda st: st, state)

    def alert(before: EngineState, state: EngineState, loss: jax.Array) -> jax.Array:
        # after a finite step the guard changes something only on a new best loss (restore
        # point) or at the end of a window (counter reset, possible back-off, the schedule)
        hit = (jnp.isfinite(loss) & (loss < state.opt_state.best_loss)) | (state.step % window == 0)
        return hit if spec is None else hit | spec.is_window_end(state)

    guard.alert = alert
    return guard


def build_optimizer(optimizer: Any, learning_rate: Any, *, family: Any = None,
                    schedule: str = "constant", batch_fraction: float = 1.0
                    ) -> tuple[optax.GradientTransformation, Any, Any]:
    """The optimiser of a fit (``optimizer`` wrapped by :func:`scaled`), its guard and schedule.

    A named optimiser gets learning rate 1 and ``scale=learning_rate`` (``"auto"``: 1 until
    the search sets it); an optax object keeps its own rate and gets ``scale=1``. The
    ``family``'s frozen parameters (a preconditioner) are left out of the optimiser; with
    ``schedule="adaptive"`` the state carries the adaptive schedule
    (:mod:`variational.engine.schedule`), returned as the third value (None otherwise).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> opt, guard, spec = build_optimizer("adam", 0.05)
    >>> round(float(opt.init(jnp.zeros(2)).scale), 6)
    0.05
    """
    scale = 1.0
    if isinstance(learning_rate, str):
        if learning_rate != "auto":
            raise ValueError(f"learning_rate={learning_rate!r}: give a positive number or 'auto'")
        if not isinstance(optimizer, str):
            raise ValueError("learning_rate='auto' needs a named optimizer (for example "
                             "optimizer='adam'); an optax object carries its own learning rate")
    elif isinstance(optimizer, str):
        make_optimizer(optimizer, learning_rate)  # checks the name and the rate
        scale = float(learning_rate)
    inner = make_optimizer(optimizer, 1.0)
    if family is not None and family.frozen:
        inner = optax.masked(inner, family.trainable)
    # minibatch gradients are noisier by about sqrt(N / B): the smallest learning rate is lower by
    # as much, so that the averaged answer can become as precise as a full-batch one
    # (and a family's own factor: the low-rank factor's noise, see variational.families.lowrank)
    factor = float(np.sqrt(min(batch_fraction, 1.0))) * (1.0 if family is None else family.min_lr_factor)
    floor = {} if factor == 1.0 else {"min_lr": ScheduleSpec.min_lr * factor}
    spec = make_spec(family, inner.init, **floor) if family is not None and schedule == "adaptive" else None
    steps = None if family is None else family.step_scale
    return scaled(inner, scale, spec, steps), make_guard(inner, spec=spec), spec


def resolve_step_size(optimizer: Any, learning_rate: Any, schedule: Any) -> tuple[Any, str]:
    """The learning rate and schedule a fit runs with, from what the user gave.

    ``learning_rate=None`` is ``"auto"`` for a named optimiser and the optimiser's own rate for
    an optax object. ``schedule=None`` is ``"adaptive"`` when the learning rate is chosen
    automatically, and ``"constant"`` when the user gave a number or an optax object (the
    step size stays what was given, as in PyMC's ``pm.fit``).

    Examples
    --------
    >>> resolve_step_size("adam", None, None)
    ('auto', 'adaptive')
    >>> resolve_step_size("adam", 0.01, None)
    (0.01, 'constant')
    """
    if schedule not in (None, "adaptive", "constant"):
        raise ValueError(f"schedule={schedule!r}: use 'adaptive' (decrease the step size once the "
                         f"iterates are stationary, report their average) or 'constant'")
    if learning_rate is None:
        learning_rate = "auto" if isinstance(optimizer, str) else 1.0
        if schedule is None:
            schedule = "adaptive" if isinstance(optimizer, str) else "constant"
    if schedule is None:
        schedule = "adaptive" if learning_rate == "auto" else "constant"
    return learning_rate, schedule


def _put(value: Any, like: jax.Array) -> jax.Array:
    """``value`` as an array with the dtype and placement of ``like`` (a transfer, no operation
    to compile)."""
    return jax.device_put(np.asarray(value, like.dtype), like.sharding)


def with_learning_rate(state: EngineState, lr: float) -> EngineState:
    """``state`` with its learning rate (the optimiser's ``scale``) set to ``lr``."""
    opt = state.opt_state
    return state._replace(opt_state=opt._replace(scale=_put(lr, opt.scale)))


def learning_rate(state: EngineState) -> float | None:
    """The current learning rate of ``state`` (a factor for a user's optax optimiser)."""
    opt = state.opt_state
    return float(opt.scale) if isinstance(opt, ScaledState) else None


def _reductions(state: EngineState) -> int:
    opt = state.opt_state
    return int(opt.reductions) if isinstance(opt, ScaledState) else 0


def _evaluate(engine: Any, state: EngineState, start: EngineState, data: Any, key: jax.Array,
              steps: int) -> np.ndarray:
    """Losses of ``steps`` draws at ``state``'s parameters (learning rate 0), with the same
    random numbers and batches for every state evaluated from the same ``start``."""
    frozen = with_learning_rate(state, 0.0)._replace(step=_put(LR_EVAL_STEP0, state.step),
                                                     data_state=start.data_state)
    _, report = engine.run(frozen, data, key, int(steps))
    if report.stopped_by == "interrupt":
        raise KeyboardInterrupt
    return np.asarray(report.losses, dtype=np.float64)


#: the fraction of a trial's steps (and of its evaluation draws) that may be non-finite
NONFINITE_OK = 0.25


def search_learning_rate(fit: Any, grid: Sequence[float] = LR_GRID, steps: int = LR_TRIAL_STEPS,
                         eval_steps: int = LR_EVAL_STEPS) -> tuple[float, dict[float, float]]:
    """Step-size search: a trial per learning rate, scored by the ELBO where the trial ended.

    Each trial starts from the fit's current state and runs ``steps`` steps at one learning
    rate (random numbers apart from the main run's); a trial with any non-finite step is
    rejected. Its score is the mean loss (negative ELBO) of ``eval_steps`` draws at the
    parameters the trial ended with, with the same draws (and batches) for every trial, so
    that two scores differ by what the trials did and not by the draws: a rate that travels
    fast but ends jittering far from the optimum (a large rate where the posterior is narrow)
    scores worse than one that ends close to it. The grid is tried from the largest value
    down and the search stops once a trial is clearly worse than the best so far (by more
    than twice the standard error of their paired difference); among the trials within two
    such standard errors of the best, the smallest learning rate wins.

    Returns
    -------
    (float, dict)
        The chosen learning rate and ``{learning_rate: score}`` (``inf`` for rejected trials).

    Examples
    --------
    >>> import variational as vi
    >>> def model():
    ...     vi.Normal("x", 0, 1)
    >>> fit = vi.fit(model, steps=0, progress=False)
    >>> lr, table = search_learning_rate(fit, grid=(0.1, 0.01), steps=100)
    >>> lr in table
    True
    """
    if not grid or any(not g > 0 for g in grid):
        raise ValueError(f"grid={tuple(grid)!r} must be a non-empty sequence of positive learning rates")
    if int(steps) < 4 or int(eval_steps) < 4:
        raise ValueError(f"steps={steps!r}, eval_steps={eval_steps!r}: a trial needs at least 4 of each")
    if not isinstance(fit.state.opt_state, ScaledState):
        raise ValueError("the fit's optimiser does not hold its learning rate in its state")
    plan = getattr(fit, "_plan", None)
    if plan is not None and getattr(plan, "feeder", None) is not None:
        raise ValueError("learning_rate='auto' cannot replay a streaming data source for its trials; "
                         "give a number (or search on an in-memory sample of the data first)")
    engine, start = fit.engine, fit.state
    key = jax.random.fold_in(fit.key, 0x5EED)
    key_eval = jax.random.fold_in(fit.key, 0xE7A1)
    table: dict[float, float] = {}
    losses: dict[float, np.ndarray] = {}
    for lr in sorted(set(float(g) for g in grid), reverse=True):
        state, report = engine.run(with_learning_rate(start, lr), fit.data, key, int(steps))
        if report.stopped_by == "interrupt":
            raise KeyboardInterrupt
        # a few skipped steps are a boundary of the support (a draw of q beyond it has no
        # density), not divergence: a trial fails when more than NONFINITE_OK of its steps, or
        # of its evaluation draws, are not finite; it is scored on its finite draws
        skipped = int(state.skipped) - int(start.skipped)
        bad = skipped > NONFINITE_OK * int(steps) or not np.any(np.isfinite(report.losses))
        if not bad:
            ev = _evaluate(engine, state, start, fit.data, key_eval, eval_steps)
            bad = float(np.mean(np.isfinite(ev))) < 1.0 - NONFINITE_OK
        table[lr] = np.inf if bad else float(ev[np.isfinite(ev)].mean())
        if bad:
            continue
        losses[lr] = ev
        top = min(losses, key=lambda k: table[k])
        if top != lr and table[lr] - table[top] > 2.0 * _paired_se(losses[lr], losses[top]):
            break  # clearly worse than the best: smaller rates will only be slower
    if not losses:
        raise ValueError(f"every learning rate tried ({sorted(table)}) gave non-finite values in more "
                         f"than {NONFINITE_OK:.0%} of its steps or draws; check the model's initial "
                         f"point, or pass a smaller learning_rate")
    top = min(losses, key=lambda k: table[k])
    near = [lr for lr in losses if table[lr] - table[top] <= 2.0 * _paired_se(losses[lr], losses[top])]
    return min(near), table


def _paired_se(a: np.ndarray, b: np.ndarray) -> float:
    d = a - b
    d = d[np.isfinite(d)]
    return float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else 0.0
