"""The answer a default fit reports: optimisation that reaches the optimum (whitened families,
iterate averages, a decreasing step size), stopping on the answer, the automatic step size, and a
verdict that is true about what the fit reports."""




import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import pytest  # noqa: E402
from numpyro.infer.autoguide import AutoNormal  # noqa: E402

import variational as vi  # noqa: E402
from variational.engine.schedule import status  # noqa: E402
from variational.families import full_rank, mean_field  # noqa: E402

# -- a Gaussian posterior with sds of 1e-3 and correlation 0.999: exact for a full-rank Gaussian --
SD, RHO = 1e-3, 0.999
MU = np.array([1.0, -2.0])
COV = SD**2 * np.array([[1.0, RHO], [RHO, 1.0]])


def tight_correlated():
    numpyro.sample("x", dist.MultivariateNormal(jnp.asarray(MU), covariance_matrix=jnp.asarray(COV)))


# -- conjugate normal mean: analytic posterior --------------------------------------------------
Y = np.random.default_rng(3).normal(2.0, 1.0, 50)
POST_VAR = 1.0 / (1.0 / 10.0**2 + Y.size)
POST_MEAN = POST_VAR * Y.sum()


def normal_mean(y):
    mu = vi.Normal("mu", 0.0, 10.0)
    vi.Normal("y", mu, 1.0, observed=y)


@pytest.fixture(scope="module")
def tight_fit():
    return vi.fit(tight_correlated, method="fullrank_advi", stl=True, progress=False, seed=0)


def test_fullrank_recovers_sds_of_1e3_and_correlation_0999_to_2_percent(tight_fit):
    fit = tight_fit
    assert fit.converged is True and fit.message.startswith("converged at step")
    mean, cov = np.asarray(fit.unconstrained_mean["x"]), fit.cov
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(mean - MU) < 0.02 * SD)                  # means to 2% of an sd
    assert np.all(np.abs(sd / SD - 1.0) < 0.02)                   # sds to 2%
    assert abs(cov[0, 1] / COV[0, 1] - 1.0) < 0.02                # the covariance to 2%
    # the hard direction: the conditional sd of x[1] given x[0] is SD * sqrt(1 - RHO^2) = 4.5e-5
    cond = np.sqrt(cov[1, 1] - cov[0, 1] ** 2 / cov[0, 0])
    assert abs(cond / (SD * np.sqrt(1 - RHO**2)) - 1.0) < 0.05
    assert fit.steps < 20_000


def test_rewhitening_keeps_q_and_from_the_second_stage_the_steps_are_in_q_sds(tight_fit):
    key = jax.random.PRNGKey(0)
    for fam in (mean_field(), full_rank()):
        p = fam.init(key, jnp.array([0.5, -1.0, 2.0]))
        p = {k: (v if k.startswith("pre_") else v + 0.3 * jax.random.normal(key, v.shape)) for k, v in p.items()}
        p = fam.rewhiten(p)      # a preconditioner that is not the identity
        p = {k: (v if k.startswith("pre_") else v + 0.3 * jax.random.normal(key, v.shape)) for k, v in p.items()}
        q = fam.rewhiten(p)
        np.testing.assert_allclose(fam.mean(q), fam.mean(p), rtol=1e-6)
        np.testing.assert_allclose(fam.cov(q), fam.cov(p), rtol=1e-5, atol=1e-7)
        z = fam.draw(p, key, 5)
        np.testing.assert_allclose(fam.log_q(q, z), fam.log_q(p, z), rtol=1e-5)
    st = status(tight_fit.state)
    assert st["whitened"] and st["stage"] >= 2
    assert 0.0 < tight_fit.learning_rate <= 0.3       # a fraction of q's sd per step


def test_steps_none_stops_on_the_answer_and_reports_the_average():
    fit = vi.fit(normal_mean, {"y": Y}, progress=False)     # every default
    assert fit.converged is True and fit.steps < 20_000 and fit.steps % 400 == 0
    st = status(fit.state)
    assert st["done"] and st["done_at"] == fit.steps and st["change"] <= st["allowed"]
    assert st["mcse"] <= 0.05
    sd = np.sqrt(POST_VAR)
    assert abs(float(fit.mean["mu"]) - POST_MEAN) < 0.1 * sd
    assert abs(float(fit.std["mu"]) / sd - 1.0) < 0.05
    # what is reported is the stage's average of the iterates, not the optimiser's iterate:
    # a few more steps move the iterate, not the answer
    before = float(fit.mean["mu"])
    fit.refine(50)
    assert float(fit.family.mean(fit.state.params)[0]) != float(fit.params["loc"][0])
    assert float(fit.mean["mu"]) == before


def test_a_numeric_learning_rate_keeps_the_constant_step_and_the_last_iterate():
    fit = vi.fit(normal_mean, {"y": Y}, steps=300, learning_rate=0.01, progress=False)
    assert fit.settings["schedule"] == "constant" and fit.state.opt_state.sched is None
    assert fit.learning_rate == pytest.approx(0.01) and fit.steps == 300
    assert float(fit.params["loc"][0]) == float(fit.family.mean(fit.state.params)[0])
    # asking for the schedule with a given starting rate averages
    sched = vi.fit(normal_mean, {"y": Y}, steps=1200, learning_rate=0.01, schedule="adaptive", progress=False)
    assert status(sched.state)["averaged"]


