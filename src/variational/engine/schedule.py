"""The adaptive step-size schedule: decrease on stationarity, report iterate averages, stop on the answer.

Constant-step stochastic optimisation does not converge to the optimum: its iterates end up
jittering around it, by about one learning rate per step. The schedule runs the optimisation
in *stages* (after Stan's decreasing step-size sequence and the adaptive decrease on detected
stationarity of Welandawe et al. 2024, "Robust, automated, and accurate black-box variational
inference"):

1. Each step adds its parameters to a window sum inside the compiled loop; every ``WINDOW``
   steps the window's average iterate is stored, and every ``BLOCK`` windows the host
   (:mod:`.controller`) summarises them as q's means and log standard deviations in the
   unconstrained space (exactly for Gaussian families, from fixed draws otherwise).
2. A stage is two halves of ``half`` windows each: the first lets the iterates settle after the
   last change, the second is averaged. Its answer ``A_k`` is the average iterate of the second
   half, with a Monte Carlo standard error from the scatter of its windows (inflated for their
   autocorrelation).
3. ``A_k`` is compared with the last stage's answer, coordinate by coordinate in q's standard
   deviations: a mean or a log standard deviation may move by ``tol``, or by what the two
   answers' Monte Carlo errors allow (about the largest of ``2 D`` normal deviates).
   Within ``stationary`` times that, the iterates are stationary at this learning rate: the
   next stage lowers it by ``factor`` (the first time, the family is *rewhitened* instead, see
   below). When the answers are too noisy to compare (Monte Carlo error above ``noisy * tol_se``)
   the rate is lowered as well; otherwise it is kept (the answer is still on its way).
4. The answer has **converged** when it moved by no more than ``tol`` (or the noise) when the
   learning rate was lowered, and its Monte Carlo error is below ``tol_se``. A stationary stage
   whose error is larger doubles the windows per half (up to ``max_half``).
5. A stationary stage starts the next from its answer ``A_k`` (the average, not the last noisy
   iterate), a moving one from the iterate; the optimiser's state restarts. Families that can
   (the Gaussians) are rewhitened at every stage from the first stationary one on: their
   trained parameters restart at the origin and unit scale of q itself, so that a learning rate
   is a fraction of q's own standard deviation in every direction (the first is the travelling
   rate in q's median sds, at most ``whitened_lr``; the smallest ``min_lr``).

The state is part of the engine state (a checkpoint holds it; a resumed fit continues exactly).
``fit.params``, ``fit.mean`` and draws use the reported average (:func:`answer`); the optimiser
continues from its own iterate (``fit.state.params``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Schedule", "ScheduleSpec", "make_spec", "answer", "status", "describe", "WINDOW", "BLOCK"]

_tree = jax.tree_util.tree_map
WINDOW = 100  # steps per window
BLOCK = 4     # windows per call of the controller (halves are multiples of it)


class Schedule(NamedTuple):
    """State of the schedule, carried in the optimiser state (:class:`~.control.ScaledState`).

    The compiled loop writes ``win_sum``, ``win_n``, ``buf`` and ``buf_n``; the host controller
    reads the windows and writes the rest.
    """

    win_sum: Any          # sum of the iterates of the current window
    win_n: jax.Array      # int32: iterates in it
    buf: Any              # the last BLOCK window averages, stacked on a leading axis
    buf_n: jax.Array      # int32: windows in buf not yet read by the host
    stage: jax.Array      # int32: completed stages
    half_len: jax.Array   # int32: windows per half in this stage
    half_n: jax.Array     # int32: windows in the current half
    second: jax.Array     # bool: the current half is the stage's second (averaged) half
    half_mean: Any        # mean of the window averages of the current half
    y_ref: jax.Array      # summary of the half's first window, and the window summaries of the
    y_win: jax.Array      # half as deviations from it, (max_half, 2 D)
    avg: Any              # the reported average
    avg_ok: jax.Array     # bool
    stage_y: jax.Array    # summary of the last stage's answer, and its standard error
    stage_se: jax.Array
    stage_ok: jax.Array   # bool
    whitened: jax.Array   # bool
    lowered: jax.Array    # bool: this stage runs at a lower learning rate than the last
    done: jax.Array       # bool: the last two stage answers agreed (converged)
    done_at: jax.Array    # int32: step of the last convergence, -1 if none
    change: jax.Array     # largest change between the last two stage answers (q sds) ...
    allowed: jax.Array    # ... what it was compared with (tolerance or noise allowance)
    mcse: jax.Array       # largest Monte Carlo standard error of the last stage answer (q sds)


@dataclass(frozen=True)
class ScheduleSpec:
    """Settings of the schedule and the family functions it uses.

    Attributes
    ----------
    summary : callable
        ``params -> (2 D,)``: q's means and log standard deviations.
    rewhiten : callable or None
        The family's rewhitening (None: the family keeps its parameterisation).
    reset : callable
        ``params -> optimiser state``: a fresh state of the inner optimiser.
    half : int
        Windows per half at the first stage (a multiple of BLOCK; doubled when the Monte Carlo
        error is too large, up to ``max_half``).
    tol, tol_se : float
        Change between successive stage answers taken as converged, and the largest Monte
        Carlo standard error of the answer, both in q standard deviations.
    factor : float
        Learning-rate decrease per stage.
    whitened_lr, min_lr : float
        Largest learning rate of the first stage after rewhitening (q standard deviations per
        step; it is the first stage's rate in q's median sds, within these bounds), and the
        smallest learning rate after it.
    stationary : float
        Successive answers within ``stationary`` times what convergence allows count as
        stationary at this learning rate: the next stage lowers it (or rewhitens).
    noisy : float
        A stage whose answer has a Monte Carlo error above ``noisy * tol_se`` lowers the
        learning rate even when it disagrees with the last (the iterates jitter too much).
    """

    summary: Callable[[Any], jax.Array]
    rewhiten: Callable[[Any], Any] | None = None
    reset: Callable[[Any], Any] | None = None
    half: int = BLOCK
    max_half: int = 8 * BLOCK
    tol: float = 0.1
    tol_se: float = 0.05
    factor: float = 0.5
    whitened_lr: float = 0.1
    min_lr: float = 0.02
    noisy: float = 4.0
    stationary: float = 2.0

    def init(self, params: Any) -> Schedule:
        """A fresh schedule at ``params``."""
        y = jax.eval_shape(self.summary, params)
        zy = jnp.zeros(y.shape, y.dtype)
        zero = _tree(jnp.zeros_like, params)
        buf = _tree(lambda a: jnp.zeros((BLOCK,) + jnp.shape(a), jnp.result_type(a)), params)
        i0, no, f0 = jnp.int32(0), jnp.bool_(False), jnp.zeros((), y.dtype)
        return Schedule(zero, i0, buf, i0, i0, jnp.int32(self.half), i0, no, zero, zy,
                        jnp.zeros((self.max_half,) + y.shape, y.dtype), params, no, zy, zy, no, no,
                        no, no, jnp.int32(-1), f0 + jnp.inf, f0, f0 + jnp.inf)

    # -- inside the compiled loop -------------------------------------------------------------
    @staticmethod
    def accumulate(s: Schedule, params: Any) -> Schedule:
        """Add one iterate to the window sum (every step)."""
        return s._replace(win_sum=_tree(jnp.add, s.win_sum, params), win_n=s.win_n + 1)

    @staticmethod
    def is_window_end(state: Any) -> jax.Array:
        return (state.step % WINDOW == 0) & (state.opt_state.sched.win_n > 0)

    @staticmethod
    def close_window(state: Any) -> Any:
        """Store the window's average iterate in the buffer (once every WINDOW steps)."""
        s = state.opt_state.sched
        slot = s.buf_n % BLOCK
        buf = _tree(lambda b, a: b.at[slot].set(a / s.win_n.astype(a.dtype)), s.buf, s.win_sum)
        s = s._replace(win_sum=_tree(jnp.zeros_like, s.win_sum), win_n=jnp.int32(0), buf=buf,
                       buf_n=s.buf_n + 1)
        return state._replace(opt_state=state.opt_state._replace(sched=s))


