"""Pareto-smoothed importance weights (PSIS), shared by the direct methods and the diagnosis.

PSIS (Vehtari, Simpson, Gelman, Yao and Gabry 2024) replaces the largest
``M = ceil(min(S / 5, 3 sqrt(S)))`` of ``S`` importance weights by the expected order statistics
of a generalised Pareto distribution fitted to them; its shape parameter is the diagnostic
k-hat. The fit is NumPyro's (Zhang and Stephens 2009, with the weakly informative prior of
Vehtari et al. 2024, Appendix G), the estimator of ArviZ 0.x's ``psislw``: NumPyro is imported
already, while ArviZ takes seconds to import, which a diagnosis should not cost. Where NumPyro
lacks it, ArviZ smooths the weights. ArviZ 0.x has ``az.psislw``; ArviZ 1.x (``arviz-stats``) follows the LOO convention and smooths
the weights ``exp(-x)`` of the log-likelihoods ``x`` it is given, so log importance ratios go in
negated (see :mod:`variational.posterior.arviz_compat`, which re-exports :func:`psislw`). The
version is read from the package metadata, so asking it imports nothing.
"""

from __future__ import annotations

import importlib.metadata
import sys
import threading
import warnings

import numpy as np

__all__ = ["psislw", "psis_log_weights", "pareto_smooth", "prefetch", "ARVIZ_1"]

ARVIZ_1 = int(importlib.metadata.version("arviz").split(".")[0]) >= 1

try:  # NumPyro >= 0.22
    from numpyro.infer.importance import _fit_generalized_pareto as _fit_gpd
except ImportError:  # pragma: no cover - older NumPyro
    _fit_gpd = None


def prefetch() -> None:
    """Start importing ArviZ's PSIS in the background (seconds of imports) while the caller computes.

    The import overlaps compilation and optimisation, which release the GIL; a later import
    waits for it to finish instead of starting over.
    """
    name = "arviz_stats" if ARVIZ_1 else "arviz"
    if _fit_gpd is None and name not in sys.modules:
        threading.Thread(target=__import__, args=(name,), daemon=True).start()


def psislw(log_w: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed, normalised log weights and k-hat of finite log importance ratios ``log_w``.

    Examples
    --------
    >>> import numpy as np
    >>> u = (np.arange(1000) + 0.5) / 1000
    >>> lw, khat = psislw(-0.5 * np.log1p(-u))   # Pareto tail with shape 0.5
    >>> round(float(np.exp(lw).sum()), 6), bool(abs(khat - 0.5) < 0.1)
    (1.0, True)
    """
    log_w = np.asarray(log_w, dtype=np.float64)
    if _fit_gpd is not None:
        return pareto_smooth(log_w)
    if ARVIZ_1:
        from arviz_stats.base import array_stats

        lw, khat = array_stats.psislw(-log_w)   # the LOO convention: it smooths exp(-input)
    else:
        import arviz as az

        lw, khat = az.psislw(log_w)
    return np.asarray(lw, dtype=np.float64), float(khat)


def psis_log_weights(log_w: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed, normalised log weights and k-hat of raw log weights ``log p - log q``.

    Draws with a non-finite weight (log p = -inf) carry no weight and stay out of the tail fit.
    """
    log_w = np.where(np.isfinite(log_w), np.asarray(log_w, np.float64), -np.inf)
    if not np.isfinite(log_w).any():
        return np.full(log_w.shape, -np.log(log_w.size)), float("inf")
    ok = np.isfinite(log_w)
    lw = np.full(log_w.shape, -np.inf)
    if np.ptp(log_w[ok]) > 1e-6:
        with warnings.catch_warnings():   # ArviZ warns about k-hat itself; we report it
            warnings.simplefilter("ignore")
            smooth, khat = psislw(log_w[ok])
        if np.all(np.isfinite(smooth)) and np.isfinite(khat):
            lw[ok] = smooth
            return lw, khat
    # weights equal to float precision (q is p: no tail to fit; the Pareto fit divides by zero)
    lw[ok] = log_w[ok] - np.logaddexp.reduce(log_w[ok])
    return lw, 0.0


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
