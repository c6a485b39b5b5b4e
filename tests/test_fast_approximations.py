"""Laplace, DADVI and Pathfinder (the direct methods) and init=, each against a known truth."""



import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import variational as vi  # noqa: E402
from variational.families import full_rank, low_rank, mean_field  # noqa: E402

# -- a Bayesian linear regression with known noise: its posterior is exactly Gaussian ------------
_rng = np.random.default_rng(3)
_X = _rng.normal(size=(40, 3)) @ np.array([[1.0, 0.9, 0.0], [0.0, 0.4, 0.5], [0.0, 0.0, 2.0]])
_Y = _X @ np.array([0.5, -1.0, 2.0]) + _rng.normal(size=40)
PRIOR_SD, NOISE_SD = 3.0, 1.0


def regression(x, y):
    beta = vi.Normal("beta", 0.0, PRIOR_SD, shape=3)
    vi.Normal("y", x @ beta, NOISE_SD, observed=y)


DATA = {"x": _X, "y": _Y}
EXACT_COV = np.linalg.inv(_X.T @ _X / NOISE_SD**2 + np.eye(3) / PRIOR_SD**2)
EXACT_MEAN = EXACT_COV @ _X.T @ _Y / NOISE_SD**2


@pytest.fixture(scope="module")
def laplace_fit():
    return vi.fit(regression, DATA, method="laplace", progress=False)


@pytest.fixture(scope="module")
def dadvi_fit():
    return vi.fit(regression, DATA, method="dadvi", progress=False)


def _relative_cov_error(cov):
    sd = np.sqrt(np.diag(EXACT_COV))
    return np.max(np.abs(np.asarray(cov) - EXACT_COV) / np.outer(sd, sd))


def _gaussian(fit):
    p = fit.state.params
    return np.asarray(p["loc"], np.float64), np.asarray(p["chol"] @ p["chol"].T, np.float64)


def test_laplace_and_dadvi_with_linear_response_recover_the_exact_covariance(laplace_fit, dadvi_fit):
    corr = EXACT_COV / np.sqrt(np.outer(np.diag(EXACT_COV), np.diag(EXACT_COV)))
    assert abs(corr[0, 1]) > 0.5                     # the test is about correlations
    sd = np.sqrt(np.diag(EXACT_COV))
    for fit in (laplace_fit, dadvi_fit):
        mean, cov = _gaussian(fit)                   # the Gaussian each method found
        assert _relative_cov_error(cov) < 0.02, fit.method
        assert np.max(np.abs(mean - EXACT_MEAN) / sd) < 0.02, fit.method
        # what the fit reports (Laplace: its importance-weighted pool of 4000 draws)
        assert _relative_cov_error(fit.cov) < 0.1, fit.method
        assert np.max(np.abs(np.asarray(fit.flat_moments()[0]) - EXACT_MEAN) / sd) < 0.1, fit.method
    # the mean-field sds DADVI optimised are the conditional ones, smaller than the marginal
    # sds; the linear-response covariance is what restores them
    mf = dadvi_fit.solution.info["mean_field_std"]
    assert np.min(mf / sd) < 0.5
    assert np.allclose(dadvi_fit.std["beta"], np.sqrt(np.diag(EXACT_COV)), rtol=0.05)   # 4000 draws


def test_direct_fits_report_what_happened(laplace_fit, dadvi_fit):
    for fit in (laplace_fit, dadvi_fit):
        assert fit.converged and fit.steps == len(fit.hist) > 0
        assert fit.grad_evals > fit.steps
        assert fit.diagnose().status == "good"       # q is the exact posterior here
        assert fit.to_arviz(n=50).posterior["beta"].shape == (1, 50, 3)
    # DADVI's gradients are those of num_draws draws per objective evaluation
    assert dadvi_fit.grad_evals >= 30 * dadvi_fit.steps
    # Monte Carlo error of the means: antithetic draws make it vanish on a Gaussian posterior
    assert np.all(dadvi_fit.mcse["beta"] < 1e-3 * np.sqrt(np.diag(EXACT_COV)))
    with pytest.raises(vi.VariationalError, match="nothing|no steps"):
        laplace_fit.refine(10)
    with pytest.raises(vi.VariationalError, match="Monte Carlo"):
        laplace_fit.mcse


def test_dadvi_objective_decreases_monotonically_and_repeats_exactly_for_a_seed():
    def model(y):
        mu = vi.Normal("mu", 0.0, 5.0)
        sigma = vi.HalfNormal("sigma", 2.0)
        vi.StudentT("y", 4.0, mu, sigma, observed=y)

    y = {"y": np.random.default_rng(1).standard_t(4, size=30) * 0.7 + 1.0}
    a = vi.fit(model, y, method="dadvi", seed=5, antithetic=False, progress=False)
    b = vi.fit(model, y, method="dadvi", seed=5, antithetic=False, progress=False)
    c = vi.fit(model, y, method="dadvi", seed=6, antithetic=False, progress=False)
    assert a.steps > 5 and np.all(np.diff(a.hist) <= 0)
    for k in a.state.params:
        np.testing.assert_array_equal(np.asarray(a.state.params[k]), np.asarray(b.state.params[k]))
    np.testing.assert_array_equal(a.hist, b.hist)
    # another seed: other base draws, another (but close) answer, within a few of its MC errors
    diff = abs(float(c.state.params["loc"][0] - a.state.params["loc"][0]))
    assert 0 < diff < 5 * float(a.mcse["mu"]) * np.sqrt(2)