def make_spec(family: Any, reset: Callable[[Any], Any], **settings: Any) -> ScheduleSpec | None:
    """The schedule of ``family`` (None for particle families, which have no density)."""
    if family.particles is not None:
        return None
    if family.mean is not None and family.std is not None:
        def summary(p: Any) -> jax.Array:
            return jnp.concatenate([family.mean(p), jnp.log(family.std(p))])
    else:
        key = jax.random.PRNGKey(20240917)

        def summary(p: Any) -> jax.Array:  # common random numbers: a smooth function of p
            z = family.draw(p, key, 256)
            return jnp.concatenate([z.mean(0), 0.5 * jnp.log(z.var(0) + 1e-30)])
    return ScheduleSpec(summary=summary, rewhiten=family.rewhiten, reset=reset, **settings)


# -- on the host --------------------------------------------------------------------------------
def _sched(state: Any) -> Schedule | None:
    return getattr(state.opt_state, "sched", None)


def answer(state: Any) -> Any:
    """The parameters the fit reports: the schedule's average when it has one, else the iterate."""
    s = _sched(state)
    if s is None or not bool(s.avg_ok):
        return state.params
    return s.avg


def status(state: Any) -> dict[str, Any] | None:
    """What the schedule has done so far (None without a schedule)."""
    s = _sched(state)
    if s is None:
        return None
    return {"stage": int(s.stage), "done": bool(s.done), "done_at": int(s.done_at),
            "change": float(s.change), "allowed": float(s.allowed), "mcse": float(s.mcse),
            "averaged": bool(s.avg_ok), "whitened": bool(s.whitened),
            "windows_per_half": int(s.half_len)}


def describe(st: dict[str, Any], tol_se: float = ScheduleSpec.tol_se) -> str:
    """The last comparison of two stage answers, in words: both tests with their thresholds,
    and which of them failed.

    Examples
    --------
    >>> describe({"stage": 5, "change": 0.382, "allowed": 0.4, "mcse": 0.111, "done": False})
    'the answer moved by 0.382 q-sd between the last two learning rates (allowed 0.4: passed), Monte Carlo error 0.111 q-sd (allowed 0.05: failed), 5 stages; the Monte Carlo error test failed'
    """
    if st["stage"] < 2:
        return (f"{st['stage']} stage done; two are needed to compare answers" if st["stage"]
                else "the iterates have not yet become stationary")
    moved, precise = st["change"] <= st["allowed"], st["mcse"] <= tol_se
    text = (f"the answer moved by {st['change']:.3g} q-sd between the last two learning rates "
            f"(allowed {st['allowed']:.3g}: {'passed' if moved else 'failed'}), Monte Carlo error "
            f"{st['mcse']:.3g} q-sd (allowed {tol_se:.3g}: {'passed' if precise else 'failed'}), "
            f"{st['stage']} stages")
    if st.get("done", True):
        return text
    failed = [name for name, ok in (("change", moved), ("Monte Carlo error", precise)) if not ok]
    if failed:
        return text + f"; the {' and the '.join(failed)} test{'s' if len(failed) > 1 else ''} failed"
    return text + "; both passed, but at an unchanged learning rate (the next stage lowers it and compares again)"
