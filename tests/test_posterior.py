"""Using the posterior: functions of draws, predictions, ArviZ, diagnostics, NUTS, comparison, plots.

Every number is checked against a closed form (conjugate Normal posteriors, Gaussian moments,
Gamma modes) or a construction whose answer is known (a shift of draws).
"""

import os
import sys
import warnings

os.environ.setdefault("MPLBACKEND", "Agg")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import variational as vi  # noqa: E402
from variational.posterior.diagnostics import converged  # noqa: E402
from variational.errors import DataError, ModelError  # noqa: E402

# --------------------------------------------------------------------------------------------
# the conjugate Normal model: y_i ~ N(mu, 1), mu ~ N(0, 10)
# --------------------------------------------------------------------------------------------

Y = np.random.default_rng(0).normal(1.0, 1.0, size=20)
PREC = 1 / 100 + len(Y)
POST_MEAN, POST_SD = Y.sum() / PREC, 1 / np.sqrt(PREC)


def normal_model(y=None):
    mu = vi.Normal("mu", 0.0, 10.0)
    vi.Normal("y", mu, 1.0, shape=len(Y), observed=y)


@pytest.fixture(scope="module")
def normal_fit():
    return vi.fit(normal_model, {"y": Y}, steps=1000, learning_rate=0.05, stl=True, progress=False)


@pytest.fixture(scope="module")
def normal_nuts(normal_fit):
    return vi.nuts(normal_model, {"y": Y}, init=normal_fit, draws=400, tune=200, chains=2, seed=1)


# --------------------------------------------------------------------------------------------
# a regression with a deterministic site, for predictions on new covariates
# --------------------------------------------------------------------------------------------

X = np.linspace(-1.0, 1.0, 30)
Y_REG = 2.0 * X + 0.5 * np.random.default_rng(1).normal(size=30)
SIGMA = 0.5
B_PREC = 1.0 + np.sum(X**2) / SIGMA**2          # b ~ N(0, 1), y ~ N(b x, 0.5)
B_MEAN, B_SD = np.sum(X * Y_REG) / SIGMA**2 / B_PREC, 1 / np.sqrt(B_PREC)


def reg_model(x, y=None):
    b = vi.Normal("b", 0.0, 1.0)
    mu = vi.Deterministic("mu", b * x)
    vi.Normal("y", mu, SIGMA, observed=y)


@pytest.fixture(scope="module")
def reg_fit():
    return vi.fit(reg_model, {"x": X, "y": Y_REG}, steps=1000, learning_rate=0.05, stl=True, progress=False)


# --------------------------------------------------------------------------------------------
# functions of draws
# --------------------------------------------------------------------------------------------

def test_sample_fn_matches_the_moments_of_x_squared(normal_fit):
    x2 = normal_fit.sample_fn(lambda p: p["mu"] ** 2, 40_000, seed=3)
    m, s2 = POST_MEAN, POST_SD**2
    assert x2.shape == (40_000,)
    assert abs(x2.mean() - (m**2 + s2)) < 0.02 * (m**2 + s2)
    assert abs(x2.var() - (4 * m**2 * s2 + 2 * s2**2)) < 0.06 * (4 * m**2 * s2 + 2 * s2**2)


def test_sample_fn_seeds(normal_fit):
    f = lambda p: p["mu"]  # noqa: E731
    a, b = normal_fit.sample_fn(f, 100, seed=5), normal_fit.sample_fn(f, 100, seed=5)
    c, d = normal_fit.sample_fn(f, 100), normal_fit.sample_fn(f, 100)
    assert np.array_equal(a, b)
    assert not np.array_equal(c, d)


def test_sample_fn_sees_deterministics_and_new_data(reg_fit):
    # mu = b x is a deterministic site; on new covariates it is recomputed for them
    out = reg_fit.sample_fn(lambda p: p["mu"] - p["b"] * 3.0, 200, seed=0, data={"x": np.full(4, 3.0)})
    assert out.shape == (200, 4)
    assert np.abs(out).max() < 1e-5
    draws = reg_fit.sample(300, seed=1)
    assert np.allclose(draws["mu"], draws["b"][:, None] * X[None], atol=1e-5)


def test_sample_fn_errors_name_the_problem(normal_fit):
    with pytest.raises(ModelError, match="'sigma'.*available: \\['mu'\\]"):
        normal_fit.sample_fn(lambda p: p["sigma"], 10)
    with pytest.raises(ModelError, match="jax.numpy"):
        normal_fit.sample_fn(lambda p: np.asarray(p["mu"]), 10)


# --------------------------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------------------------

