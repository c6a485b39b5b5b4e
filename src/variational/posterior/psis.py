"""Pareto-smoothed importance sampling (Vehtari, Simpson, Gelman, Yao and Gabry 2024).

The largest ``M = ceil(min(S / 5, 3 sqrt(S)))`` of ``S`` importance weights are replaced by the
expected order statistics of a generalised Pareto distribution fitted to them; its shape
parameter is the diagnostic k-hat. The fit is NumPyro's (Zhang and Stephens 2009, with the
weakly informative prior of Vehtari et al. 2024, Appendix G): the estimator of ArviZ 0.x's
``psislw``, whatever ArviZ generation is installed (ArviZ's, through
:mod:`.arviz_compat`, is used where NumPyro does not have it). NumPyro is imported already;
ArviZ takes seconds to import, which a diagnosis should not cost.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["pareto_smooth"]

try:  # NumPyro >= 0.22
    from numpyro.infer.importance import _fit_generalized_pareto as _fit_gpd
except ImportError:  # pragma: no cover - older NumPyro
    _fit_gpd = None


def _gpd_quantiles(p: np.ndarray, k: float, sigma: float) -> np.ndarray:
    """Quantiles of the generalised Pareto distribution with shape ``k`` and scale ``sigma``."""
    if abs(k) < np.finfo(float).eps:
        return -sigma * np.log1p(-p)
    return sigma * np.expm1(-k * np.log1p(-p)) / k


def pareto_smooth(log_w: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed, normalised log weights and k-hat of finite raw log weights ``log p - log q``.

    Returns ``(log_weights, khat)``; ``khat`` is ``inf`` when the tail has fewer than 5 draws
    (the weights are then only normalised).

    Examples
    --------
    >>> import numpy as np
    >>> lw, khat = pareto_smooth(np.random.default_rng(0).normal(size=4000))
    >>> bool(np.isclose(np.exp(lw).sum(), 1.0)), bool(khat < 0.5)
    (True, True)
    """
    if _fit_gpd is None:  # pragma: no cover - older NumPyro
        from .arviz_compat import psislw

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return psislw(np.asarray(log_w, dtype=np.float64))
    lw = np.array(log_w, dtype=np.float64)
    lw -= lw.max()
    s = lw.size
    m = int(np.ceil(min(0.2 * s, 3.0 * np.sqrt(s))))
    order = np.argsort(lw)
    cutoff = max(lw[order[max(s - m - 1, 0)]], np.log(np.finfo(float).tiny))
    tail = order[lw[order] > cutoff]   # the tail's draws, smallest weight first
    khat = float("inf")
    if tail.size > 4:
        exceedances = np.exp(lw[tail]) - np.exp(cutoff)
        khat, sigma = (float(v) for v in _fit_gpd(exceedances))
        if np.isfinite(khat) and sigma > 0:
            p = (np.arange(tail.size) + 0.5) / tail.size
            lw[tail] = np.minimum(np.log(_gpd_quantiles(p, khat, sigma) + np.exp(cutoff)), 0.0)
    top = lw.max()
    lw -= top + np.log(np.sum(np.exp(lw - top)))
    return lw, khat
