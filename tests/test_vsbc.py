"""Variational simulation-based calibration.

Truths: on the conjugate normal model the exact posterior CDF at the simulated value,
``Phi((mu_m - sum(y_m) / 6) * sqrt(6))``, for every simulation (so the probabilities VSBC
reports are checked one by one, and their symmetry follows); a fit deliberately stopped far
from the posterior (started at mu = 3, 20 steps) is biased upwards in every simulation.
"""

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy.stats import norm

import variational as vi


def model(y=None):
    mu = vi.Normal("mu", 0.0, 1.0)
    vi.Normal("y", mu, 1.0, shape=5, observed=y)


def exact_cdf(truth, y):   # posterior N(sum(y) / 6, 1 / 6)
    return norm.cdf((truth - y.sum(-1) / 6.0) * np.sqrt(6.0))


@pytest.fixture(scope="module")
def exact():
    return vi.vsbc(model, n_sims=60, steps=500, learning_rate=0.05, stl=True, seed=0)


def test_vsbc_of_an_exact_method_is_symmetric_and_its_probabilities_are_the_exact_cdf(exact):
    res = exact
    truth, y = res.truth["mu"], res.simulated["y"]
    assert y.shape == (60, 5)
    np.testing.assert_allclose(res.probabilities["mu"], exact_cdf(truth, y), atol=0.02)
    assert res.pvalue["mu"] > 0.05 and res.biased() == []
    assert list(res.table().index) == ["mu"] and "no parameter" in repr(res)


def test_vsbc_flags_a_deliberately_biased_fit(exact):
    with pytest.warns(FutureWarning) as record:   # start= is a moved keyword: it warns at this line
        res = vi.vsbc(model, n_sims=60, steps=20, learning_rate=0.05, start={"mu": 3.0}, seed=0)
    assert {w.filename for w in record if "vi.fit(start=...)" in str(w.message)} == {__file__}
    np.testing.assert_array_equal(res.truth["mu"], exact.truth["mu"])   # same seed, same simulations
    assert res.biased() == ["mu"] and res.pvalue["mu"] < 1e-6
    assert np.mean(res.probabilities["mu"]) < 0.1            # q sits above the truth


def test_vsbc_rebuilds_the_fit_for_a_guide_that_reads_the_data(exact):
    def shifted(y):   # the exact posterior moved up by half its sd
        numpyro.sample("mu", dist.Normal(y.sum() / 6.0 + 0.5 / np.sqrt(6.0), 1 / np.sqrt(6.0)))

    res = vi.vsbc(model, n_sims=2, steps=0, guide=shifted, seed=0, n_draws=20_000)
    truth, y = exact.truth["mu"], exact.simulated["y"]
    np.testing.assert_allclose(res.probabilities["mu"], norm.cdf((truth[:2] - y[:2].sum(-1) / 6.0)
                                                                 * np.sqrt(6.0) - 0.5), atol=0.02)


def test_vsbc_with_covariates_and_its_errors():
    x = np.linspace(-1, 1, 8)

    def regression(x, y=None):
        b = vi.Normal("b", 0.0, 1.0)
        s = vi.HalfNormal("s", 1.0)
        vi.Normal("y", b * x, s, observed=y)

    res = vi.vsbc(regression, {"x": x}, n_sims=4, steps=50, seed=1)
    assert res.probabilities["b"].shape == (4,) and set(res.pvalue) == {"b", "s"}
    assert np.all((res.truth["s"] > 0))
    with pytest.raises(ValueError, match="n_sims"):
        vi.vsbc(model, n_sims=1)

    def no_argument():
        vi.Normal("y", vi.Normal("mu", 0.0, 1.0), 1.0, shape=3)

    with pytest.raises(vi.ModelError, match="observed="):
        vi.vsbc(no_argument, n_sims=3)

    def renamed(obs=None):
        vi.Normal("y", vi.Normal("mu", 0.0, 1.0), 1.0, shape=3, observed=obs)

    with pytest.raises(vi.ModelError, match=r"\['y'\].*argument"):
        vi.vsbc(renamed, observed="y", n_sims=3)