def test_the_schedule_resumes_exactly_however_the_run_is_split():
    whole = vi.fit(normal_mean, {"y": Y}, steps=2000, progress=False)
    parts = vi.fit(normal_mean, {"y": Y}, steps=700, progress=False).refine(900).refine(400)
    leaves = lambda f: jax.tree_util.tree_leaves(f.state)  # noqa: E731
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(leaves(whole), leaves(parts)))
    np.testing.assert_array_equal(whole.hist, parts.hist)
    assert float(whole.mean["mu"]) == float(parts.mean["mu"])


# -- the verdict --------------------------------------------------------------------------------
def tight_normal():
    vi.Normal("x", 1.0, 0.01)


def test_verdict_is_not_good_when_khat_is_low_but_q_means_are_off():
    # q wider than the posterior and shifted by 0.7 posterior sds (0.47 of q's sds): the weights
    # are bounded (k-hat low), but q's own mean is off, as on the ARMA(1,1) posterior
    fit = vi.fit(tight_normal, method="advi", steps=0, learning_rate=0.01, progress=False)
    p = dict(fit.state.params)
    p.update(pre_loc=jnp.array([1.007]), pre_scale=jnp.array([0.015]), loc=jnp.zeros(1),
             rho=jnp.array([float(np.log(np.expm1(1.0)))]))
    fit._set_state(fit.state._replace(params=p))
    d = fit.diagnose()
    assert d.khat < 0.5 and d.status != "good"
    assert 0.3 < d.shift < 0.5 and d.sd_ratio == pytest.approx(0.01 / 0.015, abs=0.05)
    assert "importance=True" in d.verdict
    corrected = fit.sample(4000, seed=1, importance=True)["x"]
    assert abs(corrected.mean() - 1.0) < 0.1 * 0.01


def test_verdict_of_mean_field_on_correlated_gaussian_names_the_sd_it_misses():
    corr = jnp.array([[1.0, 0.99], [0.99, 1.0]])
    fit = vi.fit(lambda: vi.MvNormal("x", jnp.zeros(2), cov=corr), method="advi", stl=True, progress=False)
    d = fit.diagnose()
    assert d.khat > 0.7 and d.status == "bad" and "fullrank" in d.verdict
    # the Laplace approximation of a Gaussian posterior is exact: its sds are 1, so the check is
    # q's smallest sd, the conditional sd sqrt(1 - 0.99^2) = 0.141 that mean-field finds
    q_sd = np.asarray(fit.unconstrained_std["x"])
    assert d.curvature == pytest.approx(q_sd.min(), rel=1e-3)
    assert d.curvature == pytest.approx(np.sqrt(1 - 0.99**2), rel=0.1)
    assert f"{1 / d.curvature:.1f} times" in d.verdict


def test_a_guide_fit_reports_a_finite_khat_and_a_verdict():
    fit = vi.fit(normal_mean, {"y": Y}, guide=AutoNormal(normal_mean), progress=False)
    d = fit.diagnose()
    assert np.isfinite(d.khat) and d.khat < 0.5 and d.status == "good"
    assert abs(float(fit.mean["mu"]) - POST_MEAN) < 0.1 * np.sqrt(POST_VAR)


# -- warm starts: from_gaussian and init_params in the whitened parameterisation -----------------
def test_from_gaussian_is_exactly_that_gaussian_and_warm_starts_keep_it():
    key = jax.random.PRNGKey(1)
    sds = np.array([1e-3, 1.0, 10.0])
    corr = np.array([[1.0, 0.999, 0.3], [0.999, 1.0, 0.3], [0.3, 0.3, 1.0]])
    cov, mean = corr * np.outer(sds, sds), np.array([1.0, -2.0, 30.0])
    fr, mf = full_rank(), mean_field()
    p = fr.from_gaussian(jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32))
    np.testing.assert_allclose(fr.mean(p), mean, rtol=1e-6)
    np.testing.assert_allclose(fr.cov(p), cov, rtol=1e-4, atol=1e-12)
    z = np.asarray(fr.draw(p, key, 200_000), np.float64)          # the draws have those moments
    np.testing.assert_allclose(z.std(0), sds, rtol=0.01)
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1] - 0.999) < 2e-4
    q = mf.from_gaussian(jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32))
    np.testing.assert_allclose(mf.mean(q), mean, rtol=1e-6)
    np.testing.assert_allclose(mf.std(q), sds, rtol=1e-5)
    # init_params= in the form fit.params shows: {"loc", "scale_tril"} for full-rank
    shown = {"loc": MU, "scale_tril": np.linalg.cholesky(COV)}
    fit = vi.fit(tight_correlated, method="fullrank_advi", init_params=shown, steps=0, progress=False)
    np.testing.assert_allclose(fit.cov, COV, rtol=1e-4)
    np.testing.assert_allclose(fit.params["scale_tril"], shown["scale_tril"], rtol=1e-5, atol=1e-9)
    with pytest.raises(vi.VariationalError, match="positive diagonal"):
        vi.fit(tight_correlated, method="fullrank_advi", init_params={"scale_tril": -np.eye(2)}, steps=0,
               progress=False)
    # a Laplace start on a Gaussian posterior is the posterior, and a full-rank fit starts there
    lap = vi.fit(tight_correlated, method="laplace", progress=False)
    warm = vi.fit(tight_correlated, method="fullrank_advi", init=lap, steps=0, progress=False)
    np.testing.assert_allclose(warm.unconstrained_mean["x"], MU, atol=1e-2 * SD)
    np.testing.assert_allclose(warm.cov, COV, rtol=0.02)
