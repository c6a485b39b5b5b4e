"""Can the approximation be trusted? Pareto k-hat, convergence, skipped steps, a verdict.

- **k-hat** (Yao et al. 2018, Vehtari et al. 2024): the shape of the generalised Pareto tail of
  the importance weights ``w = p(x, z) / q(z)`` over a few thousand draws of q, estimated by
  Pareto-smoothed importance sampling (:mod:`.psis`: ArviZ 0.x's estimator, in NumPy, without
  importing ArviZ, whatever its generation). Below 0.5 q is close to the posterior; 0.5 to 0.7 the
  draws are usable but importance correction (``fit.sample(n, importance=True)``) is advised;
  above 0.7 q misses mass that the posterior has and its moments cannot be trusted.
- **converged**: a simple relative-change rule on the loss history (see :func:`converged`).
- **skipped steps**: steps the engine did not apply because their loss or gradient was not
  finite.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from numpyro.distributions.transforms import IdentityTransform, biject_to

from ..compilation import key_of
from ..data import as_columns
from ..engine.schedule import describe
from ..errors import VariationalError, user_stacklevel
from ..families._psis import psis_log_weights
from ..model.handlers import declared_only
from .approximation import Approximation
from .hierarchy import candidate_sites, centred_sites
from .programs import CENTRED_MAX_DIM, importance_weights, verdict_programs, wants_curvature
from .verdict import (
    CURVATURE_DRAWS, KHAT_BAD, KHAT_GOOD, POINT, CurvatureCheck, MomentCheck, coordinate_names, curvature_check,
    moment_check, verdict,
)


__all__ = ["Diagnosis", "diagnose", "converged", "psis", "psis_log_weights", "resample",
           "log_joint_fn", "has_density", "verdict_checks", "mcse", "diagnose_fit", "check_draws",
           "KHAT_GOOD", "KHAT_BAD", "POINT", "MIN_PSIS_DRAWS"]

MIN_PSIS_DRAWS = 100   # fewer draws leave too few in the tail to fit a Pareto shape


# --------------------------------------------------------------------------------------------
# convergence of the objective
# --------------------------------------------------------------------------------------------

def converged(hist: Sequence[float], window: int | None = None, tol: float = 1e-3) -> tuple[bool, float]:
    """Has the loss stopped moving? A relative-change test on two trailing windows.

    The last ``2 * window`` finite losses are split into two windows of means ``m1`` (older)
    and ``m2`` (newer). The objective has converged when
    ``|m2 - m1| <= max(tol * max(|m2|, 1), 2 * se)``, where ``se`` is the standard error of
    ``m2 - m1`` from the losses' own scatter: the drift is below ``tol`` relative, or cannot be
    told apart from the Monte Carlo noise of the estimate. ``window`` defaults to a tenth of
    the history, at least 50 steps; fewer than ``2 * window`` steps is "not converged".

    Parameters
    ----------
    hist : sequence of float
        Loss per step.
    window : int, optional
        Window length in steps.
    tol : float
        Relative tolerance.

    Returns
    -------
    (bool, float)
        Whether it converged, and the relative change ``|m2 - m1| / max(|m2|, 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> converged(10 + rng.normal(0, 1, 2000))[0]
    True
    >>> converged(np.linspace(100, 10, 2000))[0]
    False
    """
    h = np.asarray(hist, dtype=float)
    h = h[np.isfinite(h)]
    w = int(window) if window is not None else max(50, len(h) // 10)
    if w < 2 or len(h) < 2 * w:
        return False, float("nan")
    a, b = h[-2 * w:-w], h[-w:]
    m1, m2 = a.mean(), b.mean()
    scale = max(abs(m2), 1.0)
    diff = abs(m2 - m1)
    se = np.sqrt(a.var(ddof=1) / w + b.var(ddof=1) / w)
    return bool(diff <= max(tol * scale, 2.0 * se)), float(diff / scale)


# --------------------------------------------------------------------------------------------
# importance weights and PSIS
# --------------------------------------------------------------------------------------------

def log_joint_fn(ld: Any) -> Any:
    """Compiled ``(z (n, D), data) -> log p(x, z)`` of a LogDensity on full data (no minibatch scaling).

    Sites declared with ``total_size=`` keep their scaling (``total_size / rows``): the fit's
    target is the posterior they declare. Compiled once per LogDensity (kept on it) and reused
    by every diagnosis of its fits.
    """
    fns = ld.__dict__.setdefault("_compiled", {})
    if "log_joint" not in fns:
        def one(z: jax.Array, data: Any) -> jax.Array:
            return ld.log_joint(z, data, declared_only)

        def many(zs: jax.Array, data: Any) -> jax.Array:
            return jax.lax.map(lambda z: one(z, data), zs, batch_size=256)

        fns["log_joint"] = jax.jit(many)
    return fns["log_joint"]


def verdict_checks(q: Approximation, z: jax.Array, lw: np.ndarray, khat: float, data: Any,
                   moments: Any = None, solution: Any = None, key: Any = None, own: tuple = ()) -> dict:
    """The verdict's checks of ``q`` (see :mod:`variational.posterior.verdict`) from :func:`psis`'s
    output (its draws ``z`` from ``key``): the moment check; for a Gaussian variational fit with
    a high k-hat the curvature check; the model's centred hierarchies; for a direct method
    (``solution``, its record) what it reports of itself. ``own`` is q's (mean, sd) per flat
    coordinate from the importance-weights program, when the family gives them, else
    ``moments()`` gives them. The Hessian and the scales run in that same program (see
    :func:`variational.posterior.programs.verdict_programs`)."""
    if not np.isfinite(khat):
        return {}
    names = coordinate_names(q.logdensity.layout)
    out: dict[str, Any] = {"moments": _worse(moment_check(z, lw, names), _constrained_check(q, z, lw))}
    batch = q.training_data() if data is None else as_columns(data)
    if len(own) == 2:      # q's moments, from the importance-weights program
        flat = lambda: tuple(np.asarray(a) for a in own)  # noqa: E731
    else:
        flat = lambda: tuple(np.asarray(a) for a in moments())  # noqa: E731  (computed when a check needs them)
    curvature = khat >= KHAT_GOOD and wants_curvature(q.logdensity, q.family)
    zs = np.asarray(z)[:CURVATURE_DRAWS]     # (sliced on the host: no program)
    key = key_of(0) if key is None else key    # (the checks' branch draws nothing)
    run = lambda x, hess: verdict_programs(q.logdensity, q.family, q.params, batch, key,  # noqa: E731
                                           int(np.shape(z)[0]), zs, x, hess)
    if curvature:
        centred, hessian = run(flat()[0] if candidate_sites(q.logdensity, batch) else None, True)
        out["curvature"] = curvature_check(lambda _: hessian, zs, flat()[1], names)
    if q.logdensity.dim <= CENTRED_MAX_DIM:
        out["centred"] = centred_sites(q.logdensity, flat, batch,
                                       lambda x: centred if curvature else run(x, False)[0])
    info = {} if solution is None else solution.info
    if solution is not None and "importance_sampling" in q.family.options:   # Laplace, Pathfinder
        sampled = q.family.options.get("importance_sampling") is not None
        out["direct"] = {"weighted": sampled and info.get("khat", np.inf) <= KHAT_BAD}
        if sampled and np.isfinite(info.get("khat", np.nan)):
            out["direct"]["khat"] = float(info["khat"])     # its own importance sampling's k-hat
    elif solution is not None and "mcse" in info:                             # DADVI
        out["direct"] = {"mcse": float(np.max(np.asarray(mcse_flat(solution)) / flat()[1]))}
    return out


#: the moment check in the model's space forms the constrained draws (n x D numbers) on the host
CONSTRAINED_MAX_DIM = 2000


def _constrained_check(q: Approximation, z: Any, lw: np.ndarray) -> MomentCheck | None:
    """The moment check on the values the fit reports, in the model's (constrained) space, per
    scalar of each latent site; None when every latent site is real-valued (the unconstrained
    check is the same) or the model is larger than ``CONSTRAINED_MAX_DIM``.

    A coordinate of the unconstrained space can hide a reported value's error: an ordered
    vector's second element is ``mu[0] + exp(u[1])``, so a mean 0.6 sd off in ``mu[1]`` (a
    fixed-step full-rank fit of hmm_example against posteriordb) was 0.08 q-sd beyond its noise
    in ``u[1]``, whose sd also carries ``mu[0]``'s."""
    ld = q.logdensity
    real = [isinstance(biject_to(ld.supports[n]), IdentityTransform) for n in ld.names]
    if all(real) or ld.dim > CONSTRAINED_MAX_DIM or ld.enumerated:
        return None
    values = q.constrain(np.asarray(z))       # (a host array: no transfer of its own)
    cols, names = [], []
    for n in (n for n in ld.names if n in values):
        v = np.asarray(values[n], np.float64).reshape(np.shape(z)[0], -1)
        shape = np.shape(values[n])[1:]
        cols.append(v)
        names += [n] if not shape else [f"{n}[{','.join(map(str, i))}]" for i in np.ndindex(*shape)]
    if not cols:
        return None
    flat = np.concatenate(cols, axis=1)
    keep = np.all(np.isfinite(flat), axis=0) & (np.std(flat, axis=0) > 0)
    if not keep.any():
        return None
    return moment_check(flat[:, keep], lw, [m for m, k in zip(names, keep) if k])