def test_posterior_predictive_matches_the_closed_form(normal_fit):
    pred = normal_fit.predict(n=20_000, seed=2)["y"]
    assert pred.shape == (20_000, len(Y))
    sd = np.sqrt(POST_SD**2 + 1.0)
    assert abs(pred.mean() - POST_MEAN) < 4 * sd / np.sqrt(20_000)
    assert abs(pred.std(0).mean() - sd) < 0.02 * sd
    same = vi.predictive(normal_model, normal_fit, n=20_000, seed=2)["y"]
    assert np.array_equal(pred, same)


def test_predictions_on_new_covariates(reg_fit):
    x_new = np.array([-2.0, 0.0, 0.5, 1.0, 3.0, 4.0, 10.0])
    pred = reg_fit.predict({"x": x_new}, n=20_000, seed=0)
    assert pred["y"].shape == (20_000, 7) and pred["mu"].shape == (20_000, 7)
    assert np.allclose(pred["mu"].mean(0), B_MEAN * x_new, atol=4 * B_SD * np.abs(x_new) / np.sqrt(20_000) + 1e-3)
    sd = np.sqrt(B_SD**2 * x_new**2 + SIGMA**2)
    assert np.allclose(pred["y"].std(0), sd, rtol=0.03)


def test_prior_predictive_and_given_draws():
    x = np.array([0.0, 1.0, 2.0])
    prior = vi.predictive(reg_model, data={"x": x}, n=20_000, seed=0)
    assert prior["b"].shape == (20_000,) and prior["y"].shape == (20_000, 3)
    assert np.allclose(prior["y"].std(0), np.sqrt(x**2 * 1.0 + SIGMA**2), rtol=0.03)
    draws = {"b": np.full(5000, 1.5)}
    given = vi.predictive(reg_model, posterior_samples=draws, data={"x": x}, seed=1)
    assert given["y"].shape == (5000, 3)
    assert np.allclose(given["mu"], 1.5 * x)
    assert np.allclose(given["y"].mean(0), 1.5 * x, atol=4 * SIGMA / np.sqrt(5000))
    assert np.allclose(given["y"].std(0), SIGMA, rtol=0.05)


def test_prediction_errors_name_the_columns(reg_fit):
    with pytest.raises(DataError, match=r"\['x', 'y'\].*passed to the model as None"):
        reg_fit.predict({"z": np.ones(3)}, n=10)


# --------------------------------------------------------------------------------------------
# ArviZ
# --------------------------------------------------------------------------------------------

def test_to_arviz_has_predictive_observed_and_coords():
    def model(g, y=None):
        a = vi.Normal("a", 0.0, 5.0, shape=3)
        vi.Normal("y", a[g], 1.0, observed=y)

    g = np.array([0, 0, 1, 1, 2, 2, 2])
    y = np.array([1.0, 1.2, -1.0, -0.8, 3.0, 3.1, 2.9])
    fit = vi.fit(model, {"g": g, "y": y}, steps=0, progress=False)   # the groups' shapes and names, not values
    # the log-likelihood group is tested in tests/test_ecosystem.py
    idata = fit.to_arviz(50, coords={"group": ["lo", "mid", "hi"]}, dims={"a": ["group"]}, log_likelihood=False)
    assert list(idata.posterior["a"].coords["group"].values) == ["lo", "mid", "hi"]
    assert idata.posterior_predictive["y"].shape == (1, 50, 7)
    assert np.allclose(idata.observed_data["y"].values, y)
    table = vi.summary(fit)
    assert list(table.columns) == ["mean", "sd", "hdi_3%", "hdi_97%"]
    assert len(table) == 3


def test_summary_of_nuts_has_ess_and_rhat(normal_nuts):
    table = vi.summary(normal_nuts)
    assert {"ess_bulk", "r_hat"} <= set(table.columns)
    assert abs(table.loc["mu", "mean"] - POST_MEAN) < 0.1
    assert table.loc["mu", "r_hat"] < 1.05


# --------------------------------------------------------------------------------------------
# trust
# --------------------------------------------------------------------------------------------

COV = jnp.array([[1.0, 0.99], [0.99, 1.0]])


def correlated():
    vi.MvNormal("x", jnp.zeros(2), cov=COV)


def test_khat_good_for_full_rank_on_a_gaussian():
    fit = vi.fit(correlated, method="fullrank_advi", stl=True, progress=False)   # until converged
    d = fit.diagnose()
    assert d.khat < 0.5
    assert d.converged and d.skipped_steps == 0 and d.status == "good"
    assert "\n" not in repr(d) and "k-hat" in repr(fit)


