"""Can the approximation be trusted? Pareto k-hat, convergence, skipped steps, a verdict.

- **k-hat** (Yao et al. 2018, Vehtari et al. 2024): the shape of the generalised Pareto tail of
  the importance weights ``w = p(x, z) / q(z)`` over a few thousand draws of q, estimated by
  ArviZ's PSIS (:func:`arviz.psislw`). Below 0.5 q is close to the posterior; 0.5 to 0.7 the
  draws are usable but importance correction (``fit.sample(n, importance=True)``) is advised;
  above 0.7 q misses mass that the posterior has and its moments cannot be trusted.
- **converged**: a simple relative-change rule on the loss history (see :func:`converged`).
- **skipped steps**: steps the engine did not apply because their loss or gradient was not
  finite.

``vi.summary`` (mean, sd, HDI, and for MCMC draws ESS and R-hat) is here too, through ArviZ.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.util import potential_energy


if TYPE_CHECKING:  # pragma: no cover
    from .result import Fit

__all__ = ["Diagnosis", "diagnose", "converged", "psis", "importance_sample", "summary",
           "KHAT_GOOD", "KHAT_BAD"]

KHAT_GOOD = 0.5
KHAT_BAD = 0.7


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

def _log_joint_fn(fit: "Fit") -> Any:
    """Compiled ``(z (n, D), data) -> log p(x, z)`` on the full data, no minibatch scaling."""
    fns = getattr(fit, "_posterior_fns", None)
    if fns is None:
        fns = fit._posterior_fns = {}
    if "log_joint" not in fns:
        ld = fit.logdensity

        def one(z: jax.Array, data: Any) -> jax.Array:
            return -potential_energy(ld.model, (), {**ld.model_kwargs, **data}, ld.unravel(z))

        def many(zs: jax.Array, data: Any) -> jax.Array:
            return jax.lax.map(lambda z: one(z, data), zs, batch_size=256)

        fns["log_joint"] = jax.jit(many)
    return fns["log_joint"]


def _has_density(fit: "Fit") -> bool:
    # non-ELBO methods (SVGD particles) have no density q to weight against
    return fit.family.make_loss_and_grad is None


def psis(fit: "Fit", n: int = 4000, seed: int | None = 0, data: Mapping[str, Any] | None = None
         ) -> tuple[jax.Array, np.ndarray, float]:
    """Draws of q with their Pareto-smoothed importance weights.

    Parameters
    ----------
    fit : Fit
        The approximation.
    n : int
        Number of draws.
    seed : int, optional
        Seed of the draws (``None``: fresh draws).
    data : mapping, optional
        The full data, when ``fit.data`` is not all of it (streamed fits).

    Returns
    -------
    (z, log_weights, khat)
        Flat unconstrained draws ``(n, D)``, normalised smoothed log weights ``(n,)`` and the
        Pareto k-hat.
    """
    import arviz as az

    if not _has_density(fit):
        raise ValueError(f"method '{fit.method}' has no density q(z), so there are no importance "
                         f"weights p/q; compare against vi.nuts instead")
    from .data import as_columns
    from .predictive import training_data

    batch = training_data(fit) if data is None else as_columns(data)
    key = jax.random.PRNGKey(seed) if seed is not None else fit._next_key(None)
    z, log_q = fit.family.sample_and_log_q(fit.params, jax.random.fold_in(key, 3), int(n))
    log_p = _log_joint_fn(fit)(z, {k: jnp.asarray(v) for k, v in batch.items()})
    log_w = np.asarray(log_p, dtype=np.float64) - np.asarray(log_q, dtype=np.float64)
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    if not np.isfinite(log_w).any():
        return z, np.full(int(n), -np.log(int(n))), float("inf")
    # draws with log p = -inf carry no weight; keep them out of the tail fit
    ok = np.isfinite(log_w)
    lw = np.full(log_w.shape, -np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns about k-hat itself; we report it
        lw_ok, khat = az.psislw(log_w[ok])
    lw[ok] = lw_ok
    return z, lw, float(khat)


def importance_sample(fit: "Fit", n: int, seed: int | None = None, proposals: int | None = None
                      ) -> dict[str, np.ndarray]:
    """PSIS-resampled draws (constrained space); see ``fit.sample(n, importance=True)``.

    ``proposals`` draws of q (default ``max(4000, 4 n)``) are weighted by their smoothed
    importance weights and ``n`` of them are resampled with replacement. A warning is issued
    when k-hat is above 0.7 (the correction is then unreliable).
    """
    n = int(n)
    if n <= 0:
        raise ValueError(f"n={n!r} must be a positive number of draws")
    m = int(proposals) if proposals is not None else max(4000, 4 * n)
    key = fit._next_key(seed)
    seed_int = int(jax.random.randint(key, (), 0, 2**31 - 1))
    z, lw, khat = psis(fit, m, seed=seed_int)
    if khat > KHAT_BAD:
        warnings.warn(f"Pareto k-hat is {khat:.2f} > {KHAT_BAD}: the importance weights have a "
                      f"heavy tail and the resampled draws cannot correct this approximation; "
                      f"use a richer family or vi.nuts", stacklevel=3)
    p = np.exp(lw - lw.max())
    p /= p.sum()
    idx = np.asarray(jax.random.choice(jax.random.fold_in(key, 4), m, (n,), replace=True, p=jnp.asarray(p)))
    return fit._constrain_draws(z[idx])


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
    """

    khat: float
    converged: bool
    skipped_steps: int
    verdict: str
    status: str
    ess: float
    n_draws: int
    rel_change: float

    def __repr__(self) -> str:
        return (f"Diagnosis({self.status}: k-hat={self.khat:.2f}, converged={self.converged}, "
                f"skipped_steps={self.skipped_steps}) {self.verdict}")


