"""Pareto-smoothed importance weights (PSIS, through ArviZ), shared by Pathfinder and the diagnosis."""

from __future__ import annotations

import sys
import threading
import warnings

import numpy as np

__all__ = ["psis_log_weights", "prefetch"]


def prefetch() -> None:
    """Start importing ArviZ in the background (seconds of imports) while the caller computes.

    The import overlaps compilation and optimisation, which release the GIL; a later
    ``import arviz`` waits for it to finish instead of starting over.
    """
    if "arviz" not in sys.modules:
        threading.Thread(target=__import__, args=("arviz",), daemon=True).start()


def psis_log_weights(log_w: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed, normalised log weights and k-hat of raw log weights ``log p - log q``.

    Draws with a non-finite weight (log p = -inf) carry no weight and stay out of the tail fit.
    """
    import arviz as az

    log_w = np.where(np.isfinite(log_w), np.asarray(log_w, np.float64), -np.inf)
    if not np.isfinite(log_w).any():
        return np.full(log_w.shape, -np.log(log_w.size)), float("inf")
    ok = np.isfinite(log_w)
    lw = np.full(log_w.shape, -np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns about k-hat itself; we report it
        lw_ok, khat = az.psislw(log_w[ok])
    lw[ok] = lw_ok
    return lw, float(khat)
