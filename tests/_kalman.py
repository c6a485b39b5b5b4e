"""A Kalman filter and Rauch-Tung-Striebel smoother in NumPy: the exact posterior of a random walk
observed with noise, the truth the structured family is checked against."""

from __future__ import annotations

import numpy as np


def random_walk_data(t: int, step_sd: float, noise_sd: float, seed: int = 0) -> np.ndarray:
    """Observations ``y`` of a random walk ``x_t = x_{t-1} + N(0, step_sd)`` (``x_0 ~ N(0, step_sd)``)."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(0.0, step_sd, t))
    return x + rng.normal(0.0, noise_sd, t)


def smoother(y: np.ndarray, step_sd: float, noise_sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and sds of the random walk's states given all of ``y`` (RTS smoother)."""
    t, q, r = len(y), step_sd ** 2, noise_sd ** 2
    m_pred, p_pred = np.zeros(t), np.zeros(t)
    m_filt, p_filt = np.zeros(t), np.zeros(t)
    m, p = 0.0, 0.0                       # x_{-1} = 0 exactly
    for i in range(t):
        m_pred[i], p_pred[i] = m, p + q
        gain = p_pred[i] / (p_pred[i] + r)
        m = m_pred[i] + gain * (y[i] - m_pred[i])
        p = (1.0 - gain) * p_pred[i]
        m_filt[i], p_filt[i] = m, p
    mean, var = m_filt.copy(), p_filt.copy()
    for i in range(t - 2, -1, -1):
        g = p_filt[i] / p_pred[i + 1]
        mean[i] = m_filt[i] + g * (mean[i + 1] - m_pred[i + 1])
        var[i] = p_filt[i] + g * g * (var[i + 1] - p_pred[i + 1])
    return mean, np.sqrt(var)
