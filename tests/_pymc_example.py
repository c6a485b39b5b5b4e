"""PyMC's analytic-posterior example (``tests/variational/test_inference.py``, ``simple_model``):
a normal mean with known variance, 1000 points, and its posterior in closed form."""

import numpy as np

import variational as vi

_RNG = np.random.default_rng(42)
N, SIGMA0, MU0, SIGMA = 1000, 2.0, 4.0, 3.0
DATA = SIGMA * _RNG.standard_normal(N) - 5.0
D = N / SIGMA**2 + 1 / SIGMA0**2                      # posterior precision
MU_POST = (N * DATA.mean() / SIGMA**2 + MU0 / SIGMA0**2) / D


def simple_model(x):
    mu = vi.Normal("mu", MU0, SIGMA0)
    vi.Normal("x", mu, SIGMA, observed=x)
