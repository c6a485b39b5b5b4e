"""The verdict: are the approximation's own summaries (``fit.mean``, ``fit.std``, ``fit.sample``)
close to the posterior?

Pareto k-hat alone does not answer that. A low k-hat says that importance weighting *can*
correct q, not that q needs no correction: q's means may sit half a standard deviation from the
posterior's while k-hat is 0.2 (a tight, slightly skewed posterior). A high k-hat (above 0.7) says
that the weights cannot be trusted, which in many dimensions happens even when every marginal
mean and sd is close (a mean-field fit of a hierarchical model). So the verdict combines:

- **k-hat** of the importance weights ``p(x, z) / q(z)`` over draws of q;
- **the moment check**: the means and sds of the same draws weighted by their smoothed
  importance weights, against q's own, in q's standard deviations per coordinate (beyond twice
  their Monte Carlo error). Below k-hat 0.7 the weighted moments are reliable, and this is the
  test of what q reports; above it they only hint at where q is off;
- **the curvature check** (Gaussian families, where k-hat is high): q's standard deviations
  against those of the Gaussian with the log density's mean curvature over a few draws of q
  (a Laplace approximation around q). A mean-field optimum matches each coordinate's *conditional* spread;
  where the posterior correlates a coordinate with others, its marginal sd is larger, and the
  ratio says by how much. A Gaussian with correlations (full-rank, low-rank, structured) should
  match the *marginal* sds of that curvature: in many dimensions k-hat exceeds 0.7 for such fits
  even when every marginal is close, and the curvature tells these apart from fits that are off;
- **convergence** of the answer (the adaptive schedule's rule, or the loss's trend) and the
  steps skipped for non-finite values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .hierarchy import reparam_hint

__all__ = ["MomentCheck", "moment_check", "CurvatureCheck", "curvature_check", "coordinate_names", "verdict",
           "SHIFT_GOOD", "SHIFT_BAD", "SD_GOOD", "SD_BAD", "KHAT_GOOD", "KHAT_BAD", "CURVATURE_DRAWS",
           "POINT"]

#: ``method`` of a fit with no latent variables (its parameters are point estimates)
POINT = "maximum likelihood"

KHAT_GOOD = 0.5
KHAT_BAD = 0.7
SHIFT_GOOD = 0.2        # q sds: a mean this close to the importance-weighted one is "close"
SHIFT_BAD = 0.5
SD_GOOD = (0.8, 1.25)   # ratio of the importance-weighted (or curvature) sd to q's
SD_BAD = (0.5, 2.0)
CURVATURE_MAX_DIM = 2000  # the curvature check forms a dense D x D Hessian
CURVATURE_DRAWS = 8       # draws of q its Hessian is averaged over
MEDIAN_SD = 1.3           # "good" needs the median weighted sd / q sd within 1/1.3 - 1.3
SHIFT_OFF = 1.0           # "ok" is refused when a weighted mean is this many q sds off
MCSE_GOOD = 0.1           # DADVI: largest Monte Carlo error of a mean, in sds, for "good"
KHAT_NO_MEAN = 1.0        # DADVI: k-hat from which the importance weights have no mean


@dataclass(frozen=True)
class MomentCheck:
    """How far the importance-weighted moments are from q's own (unconstrained space).

    Attributes
    ----------
    shift : float
        Largest ``|weighted mean - q mean| / q sd`` over the coordinates, less twice its Monte
        Carlo error (0 when every shift is within the noise).
    shift_at : str
        The coordinate where it is largest (``"alpha[3]"``).
    sd_ratio : float
        The ``weighted sd / q sd`` farthest from 1 (in log scale) beyond its noise.
    sd_at : str
        Its coordinate.
    median_sd_ratio : float
        The median of ``weighted sd / q sd``.
    """

    shift: float
    shift_at: str
    sd_ratio: float
    sd_at: str
    median_sd_ratio: float

    @property
    def close(self) -> bool:
        return self.shift <= SHIFT_GOOD and SD_GOOD[0] <= self.sd_ratio <= SD_GOOD[1]

    @property
    def far(self) -> bool:
        return self.shift > SHIFT_BAD or not SD_BAD[0] <= self.sd_ratio <= SD_BAD[1]


def coordinate_names(layout: Sequence[Any]) -> list[str]:
    """Names of the flat unconstrained coordinates: ``"mu"``, ``"alpha[0]"``, ``"L[1,2]"``."""
    out = []
    for s in layout:
        shape = tuple(s.unconstrained_shape)
        if not shape:
            out.append(s.name)
            continue
        for idx in np.ndindex(*shape):
            out.append(f"{s.name}[{','.join(str(i) for i in idx)}]")
    return out


def moment_check(z: Any, lw: np.ndarray, names: Sequence[str]) -> MomentCheck:
    """Compare the importance-weighted means and sds of draws ``z`` of q with their plain ones.

    Parameters
    ----------
    z : array (n, D)
        Draws of q (unconstrained).
    lw : array (n,)
        Their normalised (smoothed) log importance weights.
    names : sequence of str
        The coordinates' names.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(4000, 1))
    >>> c = moment_check(z, np.full(4000, -np.log(4000)), ["x"])  # equal weights: q is p
    >>> c.close
    True
    """
    z = np.asarray(z, np.float64)
    n = z.shape[0]
    w = np.exp(np.asarray(lw, np.float64) - np.max(lw))
    w /= w.sum()
    q_mean, q_sd = z.mean(0), z.std(0)
    m = w @ z
    dev2 = (z - m) ** 2
    v = w @ dev2
    # Monte Carlo errors of the differences from the plain moments of the same draws
    se_m = np.sqrt(((w - 1.0 / n) ** 2) @ dev2)
    se_v = np.sqrt(((w - 1.0 / n) ** 2) @ (dev2 - v) ** 2)
    shift = np.maximum(np.abs(m - q_mean) - 2.0 * se_m, 0.0) / q_sd
    ratio = np.sqrt(v) / q_sd
    log_ratio = np.log(np.maximum(ratio, 1e-300))
    excess = np.maximum(np.abs(log_ratio) - se_v / np.maximum(v, 1e-300), 0.0)  # 2 se of log sd
    i, j = int(np.argmax(shift)), int(np.argmax(excess))
    sd = float(np.exp(np.sign(log_ratio[j]) * excess[j]))
    return MomentCheck(float(shift[i]), names[i], sd, names[j], float(np.median(ratio)))


@dataclass(frozen=True)
class CurvatureCheck:
    """q's sds against those implied by the log density's curvature (see :func:`curvature_check`).

    Attributes
    ----------
    ratio : float
        The smallest ``q sd / Laplace sd``.
    at : str
        Its coordinate.
    worst : tuple of (str, float)
        The three smallest ratios and their coordinates.
    close : int
        Coordinates whose ratio is within ``SD_GOOD``.
    n : int
        Coordinates in all.
    largest : float
        The largest ``q sd / Laplace sd``.
    """

    ratio: float
    at: str
    worst: tuple
    close: int
    n: int
    largest: float = float("nan")


def curvature_check(hessian: Any, z: Any, q_sd: np.ndarray, names: Sequence[str]) -> CurvatureCheck | None:
    """q's sds against the Laplace sds of the log density's curvature around q (None when it
    cannot be formed).

    ``hessian(z)`` is the mean Hessian of the log joint on all data over the draws ``z (k, D)``
    of q; the Laplace sds are ``sqrt(diag(H^-1))`` with ``H`` its negative, the curvature a
    mean-field optimum matches on average (at q's mean alone a hierarchical model's funnel can
    make it indefinite). None when the dimension is over ``CURVATURE_MAX_DIM`` or ``H`` is not
    positive definite.

    Examples
    --------
    >>> import numpy as np
    >>> H = -np.array([[1.0, 0.9], [0.9, 1.0]]) / 0.19      # a N(0, [[1, .9], [.9, 1]]) log density
    >>> c = curvature_check(lambda z: H, np.zeros((1, 2)), np.sqrt([0.19, 0.19]), ["a", "b"])
    >>> round(c.ratio, 4), c.at                              # sqrt(1 - 0.9^2): the conditional sd
    (0.4359, 'a')
    """
    d = int(np.shape(z)[-1])
    if d > CURVATURE_MAX_DIM:
        return None
    h = -np.asarray(hessian(z), np.float64)
    h = 0.5 * (h + h.T)
    try:
        chol = np.linalg.cholesky(h)
    except np.linalg.LinAlgError:
        return None
    inv_chol = np.linalg.solve(chol, np.eye(d))
    laplace_sd = np.sqrt(np.sum(inv_chol ** 2, axis=0))
    ratio = np.asarray(q_sd, np.float64) / laplace_sd
    order = np.argsort(ratio)
    close = int(np.sum((ratio >= SD_GOOD[0]) & (ratio <= SD_GOOD[1])))
    return CurvatureCheck(float(ratio[order[0]]), names[order[0]],
                          tuple((names[i], float(ratio[i])) for i in order[:3]), close, d, float(ratio[order[-1]]))


def verdict(khat: float, converged: bool, convergence: str, skipped: int, steps: int, method: str,
            moments: MomentCheck | None, curvature: CurvatureCheck | None, centred: Sequence[Any] = (),
            direct: dict | None = None) -> tuple[str, str]:
    """``(status, text)``: "good", "ok" (usable with care) or "bad", and why in plain words.

    ``centred``: the model's centred hierarchies (:func:`variational.posterior.hierarchy.centred_sites`);
    ``direct``: what a direct method reports of itself (``{"weighted": bool, "khat": float,
    "mcse": float}``: whether its answer is importance-weighted, the k-hat its own importance
    sampling found, and DADVI's largest Monte Carlo error of a mean in sds).
    """
    if not np.isfinite(khat):
        if method == POINT:
            status, parts = "good", ["the model has no latent variables, only parameters: the fit is their "
                                     "maximum-likelihood point estimate and k-hat does not apply"]
        elif np.isnan(khat):
            status, parts = "ok", [f"k-hat is not available for method '{method}' (no density q); check against vi.nuts"]
        else:
            status, parts = "bad", ["no draw of q has a finite log density under the model: the fit failed"]
    elif direct is not None and (direct.get("weighted") and khat < KHAT_BAD or "mcse" in direct):
        status, parts = _direct(khat, moments, direct)
    elif direct is not None and direct.get("khat", -np.inf) >= KHAT_BAD:   # its own weights failed
        status, parts = _unweighted(method, direct["khat"], khat, moments)
    elif khat < KHAT_BAD:
        status, parts = _low_khat(khat, moments)
        if curvature is not None and curvature.ratio < SD_BAD[0]:  # q far too narrow somewhere
            status = "bad"
            parts.append(_narrow(curvature))
    else:
        status, parts = _high_khat(khat, method, moments, curvature)
    status = _width_and_funnel(status, parts, khat, moments, centred)
    if not converged:
        status = "bad" if status == "bad" else "ok"
        parts.append(convergence)
    if skipped:
        frac = skipped / max(steps, 1)
        if frac > 0.01:
            status = "bad" if status == "bad" else "ok"
        parts.append(f"{skipped} step(s) ({100 * frac:.1f}%) were skipped for non-finite values; "
                     f"a lower learning rate may help")
    return status, "; ".join(parts) + "."


def _width_and_funnel(status: str, parts: list, khat: float, c: MomentCheck | None, centred: Sequence[Any]
                      ) -> str:
    """Refuse "good" to sds too wide or narrow overall, "ok" to a mean more than 1 sd off, and
    both to a centred hierarchy in its funnel regime (naming the sites to non-centre)."""
    if c is not None and status == "good" and not 1 / MEDIAN_SD <= c.median_sd_ratio <= MEDIAN_SD:
        status = "ok"
        side = "wider" if c.median_sd_ratio < 1 else "narrower"
        parts.append(f"but q's sds are {side} than the importance-weighted ones (median weighted sd / "
                     f"q sd {c.median_sd_ratio:.2f}, allowed {1 / MEDIAN_SD:.2f}-{MEDIAN_SD}): fit.std "
                     f"is off by that much; fit.sample(n, importance=True) corrects it")
    if c is not None and status == "ok" and c.shift > SHIFT_OFF:
        status = "bad"
        parts.append(f"the importance weights move the mean of {c.shift_at} by {c.shift:.2f} q-sd (more "
                     f"than {SHIFT_OFF:g}): its mean is not usable")
    funnel = [x for x in centred if x.funnel]
    if funnel:
        if khat >= KHAT_GOOD or status != "good":
            status = "bad"
        parts.append(reparam_hint(funnel))
    return status


def _direct(khat: float, c: MomentCheck | None, direct: dict) -> tuple[str, list[str]]:
    """A direct method judged by what it reports: Laplace's and Pathfinder's importance-weighted
    answer (reliable below k-hat 0.7), DADVI's Monte Carlo error (its k-hat says little: its
    fixed draws make the weights nearly constant)."""
    if "mcse" in direct:
        err = direct["mcse"]
        text = (f"DADVI's Monte Carlo error of the means is at most {err:.2f} sd (allowed "
                f"{MCSE_GOOD}) over a new choice of its fixed draws")
        if err > MCSE_GOOD:
            return "ok", [text + "; more draws (num_draws=) make the answer precise"]
        if khat < KHAT_BAD and c is not None and c.far:
            return "bad", [text, f"but importance weighting (k-hat {khat:.2f}) {_moved(c)}: the "
                                 f"linear-response Gaussian is off by that much; check with vi.nuts"]
        if khat >= KHAT_NO_MEAN:   # (a Student-t posterior: k-hat 3.7, sds 0.72 of the truth)
            return "ok", [text, f"but the importance weights of its Gaussian have k-hat {khat:.2f} >= "
                                f"{KHAT_NO_MEAN:g} (their mean does not exist): the posterior has far heavier "
                                f"tails than the Gaussian somewhere, so its sds can be too small; check "
                                f"important quantities with vi.nuts"]
        return "good", [text + f", and the linear-response covariance is exact on a Gaussian posterior "
                               f"(k-hat {khat:.2f} < {KHAT_NO_MEAN:g} is not a test of DADVI: its "
                               f"weights vary little)"]
    khat = max(khat, direct.get("khat", -np.inf))    # this diagnosis's draws, or the solver's own
    text = (f"the reported answer is importance-weighted, and the weights are reliable (k-hat "
            f"{khat:.2f} < {KHAT_BAD})")
    if c is not None and c.far:
        return "ok", [text + f", but they move q far ({_moved(c)}): the corrected answer rests on "
                             f"few draws; check important quantities with vi.nuts"]
    if khat >= KHAT_GOOD:   # (a Student-t posterior: weighted sds 0.68 of the truth at k-hat 0.69)
        return "ok", [text + f", but weights with k-hat above {KHAT_GOOD} underestimate what q misses "
                             f"(its tails: the corrected sds can still be too small); check important "
                             f"quantities with vi.nuts"]
    return "good", [text + ": fit.mean, fit.std and fit.sample are close to the posterior"]


def _unweighted(method: str, own: float, khat: float, c: MomentCheck | None) -> tuple[str, list[str]]:
    """Laplace or Pathfinder whose own importance sampling found k-hat >= 0.7: the answer it
    reports is q's unweighted draws. "bad", unless this diagnosis's fresh draws have k-hat
    below 0.7 and their weights leave q's means and sds in place ("ok"): k-hat is noisy near
    0.7 (Laplace on gp_pois_regr: 0.74 and 0.54 on two sets of draws, q accurate), but a second
    k-hat just under 0.7 with weights that move q is no reprieve (Pathfinder on
    earnings-earn_height: 0.89 and 0.70, sds 0.06 of the reference)."""
    head = (f"{method}'s own importance sampling found k-hat {own:.2f} >= {KHAT_BAD}, so it reports "
            f"q's unweighted draws")
    if khat < KHAT_BAD and c is not None and c.close:
        return "ok", [head + f"; this diagnosis's draws give k-hat {khat:.2f} and their weights leave q's "
                             f"means and sds in place (largest shift {c.shift:.2f} q-sd, sd ratio "
                             f"{c.sd_ratio:.2f}), so q is usable, but its tails may be too light; check "
                             f"important quantities with vi.nuts"]
    moved = f"; importance weighting {_moved(c)}" if c is not None and (c.far or not c.close) else ""
    return "bad", [head + f" (here {khat:.2f}), and q differs from the posterior in its joint shape{moved}: "
                          f"do not trust its sds or tails; try method='fullrank_advi' or check with vi.nuts"]


def _low_khat(khat: float, c: MomentCheck | None) -> tuple[str, list[str]]:
    if c is None:
        return ("good" if khat < KHAT_GOOD else "ok"), [f"k-hat {khat:.2f} < {KHAT_BAD}"]
    if c.close and khat < KHAT_GOOD:
        return "good", [f"k-hat {khat:.2f} < {KHAT_GOOD}, and importance weighting leaves q's means and "
                        f"sds in place (largest shift {c.shift:.2f} q-sd, sd ratio {c.sd_ratio:.2f}): "
                        f"fit.mean, fit.std and fit.sample are close to the posterior"]
    if c.close:  # weights with a tail this heavy see too little of what q misses to vouch for it
        return "ok", [f"k-hat {khat:.2f} is between {KHAT_GOOD} and {KHAT_BAD}: importance weighting "
                      f"leaves q's means and sds in place (largest shift {c.shift:.2f} q-sd, sd ratio "
                      f"{c.sd_ratio:.2f}), but weights with a tail this heavy underestimate what q "
                      f"misses; the corrected draws, fit.sample(n, importance=True), are the safer "
                      f"summary"]
    moved = _moved(c)
    status = "bad" if c.far else "ok"
    return status, [f"k-hat {khat:.2f} < {KHAT_BAD}, so importance weighting can correct q, and it "
                    f"{moved}: q's own summaries (fit.mean, fit.std, fit.sample) are off by that much; "
                    f"use the corrected draws, fit.sample(n, importance=True), or a richer family"]


def _narrow(curv: CurvatureCheck) -> str:
    worst = ", ".join(f"{n} {1 / r:.1f}" for n, r in curv.worst if r < SD_GOOD[0])
    return (f"the posterior's curvature around q puts {curv.close} of {curv.n} sds within "
            f"{SD_GOOD[0]}-{SD_GOOD[1]} of q's, but the sd of {curv.at} is {1 / curv.ratio:.1f} times "
            f"q's (sd / q sd: {worst}): a mean-field fit leaves out the correlations that widen them "
            f"(in a hierarchical model, typically between the group-level means and scales and the "
            f"group effects), so do not trust these sds, joint draws or functions of several "
            f"parameters; try method='fullrank_advi' or check with vi.nuts")


def _moved(c: MomentCheck) -> str:
    parts = []
    if c.shift > SHIFT_GOOD:
        parts.append(f"moves the mean of {c.shift_at} by {c.shift:.2f} q-sd")
    if not SD_GOOD[0] <= c.sd_ratio <= SD_GOOD[1]:
        parts.append(f"scales the sd of {c.sd_at} by {c.sd_ratio:.3g}" if np.isfinite(c.sd_ratio)
                     else f"puts all weight on a few draws (the sd of {c.sd_at} changes without bound)")
    return " and ".join(parts) or "moves q's moments"


#: Gaussian families with correlations: their sds should match the curvature's marginal sds
CORRELATED = ("fullrank_advi", "lowrank_advi", "structured")
#: share of coordinates whose q sd / Laplace sd must be within SD_GOOD for a correlated fit's "ok"
CURVATURE_CLOSE = 0.9
#: and every coordinate within these: the curvature is taken where q is, so it widens a scale
#: parameter's sd less than the posterior does (a 403-dimensional stochastic volatility fit: q sd /
#: curvature sd 0.52 at sigma, where q's sd was 0.08 of NUTS's and its mean 1.2 NUTS sds off)
CURVATURE_RANGE = (2 / 3, 1.5)


def _high_khat(khat: float, method: str, c: MomentCheck | None, curv: CurvatureCheck | None
               ) -> tuple[str, list[str]]:
    head = (f"k-hat {khat:.2f} >= {KHAT_BAD}: q differs from the posterior in its joint shape, and "
            f"importance weighting cannot correct it")
    if curv is not None and curv.ratio < SD_BAD[0]:
        return "bad", [head, _narrow(curv)]
    tally = "" if curv is None else (f"the posterior's curvature around q puts {curv.close} of {curv.n} sds "
                                     f"within {SD_GOOD[0]}-{SD_GOOD[1]} of q's")
    if curv is not None and method == "advi":  # a mean-field family: compare with the curvature around q
        return "ok", [head, f"for a mean-field fit (for example of a hierarchical model) this is "
                            f"expected: it leaves out the correlations between parameters, so joint "
                            f"draws and functions of several parameters are off, while each "
                            f"parameter's own mean and sd are usable ({tally}; the smallest ratio "
                            f"is {curv.ratio:.2f}, at {curv.at}); check important ones with "
                            f"method='fullrank_advi' or vi.nuts"]
    if (curv is not None and method in CORRELATED and CURVATURE_RANGE[0] <= curv.ratio
            and curv.largest <= CURVATURE_RANGE[1] and curv.close >= CURVATURE_CLOSE * curv.n
            and (c is None or not c.far)):
        return "ok", [head, f"in {curv.n} dimensions this is common for a Gaussian fit whose marginals "
                            f"are close: {tally} (marginal sds of the curvature averaged over draws "
                            f"of q; q sd / curvature sd from {curv.ratio:.2f} at {curv.at} to "
                            f"{curv.largest:.2f}), and the importance weights move no mean or sd far, so "
                            f"each parameter's mean and sd are usable while tails and joint draws are "
                            f"not vouched for; check important ones with vi.nuts"]
    hint = ""
    if c is not None and c.far:
        hint = f" (the weights, unreliable as they are, {_moved(c)})"
    richer = "method='flow'" if method == "fullrank_advi" else "method='fullrank_advi', 'flow'"
    return "bad", [head + hint, f"do not trust its sds or tails; try a richer family ({richer}) or "
                                f"check with vi.nuts"]