def _worse(a: MomentCheck, b: MomentCheck | None) -> MomentCheck:
    """The moment check that finds q farther from its weighted self, per statistic."""
    if b is None:
        return a
    far = lambda x, y: x if abs(np.log(x)) >= abs(np.log(y)) else y  # noqa: E731
    shift, at = (a.shift, a.shift_at) if a.shift >= b.shift else (b.shift, b.shift_at)
    sd, sd_at = (a.sd_ratio, a.sd_at) if far(a.sd_ratio, b.sd_ratio) == a.sd_ratio else (b.sd_ratio, b.sd_at)
    return MomentCheck(shift, at, sd, sd_at, far(a.median_sd_ratio, b.median_sd_ratio))


def has_density(family: Any) -> bool:
    """Whether a family has a density q (particle methods, SVGD and empirical draws, have none;
    custom guides do: their log density is carried along with each draw)."""
    return family.particles is None


def psis(ld: Any, family: Any, params: Any, batch: Mapping[str, Any], key: jax.Array, n: int = 4000,
         family_key: Any = None) -> tuple[jax.Array, np.ndarray, float]:
    """Draws of q with their Pareto-smoothed importance weights against the log joint.

    Parameters
    ----------
    ld : LogDensity
        The model (its log joint is evaluated on ``batch`` without minibatch scaling).
    family : Family
        The approximation's family (it must have a density).
    params : pytree
        Its parameters.
    batch : mapping
        All data rows.
    key : jax.Array
        Key of the draws.
    n : int
        Number of draws.
    family_key : optional
        A key of the family, to share its compiled program between fits (see
        :func:`variational.posterior.programs.family_key`).

    Returns
    -------
    (z, log_weights, khat)
        Flat unconstrained draws ``(n, D)``, normalised smoothed log weights ``(n,)`` and the
        Pareto k-hat.
    """
    if not has_density(family):
        raise ValueError(f"method '{family.name}' has no density q(z), so there are no importance "
                         f"weights p/q; compare against vi.nuts instead")
    z, log_w, _ = importance_weights(ld, family, params, batch, key, int(n), family_key)
    lw, khat = psis_log_weights(log_w)
    return z, lw, khat