def test_laplace_names_the_sites_where_the_hessian_is_not_negative_definite():
    def model(y):
        vi.Flat("drift")                  # appears nowhere else: zero curvature
        mu = vi.Normal("mu", 0.0, 1.0)
        vi.Normal("y", mu, 1.0, observed=y)

    with pytest.raises(vi.VariationalError, match=r"not positive definite.*'?drift"):
        vi.fit(model, {"y": np.zeros(5)}, method="laplace", progress=False)


@pytest.mark.parametrize("method", ["pathfinder", "laplace", "dadvi"])
def test_direct_methods_refuse_minibatches_by_name(method):
    with pytest.raises(vi.DataError, match=f"method='{method}'.*batch_size=10"):
        vi.fit(regression, DATA, method=method, batch_size=10, progress=False)


def test_from_gaussian_round_trips_through_each_family():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    cov, mean = jnp.asarray(a @ a.T + 0.5 * np.eye(4), jnp.float32), jnp.asarray(rng.normal(size=4), jnp.float32)
    fr, mf, lr = full_rank(), mean_field(), low_rank(rank=4)
    np.testing.assert_allclose(fr.cov(fr.from_gaussian(mean, cov)), cov, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lr.cov(lr.from_gaussian(mean, cov)), cov, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mf.cov(mf.from_gaussian(mean, cov)), jnp.diag(jnp.diag(cov)), rtol=1e-5)
    for fam in (fr, mf, lr):
        np.testing.assert_allclose(fam.mean(fam.from_gaussian(mean, cov)), mean)
    # a rank-1 family keeps the leading direction: its covariance along it is exact
    one = low_rank(rank=1)
    lam, vec = np.linalg.eigh(np.asarray(cov))
    v = vec[:, -1]
    assert float(v @ np.asarray(one.cov(one.from_gaussian(mean, cov))) @ v) == pytest.approx(lam[-1], rel=0.05)


def test_stochastic_families_start_from_a_direct_fit(laplace_fit):
    fit = vi.fit(regression, DATA, method="fullrank_advi", init=laplace_fit, steps=0, progress=False)
    np.testing.assert_allclose(fit.cov, laplace_fit.cov, rtol=1e-3, atol=1e-6)
    mf = vi.fit(regression, DATA, method="advi", init=laplace_fit, steps=0, progress=False)
    np.testing.assert_allclose(np.diag(mf.cov), np.diag(laplace_fit.cov), rtol=1e-3)
    assert mf.grad_evals == laplace_fit.grad_evals
    with pytest.raises(ValueError, match="init='nuts'.*direct method"):
        vi.fit(regression, DATA, method="advi", init="nuts", steps=0, progress=False)
    with pytest.raises(ValueError, match="svgd.*cannot start"):
        vi.fit(regression, DATA, method="svgd", init=laplace_fit, steps=0, progress=False)


def test_a_direct_fit_saves_and_loads(tmp_path, dadvi_fit):
    path = dadvi_fit.save(tmp_path / "dadvi.npz")
    back = vi.load(path, regression, DATA)
    np.testing.assert_array_equal(back.cov, dadvi_fit.cov)
    np.testing.assert_array_equal(back.hist, dadvi_fit.hist)
    assert back.converged and back.method == "dadvi"


# -- Pathfinder ---------------------------------------------------------------------------------
def banana():
    x1 = vi.Normal("x1", 0.0, 1.0)
    vi.Normal("x2", 2.0 * x1**2, 0.5)


def test_pathfinder_on_a_banana_has_a_higher_elbo_than_the_laplace_point():
    pf = vi.fit(banana, method="pathfinder", progress=False)
    lap = vi.fit(banana, method="laplace", progress=False)
    # the banana is normalised (log Z = 0): ELBO = -KL(q || p)
    e_pf, se_pf = pf.elbo(num_draws=4000, seed=0, return_se=True)
    e_lap, se_lap = lap.elbo(num_draws=4000, seed=0, return_se=True)
    assert e_lap < -1.0 and e_pf <= 0.05
    assert e_pf - e_lap > 5 * np.hypot(se_pf, se_lap)
    # the resampled draws are closer to the exact moments (E x2 = 2, sd x2 = sqrt(8.25))
    draws = pf.sample(4000, seed=1)
    assert abs(draws["x2"].mean() - 2.0) < abs(lap.mean["x2"] - 2.0)


def test_multipath_resampling_gives_each_mode_its_mass():
    w, mu = jnp.array([0.3, 0.7]), jnp.array([-4.0, 4.0])

    def two_modes():
        vi.NormalMixture("x", w, mu, 0.5)

    fit = vi.fit(two_modes, method="pathfinder", num_paths=8, jitter=3.0, seed=0, progress=False)
    ends = np.asarray(fit.state.params["approx"].mu)[:, 0]
    n_left = int(np.sum(ends < 0))
    assert 0 < n_left < 8 and abs(n_left / 8 - 0.3) > 0.1   # both modes found, not in 3:7
    x = fit.sample(4000, seed=0)["x"]
    assert np.mean(x < 0) == pytest.approx(0.3, abs=0.04)
    assert fit.diagnose().khat < 0.5
    assert fit.solution.info["khat"] < 0.5 and len(fit.solution.info["paths"]) == 8