def _verdict(khat: float, is_conv: bool, skipped: int, steps: int, method: str) -> tuple[str, str]:
    parts = []
    if not np.isfinite(khat):
        if np.isnan(khat):
            status = "ok"
            parts.append(f"k-hat is not available for method '{method}' (no density q); "
                         f"check against vi.nuts")
        else:
            status = "bad"
            parts.append("no draw of q has a finite log density under the model: the fit failed")
    elif khat < KHAT_GOOD:
        status = "good"
        parts.append(f"k-hat {khat:.2f} < {KHAT_GOOD}: the approximation is close to the posterior")
    elif khat < KHAT_BAD:
        status = "ok"
        parts.append(f"k-hat {khat:.2f} is between {KHAT_GOOD} and {KHAT_BAD}: usable with care; "
                     f"fit.sample(n, importance=True) corrects the draws")
    else:
        status = "bad"
        parts.append(f"k-hat {khat:.2f} > {KHAT_BAD}: the approximation misses posterior mass "
                     f"(correlations, heavy tails or several modes); do not trust its sds or tails; "
                     f"try method='fullrank_advi' or check with vi.nuts")
    if not is_conv:
        status = "bad" if status == "bad" else "ok"
        parts.append("the objective has not converged: continue with fit.refine(steps)")
    if skipped:
        frac = skipped / max(steps, 1)
        if frac > 0.01:
            status = "bad" if status == "bad" else "ok"
        parts.append(f"{skipped} step(s) ({100 * frac:.1f}%) were skipped for non-finite values; "
                     f"a lower learning rate may help")
    return status, "; ".join(parts) + "."


def diagnose(fit: "Fit", n: int = 4000, seed: int = 0, data: Mapping[str, Any] | None = None,
             window: int | None = None, tol: float = 1e-3) -> Diagnosis:
    """Diagnose a fit; see :meth:`variational.Fit.diagnose`."""
    cache_key = ("diagnosis", fit.steps, int(n), seed, window, tol, data is None)
    cache = fit._cache
    if data is None and cache_key in cache:
        return cache[cache_key]
    is_conv, rel = converged(fit.hist, window, tol)
    if _has_density(fit):
        _, lw, khat = psis(fit, n, seed, data)
        ess = float(1.0 / np.sum(np.exp(2 * lw))) if np.isfinite(khat) else 0.0
    else:
        khat, ess = float("nan"), float("nan")
    status, text = _verdict(khat, is_conv, fit.skipped_steps, fit.steps, fit.method)
    out = Diagnosis(khat=khat, converged=is_conv, skipped_steps=fit.skipped_steps, verdict=text,
                    status=status, ess=ess, n_draws=int(n), rel_change=rel)
    if data is None:
        cache[cache_key] = out
    return out


# --------------------------------------------------------------------------------------------
# summaries through ArviZ
# --------------------------------------------------------------------------------------------

def _is_vi(idata: Any) -> bool:
    stats = getattr(idata, "sample_stats", None)
    return stats is not None and "loss" in stats


def summary(obj: Any, *, var_names: Sequence[str] | None = None, hdi_prob: float = 0.94,
            n: int = 4000, seed: int = 0) -> Any:
    """Mean, sd and HDI per parameter; for MCMC draws also ESS and R-hat (ArviZ).

    Parameters
    ----------
    obj : Fit, InferenceData or dict
        A fit (``n`` draws are summarised), an ``InferenceData`` (from ``fit.to_arviz()`` or
        :func:`variational.nuts`) or a dict name -> draws.
    var_names : sequence of str, optional
        Parameters to include.
    hdi_prob : float
        Probability mass of the highest-density interval.
    n : int
        Draws of a fit.
    seed : int
        Seed of a fit's draws.

    Returns
    -------
    pandas.DataFrame
        ArviZ's summary table: ``mean, sd, hdi_3%, hdi_97%`` and, for MCMC draws, ``mcse``,
        ``ess_bulk``, ``ess_tail`` and ``r_hat`` (ESS and R-hat are meaningless for independent
        draws of an approximation, so they are left out there).

    Examples
    --------
    >>> import variational as vi
    >>> def model():
    ...     vi.Normal("x", 0, 1)
    >>> table = vi.summary(vi.fit(model, steps=2000, progress=False))
    >>> list(table.columns)
    ['mean', 'sd', 'hdi_3%', 'hdi_97%']
    """
    import arviz as az

    from .result import Fit

    if isinstance(obj, Fit):
        idata, kind = obj.to_arviz(n, seed=seed, posterior_predictive=False), "stats"
    elif hasattr(obj, "posterior"):
        idata, kind = obj, ("stats" if _is_vi(obj) else "all")
    elif isinstance(obj, Mapping):
        idata, kind = az.from_dict(posterior={k: np.asarray(v)[None] for k, v in obj.items()}), "stats"
    else:
        raise TypeError(f"summary() takes a Fit, an InferenceData or a dict of draws, got {type(obj).__name__}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.summary(idata, var_names=list(var_names) if var_names else None, kind=kind,
                          hdi_prob=hdi_prob)