def resample(z: jax.Array, lw: np.ndarray, khat: float, key: jax.Array, n: int) -> jax.Array:
    """``n`` draws of ``z`` resampled with replacement by their weights ``exp(lw)``.

    A warning is issued when k-hat is above 0.7 (the correction is then unreliable).
    """
    if khat > KHAT_BAD:
        warnings.warn(f"Pareto k-hat is {khat:.2f} > {KHAT_BAD}: the importance weights have a "
                      f"heavy tail and the resampled draws cannot correct this approximation; "
                      f"use a richer family or vi.nuts", stacklevel=user_stacklevel())
    p = np.exp(lw - lw.max())
    p /= p.sum()
    idx = np.asarray(jax.random.choice(key, z.shape[0], (int(n),), replace=True, p=jnp.asarray(p)))
    return z[idx]


# --------------------------------------------------------------------------------------------
# the record
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Diagnosis:
    """Whether to believe a fit: k-hat, convergence, skipped steps and a verdict.

    Attributes
    ----------
    khat : float
        Pareto k-hat of the importance weights p/q (``nan`` when q has no density).
    converged : bool
        Whether the loss has stopped moving (see :func:`converged`).
    skipped_steps : int
        Steps not applied because of non-finite values.
    verdict : str
        Plain-language reading of the three.
    status : str
        ``"good"``, ``"ok"`` (usable with care) or ``"bad"``.
    ess : float
        Effective sample size of the smoothed importance weights.
    n_draws : int
        Draws used for k-hat.
    rel_change : float
        Relative change of the loss between the two trailing windows.
    shift : float
        Largest move of a mean under importance weighting, in q standard deviations, beyond its
        Monte Carlo error (``nan`` without weights); see :mod:`variational.posterior.verdict`.
    sd_ratio : float
        The importance-weighted sd over q's sd farthest from 1 (``nan`` without weights).
    curvature : float
        For a mean-field fit with a high k-hat: the smallest q sd over the sd of the Laplace
        approximation at q's mean (``nan`` when not computed).
    funnel : tuple of str
        The centred group effects whose posterior is a funnel no Gaussian q can follow (the
        verdict says to non-centre them).
    """

    khat: float
    converged: bool
    skipped_steps: int
    verdict: str
    status: str
    ess: float
    n_draws: int
    rel_change: float
    shift: float = float("nan")
    sd_ratio: float = float("nan")
    curvature: float = float("nan")
    funnel: tuple = ()

    def __repr__(self) -> str:
        return (f"Diagnosis({self.status}: k-hat={self.khat:.2f}, converged={self.converged}, "
                f"skipped_steps={self.skipped_steps}) {self.verdict}")