def test_khat_bad_for_mean_field_on_a_correlated_target():
    fit = vi.fit(correlated, method="advi", steps=2000, learning_rate=0.05, stl=True, progress=False)
    d = fit.diagnose()
    assert d.khat > 0.7
    assert d.status == "bad" and "fullrank" in d.verdict


def test_importance_resampling_corrects_a_biased_mean():
    def gamma():
        vi.Gamma("x", 2.0, 1.0)              # mean 2; mean-field in log x is biased low

    fit = vi.fit(gamma, steps=2000, learning_rate=0.05, progress=False)
    plain = fit.sample(8000, seed=0)["x"].mean()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        corrected = fit.sample(8000, seed=0, importance=True)["x"].mean()
    assert abs(plain - 2.0) > 0.05
    assert abs(corrected - 2.0) < 0.5 * abs(plain - 2.0)


def test_convergence_rule():
    rng = np.random.default_rng(0)
    assert converged(5.0 + rng.normal(0, 1, 3000))[0]
    assert not converged(np.linspace(100.0, 10.0, 3000) + rng.normal(0, 1, 3000))[0]
    assert not converged(np.ones(60))[0]            # too few steps to tell


# --------------------------------------------------------------------------------------------
# reference MCMC and comparison
# --------------------------------------------------------------------------------------------

def test_nuts_from_advi_reproduces_the_analytic_posterior(normal_nuts):
    mu = normal_nuts.posterior["mu"].values
    assert mu.shape == (2, 400)
    assert abs(mu.mean() - POST_MEAN) < 0.05
    assert abs(mu.std() - POST_SD) < 0.12 * POST_SD
    assert int(normal_nuts.sample_stats["diverging"].sum()) == 0


def test_compare_nuts_with_itself_and_with_a_shift(normal_nuts, normal_fit):
    same = vi.compare(normal_nuts, normal_nuts).table.loc["mu"]
    assert same["mean_diff_sd"] == 0 and same["sd_ratio"] == 1 and same["wasserstein"] == 0
    mu = normal_nuts.posterior["mu"].values.ravel()
    shifted = vi.compare({"mu": mu + 0.5 * mu.std()}, {"mu": mu}).table.loc["mu"]
    assert np.isclose(shifted["mean_diff_sd"], 0.5) and np.isclose(shifted["sd_ratio"], 1.0)
    assert np.isclose(shifted["wasserstein"], 0.5 * mu.std(), rtol=1e-6)
    vi_vs_nuts = vi.compare(normal_fit, normal_nuts)
    assert abs(vi_vs_nuts.table.loc["mu", "mean_diff_sd"]) < 0.3
    assert abs(vi_vs_nuts.table.loc["mu", "sd_ratio"] - 1) < 0.15
    assert len(vi_vs_nuts.plot().axes) == 1


def test_find_map():
    def gamma():
        vi.Gamma("x", 3.0, 1.0)              # mode (3 - 1) / 1

    assert abs(float(vi.find_map(gamma)["x"]) - 2.0) < 1e-3
    assert abs(float(vi.find_map(normal_model, {"y": Y})["mu"]) - POST_MEAN) < 1e-3


def test_nuts_rejects_a_fit_of_another_model(normal_fit):
    with pytest.raises(ModelError, match="fitted to latent sites \\{'mu': \\(\\)\\} but this model has \\{'b': \\(\\)\\}"):
        vi.nuts(reg_model, {"x": X, "y": Y_REG}, init=normal_fit, draws=10, tune=10)


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------

def test_plots_return_figures(reg_fit):
    from matplotlib.figure import Figure

    fig = vi.plots.elbo(reg_fit, window=100)
    raw, smoothed = fig.axes[0].lines
    assert len(raw.get_ydata()) == len(reg_fit.hist)
    assert np.isclose(smoothed.get_ydata()[-1], reg_fit.hist[-100:].mean(), rtol=1e-5)
    fig = vi.plots.marginals(reg_fit, {"b": np.random.default_rng(0).normal(B_MEAN, B_SD, 1000)})
    assert [ax.get_title() for ax in fig.axes] == ["b"]
    fig = vi.plots.tracker({"mean": [[0.0, 1.0], [0.5, 1.5], [0.7, 1.7]], "std": np.ones(3)})
    assert [len(line.get_ydata()) for line in fig.axes[0].lines] == [3, 3]
    fig = vi.plots.predictive(reg_fit, n=100, n_lines=10)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 11
    fig.savefig(os.devnull, format="png")


def test_model_graph_without_graphviz_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(ImportError, match="pip install graphviz"):
        vi.model_graph(normal_model, {"y": Y})
