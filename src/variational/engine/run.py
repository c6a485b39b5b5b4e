"""A run of the optimisation: the state, the loss history, and driving the engine from the host.

:class:`Run` holds what an optimisation carries between calls (engine state, loss history,
random key, settings, notes) and runs the compiled engine with a progress bar, callbacks and
a time budget; :func:`run` runs it to a number of steps or until a convergence rule fires,
with checkpoints. The result object :class:`variational.Fit` is a ``Run`` that also answers
questions about the approximation.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Self, Sequence

import jax
import numpy as np

from ..compilation import stats
from ..errors import VariationalError
from ..families.base import Family
from ..model import LogDensity
from ..model.threads import MODEL_LOCK
from .arguments import whole_number
from .callbacks import ELBOConvergence
from .checkpoint import Checkpointer, save
from .notes import note, save_or_warn
from .control import (
    BACKOFF_AFTER, BACKOFF_FACTOR, BACKOFF_WINDOW, DEFAULT_MAX_STEPS, LR_TRIAL_STEPS, _reductions,
    learning_rate, search_learning_rate, with_learning_rate,
)
from .loop import Engine, EngineState, RunReport
from .model_params import MODEL
from .progress import Progress
from .controller import AnswerConvergence, Controller, advance, report_schedule
from .schedule import answer, describe, status

__all__ = ["Run", "run", "after_run", "note", "choose_learning_rate", "whole_number", "raise_with_fit"]


def raise_with_fit(error: BaseException, fit: Any) -> None:
    """Raise ``error`` (a data error that stopped a run) with the fit so far as ``error.fit``."""
    where = f"; the fit so far ({fit.steps} steps) is kept in the exception's .fit"
    if isinstance(error, VariationalError) and not getattr(error, "fit", None) and fit.steps:
        error.args = (f"{error.args[0] if error.args else error}{where}",) + tuple(error.args[1:])
    error.fit = fit  # type: ignore[attr-defined]
    raise error



class Run:
    """The state of an optimisation and the host loop around the compiled engine."""

    def __init__(
        self,
        *,
        model: Callable,
        logdensity: LogDensity,
        family: Family,
        engine: Engine,
        state: EngineState,
        key: jax.Array,
        data: Mapping[str, Any],
        model_kwargs: Mapping[str, Any],
        settings: dict,
        schedule: Any = None,
    ) -> None:
        self.model = model
        self._logdensity = logdensity
        self.family = family
        self.engine = engine
        self._state = state
        self.key = key
        self.data = data
        self.model_kwargs = dict(model_kwargs)
        self.settings = dict(settings)
        self.method = family.name
        self.schedule = schedule             # the adaptive schedule's spec, or None
        self._controller = None if schedule is None else Controller(schedule)
        self._hist: list[np.ndarray] = []
        self.interrupted = False
        self.converged: bool | None = None   # set when a convergence rule was watching
        self.notes: list[str] = []           # what the fit reported (step size, skipped steps...)
        self.message = ""
        # where the time went (docs/speed.md), and the XLA compilations
        self.timings: dict[str, float] = {k: 0.0 for k in ("setup_s", "step_size_s", "compile_s", "run_s", "control_s",
                                                            "draws_s", "diagnose_s")}
        self.timings.update(steps=0, compilations=0)
        self._draw_counter = 0
        self._cache: dict[Any, Any] = {}
        self._plan: Any = None   # minibatch plan (variational.data.plan.Plan) when batch_size was given
        self.data_note = ""
        self.solution: Any = None   # a direct method's record (families.base.Solution)
        self.init_grad_evals = 0    # spent by the fit this one started from (init=)
        self.categories: dict[str, list] = {}   # categorical data column -> its categories
        self.alternative: Any = None   # method="auto": the fit of the other family it tried

    # -- running -----------------------------------------------------------------------------
    def _run(self, steps: int, *, callbacks: Sequence[Callable] = (), progress: bool | None = None,
             feed: Callable[[int, int], Any] | None = None, max_seconds: float | None = None) -> Self:
        steps = whole_number("steps", steps)
        if self.family.solve is not None:
            raise VariationalError(
                f"method={self.method!r} is solved directly (deterministic optimisation to its "
                f"answer), so there are no steps to continue; to go on with a stochastic family "
                f"start it from this fit: vi.fit(model, data, method='fullrank_advi', init=fit)")
        with MODEL_LOCK:
            return self._run_locked(steps, callbacks, progress, feed, max_seconds)

    def _run_locked(self, steps: int, callbacks: Sequence[Callable], progress: bool | None,
                    feed: Callable[[int, int], Any] | None, max_seconds: float | None) -> Self:
        if int(steps) > 0 and self.settings.get("learning_rate") == "auto" and not choose_learning_rate(self):
            return self  # Ctrl-C during the step-size search
        show = self.settings.get("progress", True) if progress is None else progress
        bars: list[Progress] = []

        def make_bar() -> Progress:
            bars.append(Progress(steps, self.method))
            return bars[-1]

        if self._controller is not None:
            if self._controller.pending(self._state):
                self._set_state(advance(self._controller, self._state))
            callbacks = [self._controller, *callbacks]
        wrapped = [self._wrap_callback(cb) for cb in callbacks]
        before, compiled_before = self._state, stats()
        feeder = None if self._plan is None else self._plan.feeder
        if feeder is not None:
            feeder.extend(self.steps + steps)  # read ahead no further than this run goes
        report, started = None, time.perf_counter()
        try:
            state, report = self.engine.run(
                self._state, self.data, self.key, steps, callbacks=wrapped,
                progress=make_bar if (show and steps > 0) else None,
                feed=feed if feed is not None or self._plan is None else self._plan.feed,
                max_seconds=max_seconds, history=self.hist)
        finally:
            for bar in bars:   # a run that stopped because it was done ends at 100%
                bar.close(finished=report is not None and report.stopped_by in (None, "callback"))
            if feeder is not None:
                feeder.close()  # stops the prefetch thread; the stream resumes at the next step
        self._absorb(state, report)
        # the rest of the run's time: the callbacks' and the schedule's host work (and compiling it)
        self.timings["control_s"] += max(time.perf_counter() - started - report.compile_s - report.run_s, 0.0)
        self.timings["compilations"] += (stats() - compiled_before).compilations
        after_run(self, callbacks, before, report.stopped_by)
        if report.error is not None:
            raise_with_fit(report.error, self)
        return self

    def _wrap_callback(self, cb: Callable) -> Callable:
        def call(state: EngineState, losses: np.ndarray, i: int) -> EngineState | None:
            self._set_state(state)
            cb(self, losses, i)
            return self._state if self._state is not state else None  # a callback may move the state on

        call.every = getattr(cb, "every", 1)  # type: ignore[attr-defined]
        return call

    def _set_state(self, state: EngineState) -> None:
        if state is not self._state:
            self._state = state
            self._cache.clear()

    def _absorb(self, state: EngineState, report: RunReport) -> None:
        self._set_state(state)
        self._hist.append(report.losses)
        self.timings["compile_s"] += report.compile_s
        self.timings["run_s"] += report.run_s
        self.timings["steps"] += report.steps
        self.interrupted = report.stopped_by in ("callback", "interrupt")
        self.message = report.message

    def _use_plan(self, plan: Any) -> None:
        self._plan = plan
        if plan.per_row:
            self.data_note = (f"per-row deterministic site(s) {[n for n in plan.per_row if n in self.logdensity.deterministic_names]} "
                          f"are left out of draws and summaries of this minibatch fit (they would hold "
                          f"N values per draw); compute them from fit.sample() on the rows you need")

    @property
    def epochs(self) -> float:
        """Passes over the data so far (fractional); a full-batch step is one pass.

        Examples
        --------
        >>> import numpy as np
        >>> import variational as vi
        >>> def normal_mean(y):
        ...     vi.Normal("y", vi.Normal("mu", 0, 1), 1, observed=y)
        >>> vi.fit(normal_mean, {"y": np.zeros(100)}, batch_size=10, steps=25, progress=False).epochs
        2.5
        """
        ds = self._state.data_state
        if hasattr(ds, "epoch"):
            return float(ds.epoch) + float(ds.pos) / float(ds.rows)
        return float(self.steps)

    def refine(self, steps: int, *, callbacks: Sequence[Callable] = (), progress: bool | None = None) -> Self:
        """Continue the optimisation for ``steps`` more steps (optimiser state kept).

        Examples
        --------
        >>> import variational as vi
        >>> def model():
        ...     vi.Normal("x", 0, 1)
        >>> fit = vi.fit(model, steps=100, progress=False).refine(100)
        >>> len(fit.hist)
        200
        """
        was = bool(getattr(self, "converged", False))
        self._run(steps, callbacks=callbacks, progress=progress)
        if self.schedule is not None and not self.interrupted and self.steps > 0:
            report_schedule(self)
            if was and not self.converged:   # say why
                note(self, f"fit.refine({steps}) cleared converged: the answer had converged, but the stages "
                           f"since compared it again at a lower learning rate and {self.message.split(': ', 1)[-1]}")
        return self

    def save(self, path: Any) -> Any:
        """Save the fit to one ``.npz`` file (atomically); :func:`variational.load` reads it back.

        Stores parameters, optimiser state, loss history, random key and settings (no code).

        Examples
        --------
        >>> import os, tempfile
        >>> import variational as vi
        >>> def model():
        ...     vi.Normal("x", 0, 1)
        >>> path = os.path.join(tempfile.mkdtemp(), "fit.npz")
        >>> _ = vi.fit(model, steps=100, progress=False).save(path)
        >>> len(vi.load(path, model).hist)
        100
        """
        return save(self, path)

    @property
    def learning_rate(self) -> float | None:
        """The current learning rate (after any automatic choice or reduction)."""
        return learning_rate(self._state)

    # -- state ---------------------------------------------------------------------------------
    @property
    def state(self) -> EngineState:
        """The engine state (parameters, optimiser state, step and skip counters)."""
        return self._state

    @property
    def params(self) -> Any:
        """The variational parameters of the reported approximation (with the adaptive schedule an
        average of iterates; the optimiser's own iterate is ``fit.state.params``), in the family's
        plain form (a custom guide's: constrained, named as the guide names them)."""
        p = self._answer_params
        if self.family.user_params is not None:
            return self.family.user_params(p)
        return p

    @property
    def _answer_params(self) -> Any:
        """The raw parameter pytree of the reported approximation (the family's own form)."""
        return answer(self._state)

    @property
    def logdensity(self) -> LogDensity:
        """The model as a log density, with the model's parameters (if any) at their fitted values."""
        ld = self._logdensity
        if not ld.params:
            return ld
        if "bound_logdensity" not in self._cache:
            self._cache["bound_logdensity"] = ld.bind(self._answer_params[MODEL])
        return self._cache["bound_logdensity"]

    @property
    def model_params(self) -> dict[str, Any]:
        """The model's own parameters (``numpyro.param`` sites, network weights), constrained.

        The same values as ``fit.params["model"]``; empty when the model declares none.

        Examples
        --------
        >>> import numpyro, numpyro.distributions as dist
        >>> import variational as vi
        >>> def model(y):
        ...     shift = numpyro.param("shift", 0.0)
        ...     numpyro.sample("y", dist.Normal(shift, 1.0), obs=y)
        >>> fit = vi.fit(model, {"y": [1.0, 2.0, 3.0]}, steps=2000, learning_rate=0.05, progress=False)
        >>> round(float(fit.model_params["shift"]), 2)    # maximum likelihood: the mean
        2.0
        """
        if not self._logdensity.params:
            return {}
        return self._logdensity.params.shown(self._answer_params[MODEL])

    @property
    def hist(self) -> np.ndarray:
        """Loss (negative ELBO estimate) per step."""
        return np.concatenate(self._hist) if self._hist else np.empty(0)

    @property
    def steps(self) -> int:
        """Number of optimisation steps done."""
        return int(self._state.step)

    @property
    def grad_evals(self) -> int:
        """Gradients of the log density evaluated to reach this answer.

        One per draw per step for the stochastic methods (``steps * num_particles``; SVGD: per
        particle), plus those of the fit it started from (``init=``); a direct method's own
        count (a Hessian-vector product counts as two).
        """
        if self.solution is not None:
            return int(self.solution.grad_evals)
        per_step = self.family.options.get("n_particles") or self.settings.get("num_particles", 1)
        return int(self.steps) * int(per_step) + int(self.init_grad_evals)

    @property
    def skipped_steps(self) -> int:
        """Number of steps skipped because their loss or gradient was not finite."""
        return int(self._state.skipped)


def after_run(fit: Any, callbacks: Sequence[Any], before: EngineState, stopped_by: str | None) -> None:
    """Report what a run did: convergence, skipped steps, learning-rate reductions."""
    rules = [cb for cb in callbacks if hasattr(cb, "converged_at")]
    fired = [cb for cb in rules if cb.converged_at is not None and cb.converged_at == fit.steps]
    if stopped_by == "callback" and fired:
        fit.converged, fit.interrupted = True, False
        fit.message = fired[0].message
    elif rules:
        fit.converged = False
    skipped = fit.skipped_steps - int(before.skipped)
    cut = _reductions(fit.state) - _reductions(before)
    if skipped:
        note(fit, f"{skipped} step(s) had a non-finite loss or gradient and were skipped "
                  f"(the parameters kept their last finite values); {fit.skipped_steps} in all")
    if cut:
        note(fit, f"after {BACKOFF_AFTER} non-finite steps in a row (or in {BACKOFF_WINDOW} steps) the "
                  f"fit went back to its best parameters so far and multiplied the learning rate "
                  f"by {BACKOFF_FACTOR:g}, "
                  f"{cut} time(s); the learning rate is now {learning_rate(fit.state):.4g}")


def run(fit: Any, steps: int | None, *, max_steps: int = DEFAULT_MAX_STEPS,
        callbacks: Sequence[Any] = (), checkpoint: Any = None, checkpoint_every: int | None = None,
        max_seconds: float | None = None) -> Any:
    """Run ``fit`` to ``steps`` steps in all (``None``: until its convergence rule fires, up to
    ``max_steps`` steps and ``max_seconds`` seconds).

    The rule is the adaptive schedule's (:class:`~variational.engine.schedule.AnswerConvergence`:
    the reported answer has stopped moving) when the fit has the schedule, else Stan's ELBO rule.

    With ``checkpoint``, the fit is saved at the end, also when a data error stops it (the
    error is raised after the save). A save that fails (full disk, permissions) does not lose
    the fit: it is returned with a warning that names the path and the error.
    """
    cbs = list(callbacks)
    rule = None
    scheduled = status(fit.state) is not None
    if steps is None:
        total = whole_number("max_steps", max_steps, 1)
        kind = AnswerConvergence if scheduled else ELBOConvergence
        rule = next((cb for cb in cbs if isinstance(cb, kind)), None)
        if rule is None:
            rule = kind()
            cbs.insert(0, rule)  # first: it reads the state the schedule left at a window end
    else:
        total = whole_number("steps", steps)
    if checkpoint is not None and checkpoint_every is not None:
        cbs.append(Checkpointer(checkpoint, checkpoint_every))
    try:
        if total > fit.steps:  # (steps=0 builds the fit without compiling; refine compiles)
            fit._run(total - fit.steps, callbacks=cbs, max_seconds=max_seconds)
    except VariationalError as e:
        if checkpoint is not None and getattr(e, "fit", None) is fit:
            save_or_warn(fit, checkpoint)
        raise
    fired = any(getattr(cb, "converged_at", None) == fit.steps for cb in cbs)  # a user's rule
    if scheduled and rule is None and not fired and not fit.interrupted and fit.steps > 0:
        report_schedule(fit)
    elif rule is not None and not fit.converged and not fit.interrupted:
        _report_budget(fit, rule, total)
    if checkpoint is not None:
        save_or_warn(fit, checkpoint)
    return fit


def _report_budget(fit: Any, rule: Any, total: int) -> None:
    budget = (f"max_seconds reached at step {fit.steps}" if fit.message.startswith("time budget")
              else f"max_steps={total} reached")
    if isinstance(rule, AnswerConvergence):
        fit.message = f"{budget} before the answer converged: " + describe(status(fit.state))
    else:
        fit.message = f"{budget} before the ELBO converged"
        if rule.last:
            fit.message += (f" (relative change: mean {rule.last['mean']:.3g}, median "
                            f"{rule.last['median']:.3g}, tolerance {rule.tolerance:g})")
    note(fit, fit.message + "; run longer with fit.refine(steps) or raise max_steps")


def choose_learning_rate(fit: Any) -> bool:
    """Run :func:`search_learning_rate` and set the fit's learning rate to its choice (reported).

    Returns False when Ctrl-C interrupted the search (the fit is then marked interrupted).
    """
    started = time.perf_counter()
    try:
        lr, table = search_learning_rate(fit)
    except KeyboardInterrupt:
        fit.interrupted, fit.message = True, "interrupted during the learning-rate search, at step 0"
        return False
    finally:   # the trials' time (with their compilation), so that the timings add up
        fit.timings["step_size_s"] += time.perf_counter() - started
    fit._set_state(with_learning_rate(fit.state, lr))
    fit.settings["learning_rate"] = lr
    fit.lr_search = table
    tried = ", ".join(f"{k:g}: {v:.6g}" for k, v in table.items())
    note(fit, f"learning_rate='auto' chose {lr:g} (loss where a {LR_TRIAL_STEPS}-step trial ended, "
              f"by learning rate: {tried})", warn=False)
    return True