def diagnose(hist: np.ndarray, lw: np.ndarray | None, khat: float, skipped_steps: int, steps: int,
             method: str, window: int | None = None, tol: float = 1e-3, *,
             moments: MomentCheck | None = None, curvature: CurvatureCheck | None = None,
             answer: dict | None = None, solver_converged: bool | None = None, centred: Sequence[Any] = (),
             direct: dict | None = None) -> Diagnosis:
    """The diagnosis of a fit; see :meth:`Fit.diagnose` and :mod:`variational.posterior.verdict`.

    ``lw`` and ``khat`` come from :func:`psis` (``None`` and ``nan`` when q has no density),
    ``moments`` from :func:`~variational.posterior.verdict.moment_check`, ``curvature`` from
    :func:`~variational.posterior.verdict.curvature_check`. ``answer`` is the adaptive
    schedule's status (:func:`variational.engine.schedule.status`): then "converged" is its rule
    (the reported answer stopped moving); without it, the loss's trend (:func:`converged`).
    ``solver_converged``: a direct method's own verdict on its optimisation, used instead of
    the loss-history rule (a deterministic solver's history is not a noisy loss).
    """
    is_conv, rel = converged(hist, window, tol)
    text = "the objective has not converged: continue with fit.refine(steps)"
    if answer is not None:
        is_conv = answer["done"]
        text = f"the answer has not converged ({describe(answer)}): continue with fit.refine(steps)"
    if solver_converged is not None:
        is_conv = bool(solver_converged)
        text = "the solver did not converge: see fit.solution"
    ess = float("nan") if lw is None else (float(1.0 / np.sum(np.exp(2 * lw))) if np.isfinite(khat) else 0.0)
    status, verdict_text = verdict(khat, is_conv, text, skipped_steps, steps, method, moments, curvature,
                                   centred, direct)
    return Diagnosis(khat=khat, converged=is_conv, skipped_steps=skipped_steps, verdict=verdict_text,
                     status=status, ess=ess, n_draws=0 if lw is None else int(lw.shape[0]), rel_change=rel,
                     shift=float("nan") if moments is None else moments.shift,
                     sd_ratio=float("nan") if moments is None else moments.sd_ratio,
                     curvature=float("nan") if curvature is None else curvature.ratio,
                     funnel=tuple(c.site for c in centred if c.funnel))


def mcse_flat(solution: Any) -> np.ndarray:
    """DADVI's Monte Carlo standard errors of the flat unconstrained means (computed once)."""
    info = {} if solution is None else solution.info
    if callable(info.get("mcse")):
        info["mcse"] = np.asarray(info["mcse"]())
    if "mcse" not in info:
        raise VariationalError("this method reports no Monte Carlo standard error of its means "
                               "(method='dadvi' with lr=True does)")
    return info["mcse"]


def mcse(q: Approximation, solution: Any) -> dict[str, np.ndarray]:
    """``fit.mcse``: Monte Carlo standard error of the posterior means, per site (``method="dadvi"``).

    DADVI's answer depends on its fixed base draws; this is the standard deviation of its means
    over a fresh choice of them (Giordano, Ingram and Broderick 2024), in the unconstrained space
    (the model's own space for real-valued sites). Computed when first asked for; ``solution``
    is the direct method's record (``fit.solution``).
    """
    try:
        flat = mcse_flat(solution)
    except VariationalError as e:
        raise VariationalError(f"method {q.family.name!r}: {e}") from None
    return q.named(jnp.asarray(flat))


def check_draws(n: Any) -> int:
    """``n`` as the number of draws of a diagnosis (at least :data:`MIN_PSIS_DRAWS`)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < MIN_PSIS_DRAWS:
        raise ValueError(f"n={n!r}: k-hat fits the tail of the importance weights of n draws of q "
                         f"and needs at least {MIN_PSIS_DRAWS} (4000 by default)")
    return int(n)


def diagnose_fit(q: Approximation, run: Any, n: int, key: jax.Array, data: Any, moments: Any,
                 answer: dict | None) -> Diagnosis:
    """``fit.diagnose``: importance weights of ``n`` draws of ``q`` from ``key`` on ``data`` (all
    training rows when None), read with the history of ``run`` (the fit: its public ``hist``,
    ``skipped_steps``, ``steps``, ``method`` and ``solution``); ``moments()`` gives q's mean
    and standard deviation per flat coordinate, ``answer`` the adaptive schedule's status."""
    lw, khat, checks, method = None, float("nan"), {}, run.method
    if q.logdensity.dim == 0:
        method = POINT  # only the model's parameters: nothing for importance weights to check
    elif q.has_density:
        batch = q.training_data() if data is None else as_columns(data)
        z, log_w, own = importance_weights(q.logdensity, q.family, q.params, batch, key, n, q.compile_key())
        lw, khat = psis_log_weights(log_w)
        z = np.asarray(z)
        checks = verdict_checks(q, z, lw, khat, data, moments, run.solution, key, own)
    return diagnose(run.hist, lw, khat, run.skipped_steps, run.steps, method, answer=answer, **checks,
                    solver_converged=None if run.solution is None else run.solution.converged)
