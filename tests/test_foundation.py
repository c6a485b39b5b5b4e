"""The foundation: model layer, Gaussian families, ELBO, compiled engine, result object."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
import scipy.stats

import variational as vi
from variational.engine import Engine

# ------------------------------------------------------------------------------------------
# shared small models
# ------------------------------------------------------------------------------------------

Y = np.random.default_rng(1).normal(2.0, 1.0, 50)
PRIOR_SD = 10.0
# conjugate posterior of mu | y for y_i ~ N(mu, 1), mu ~ N(0, 10^2)
POST_VAR = 1.0 / (1.0 / PRIOR_SD**2 + len(Y))
POST_MEAN = POST_VAR * Y.sum()


def normal_model(y):
    mu = vi.Normal("mu", 0.0, PRIOR_SD)
    vi.Normal("y", mu, 1.0, observed=y)


def normal_model_numpyro(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


COV = np.array([[1.0, 0.8], [0.8, 1.0]])


def mvn_model():
    vi.MvNormal("x", jnp.zeros(2), cov=jnp.asarray(COV))


# ------------------------------------------------------------------------------------------
# accuracy against known posteriors
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [dict(stl=True), dict(num_particles=8)], ids=["stl", "8-particles"])
def test_conjugate_normal_matches_analytic_posterior(kw):
    fit = vi.fit(normal_model, {"y": Y}, steps=2000, learning_rate=0.05, progress=False, **kw)
    assert abs(float(fit.mean["mu"]) / POST_MEAN - 1) < 0.03
    assert abs(float(fit.std["mu"]) / np.sqrt(POST_VAR) - 1) < 0.03
    assert abs(float(fit.unconstrained_std["mu"]) / np.sqrt(POST_VAR) - 1) < 0.03


def test_fullrank_recovers_correlation_meanfield_does_not():
    full = vi.fit(mvn_model, method="fullrank_advi", steps=2000, learning_rate=0.05, stl=True, progress=False)
    mf = vi.fit(mvn_model, method="advi", steps=2000, learning_rate=0.01, stl=True, progress=False)
    r_full = np.corrcoef(full.sample(4000, seed=1)["x"].T)[0, 1]
    r_mf = np.corrcoef(mf.sample(4000, seed=1)["x"].T)[0, 1]
    assert abs(r_full - 0.8) < 0.05
    assert abs(r_mf) < 0.05
    # the family's own covariance (unconstrained = constrained here) matches the target
    np.testing.assert_allclose(full.cov, COV, atol=0.1)
    assert full.cov.shape == (2, 2)
    # mean-field: the optimal sd of a Gaussian with correlation rho is sqrt(1 - rho^2)
    np.testing.assert_allclose(mf.unconstrained_std["x"], np.sqrt(1 - 0.8**2), rtol=0.05)


def test_constrained_sites_come_back_in_their_space():
    def model():
        vi.HalfNormal("s", 2.0, shape=3)
        vi.Uniform("u", -1.0, 4.0)
        vi.Dirichlet("w", jnp.ones(4))
        vi.Deterministic("s_sum", vi.HalfNormal("t", 1.0) * 2)

    fit = vi.fit(model, steps=0, progress=False)   # where draws land, whatever the parameters
    d = fit.sample(300, seed=0)
    assert d["s"].shape == (300, 3) and (d["s"] > 0).all()
    assert ((d["u"] > -1) & (d["u"] < 4)).all()
    assert d["w"].shape == (300, 4) and (d["w"] > 0).all()
    np.testing.assert_allclose(d["w"].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(d["s_sum"], 2 * d["t"], rtol=1e-6)
    # Dirichlet(1,1,1,1) has 3 unconstrained coordinates
    lay = {s.name: s for s in fit.logdensity.layout}
    assert lay["w"].unconstrained_shape == (3,) and lay["w"].shape == (4,)
    assert fit.unconstrained_mean["w"].shape == (3,)


def test_same_seed_same_numbers_and_different_seed_differs():
    a = vi.fit(normal_model, {"y": Y}, steps=300, seed=3, progress=False)
    b = vi.fit(normal_model, {"y": Y}, steps=300, seed=3, progress=True)
    c = vi.fit(normal_model, {"y": Y}, steps=300, seed=4, progress=False)
    np.testing.assert_array_equal(a.hist, b.hist)
    assert not np.array_equal(a.hist, c.hist)
    np.testing.assert_array_equal(a.sample(5, seed=1)["mu"], b.sample(5, seed=1)["mu"])


def test_numpyro_model_and_constructor_model_give_same_logp_and_elbo():
    ld_vi = vi.LogDensity(normal_model, {"y": Y})
    ld_np = vi.LogDensity(normal_model_numpyro, {"y": Y})
    z = jnp.array([1.7])
    analytic = scipy.stats.norm.logpdf(1.7, 0, PRIOR_SD) + scipy.stats.norm.logpdf(Y, 1.7, 1.0).sum()
    # each function compiled once (called eagerly, every jax.numpy op inside compiles on its own)
    np.testing.assert_allclose(jax.jit(ld_vi.logp)(z, {"y": Y}), analytic, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(ld_np.logp)(z, {"y": Y}), analytic, rtol=1e-5)
    fam = vi.mean_field()
    p = fam.init(jax.random.PRNGKey(0), z)
    e1, e2 = (jax.jit(lambda p, k, b, lp=lp: vi.elbo(fam, lp, p, k, b, num_particles=16))(
        p, jax.random.PRNGKey(5), {"y": Y}) for lp in (ld_vi.logp, ld_np.logp))
    np.testing.assert_allclose(e1, e2, rtol=1e-6)


def test_logp_includes_jacobian():
    def model():
        vi.HalfNormal("s", 1.0)

    ld = vi.LogDensity(model)
    u = 0.3  # s = exp(u); log p(u) = log HalfNormal(exp(u)) + u
    expected = scipy.stats.halfnorm.logpdf(np.exp(u)) + u
    # each compiled once (called eagerly, every jax.numpy op inside compiles on its own)
    np.testing.assert_allclose(jax.jit(ld.logp)(jnp.array([u])), expected, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(ld.constrain)(jnp.array([u]))["s"], np.exp(u), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(ld.unconstrain)({"s": np.exp(u)}), [u], rtol=1e-5)


# ------------------------------------------------------------------------------------------
# engine: NaN guard, refine, warm start, optimisers
# ------------------------------------------------------------------------------------------

def test_nonfinite_steps_are_skipped_and_counted():
    # a loss whose gradient is NaN on every third step
    def loss_and_grad(params, key, batch):
        bad = jax.random.uniform(key) < 1 / 3
        loss = jnp.sum((params - 1.0) ** 2)
        g = 2 * (params - 1.0)
        return jnp.where(bad, jnp.nan, loss), jnp.where(bad, jnp.nan, g)

    eng = Engine(loss_and_grad, optax.sgd(0.1), capacity=64)
    st = eng.init_state(jnp.zeros(2), jax.random.PRNGKey(0))
    st, rep = eng.run(st, {}, jax.random.PRNGKey(0), 200)
    n_bad = int(np.isnan(rep.losses).sum())
    assert 40 < n_bad < 100 and int(st.skipped) == n_bad
    assert np.all(np.isfinite(np.asarray(st.params)))
    np.testing.assert_allclose(st.params, 1.0, atol=1e-4)


def test_chunking_does_not_change_results():
    def loss_and_grad(params, key, batch):
        return jax.value_and_grad(lambda p: jnp.sum((p - jax.random.normal(key, p.shape)) ** 2))(params)

    key = jax.random.PRNGKey(0)
    small = Engine(loss_and_grad, optax.adam(0.05), capacity=7)
    big = Engine(loss_and_grad, optax.adam(0.05), capacity=500)
    s1, r1 = small.run(small.init_state(jnp.zeros(3), key), {}, key, 100)
    s2, r2 = big.run(big.init_state(jnp.zeros(3), key), {}, key, 100)
    np.testing.assert_array_equal(r1.losses, r2.losses)
    np.testing.assert_array_equal(s1.params, s2.params)


def test_refine_continues_and_warm_start():
    fit = vi.fit(normal_model, {"y": Y}, steps=200, learning_rate=0.01, progress=False)
    fit.refine(300)
    assert len(fit.hist) == 500 and fit.steps == 500
    # warm start on new data of the same shape starts near the old solution
    y2 = Y + 1.0
    warm = vi.fit(normal_model, {"y": y2}, init=fit, steps=1, learning_rate=0.01, progress=False)
    cold = vi.fit(normal_model, {"y": y2}, steps=1, learning_rate=0.01, progress=False)
    assert abs(float(warm.params["loc"][0]) - float(fit.params["loc"][0])) < 0.05
    assert abs(float(cold.params["loc"][0]) - float(fit.params["loc"][0])) > 1.0


@pytest.mark.parametrize("name", ["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamax"])
def test_named_optimizers_converge(name):
    lr = {"sgd": 1e-3, "momentum": 1e-4, "adagrad": 0.3}.get(name, 2e-2)
    fit = vi.fit(normal_model, {"y": Y}, steps=1500, optimizer=name, learning_rate=lr,
                 stl=True, progress=False)
    assert abs(float(fit.params["loc"][0]) - POST_MEAN) < 0.1


def test_optax_object_is_accepted():
    fit = vi.fit(normal_model, {"y": Y}, steps=1500, optimizer=optax.chain(optax.clip(1.0), optax.adam(0.02)),
                 stl=True, progress=False)
    assert abs(float(fit.params["loc"][0]) - POST_MEAN) < 0.1


def test_result_object_exports():
    fit = vi.fit(normal_model, {"y": Y}, method="advi", steps=300, learning_rate=0.05, progress=False)
    # the predictive and log-likelihood groups are tested in test_posterior.py and test_ecosystem.py
    idata = fit.to_arviz(n=40, posterior_predictive=False, log_likelihood=False)
    assert idata.posterior["mu"].shape == (1, 40)
    assert idata.optimization["loss"].shape == (300,)
    np.testing.assert_array_equal(idata.optimization["loss"].values, fit.hist)
    assert idata.optimization.attrs["steps"] == 300 and idata.optimization.attrs["method"] == "advi"
    text = repr(fit)
    assert "advi" in text and "mu" in text and "skipped_steps=0" in text
    assert list(fit.summary().index) == ["mu"]


def test_dataframe_input():
    import pandas as pd

    fit = vi.fit(normal_model, pd.DataFrame({"y": Y}), steps=1000, learning_rate=0.05, stl=True, progress=False)
    assert abs(float(fit.mean["mu"]) / POST_MEAN - 1) < 0.03


# ------------------------------------------------------------------------------------------
# clear errors that name what the user wrote
# ------------------------------------------------------------------------------------------

def test_discrete_latent_is_a_clear_error():
    def model():
        vi.Bernoulli("z", 0.3)

    with pytest.raises(vi.ModelError, match=r"site 'z'.*discrete.*marginalise"):
        vi.fit(model, steps=1, progress=False)


def test_observed_nan_is_a_clear_error():
    y = Y.copy()
    y[7] = np.nan
    with pytest.raises(vi.DataError, match=r"column 'y' has NaN or inf at row 7"):
        vi.fit(normal_model, {"y": y}, steps=1, progress=False)
    with pytest.raises(vi.DataError, match=r"column 'y' has NaN or inf at row 7"):
        vi.fit(normal_model_numpyro, {"y": y}, steps=1, progress=False)
    with pytest.raises(vi.ModelError, match=r"site 'y'.*NaN.*\[\[7\]\]"):   # values given in the model
        vi.fit(lambda: normal_model(jnp.asarray(y)), steps=1, progress=False)


def test_shapes_that_do_not_broadcast_are_clear_errors():
    def bad_params():
        vi.Normal("a", jnp.zeros(3), jnp.ones(4))

    def column_vs_row(y):
        mu = vi.Normal("mu", 0, 1, shape=5)
        vi.Normal("obs", mu, 1.0, observed=y[:, None])

    def bad_shape():
        vi.Normal("b", jnp.zeros(3), 1.0, shape=4)

    with pytest.raises(vi.ModelError, match="site 'a'.*broadcast"):
        vi.fit(bad_params, steps=1, progress=False)
    with pytest.raises(vi.ModelError, match=r"site 'obs'.*\(5, 5\)"):
        vi.fit(column_vs_row, {"y": np.zeros(5)}, steps=1, progress=False)
    with pytest.raises(vi.ModelError, match="site 'b'.*shape=\\(4,\\)"):
        vi.fit(bad_shape, steps=1, progress=False)


def test_model_that_raises_names_the_last_site():
    def model():
        vi.Normal("first", 0, 1)
        raise RuntimeError("boom")

    with pytest.raises(vi.ModelError, match="RuntimeError after site 'first'.*boom"):
        vi.fit(model, steps=1, progress=False)


def test_parameter_outside_support_is_a_clear_error():
    def neg_scale():
        vi.HalfNormal("s", -1.0)

    with pytest.raises(vi.ModelError, match="site 's': HalfNormal's scale must be positive, got -1.0"):
        vi.fit(neg_scale, steps=1, progress=False)

    def counts(k):
        lam = vi.Exponential("lam", 1.0)
        vi.Poisson("k", lam, observed=k)

    with pytest.raises(vi.DataError, match="site 'k' \\(Poisson\\) observes data column 'k', which holds -2.0"):
        vi.fit(counts, {"k": np.array([1.0, -2.0, 3.0])}, steps=1, progress=False)
    with pytest.raises(vi.ModelError, match="start value for 'lam'.*outside its support"):
        vi.fit(counts, {"k": np.array([1, 2, 3])}, start={"lam": -1.0}, steps=1, progress=False)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="method='nope'"):
        vi.fit(normal_model, {"y": Y}, method="nope", steps=1, progress=False)
    with pytest.raises(ValueError, match="optimizer='adamw2'"):
        vi.fit(normal_model, {"y": Y}, optimizer="adamw2", steps=1, progress=False)
    with pytest.raises(ValueError, match="learning_rate"):
        vi.fit(normal_model, {"y": Y}, learning_rate=-1, steps=1, progress=False)
    with pytest.raises(vi.DataError, match="column 'name'"):
        vi.fit(normal_model, {"y": Y, "name": np.array(["a"] * len(Y))}, steps=1, progress=False)
    with pytest.raises(vi.ModelError, match="keyword arguments"):
        vi.fit(normal_model, {"yy": Y}, steps=1, progress=False)
    fit = vi.fit(normal_model, {"y": Y}, steps=1, progress=False)
    with pytest.raises(ValueError, match="warm starts need the same latent sites"):
        vi.fit(mvn_model, init=fit, steps=1, progress=False)


# ------------------------------------------------------------------------------------------
# demo and command line
# ------------------------------------------------------------------------------------------

def test_demo_at_a_few_thousand_steps_finds_the_residual_scale(tmp_path):
    """The demo's fit, short and without NUTS (the fast suite's version of the test below)."""
    from variational.cli.demo import run

    res = run(out=tmp_path, steps=3000, progress=False, nuts_draws=0)
    assert res["png"].exists() and res["png"].stat().st_size > 10_000
    got = {k: (m, s) for k, _, m, s, _ in res["recovery"]}
    assert abs(got["eps"][0] - res["data"].truth["eps"]) < 0.1
    assert "nuts" not in res


@pytest.mark.slow
def test_demo_recovers_known_parameters(tmp_path):
    from variational.cli.demo import run

    res = run(out=tmp_path, steps=20_000, progress=False)
    assert res["png"].exists() and res["png"].stat().st_size > 10_000
    got = {k: (m, s) for k, _, m, s, _ in res["recovery"]}
    truth = res["data"].truth
    # the residual scale is well identified by 919 rows
    assert abs(got["eps"][0] - truth["eps"]) < 0.1
    assert abs(got["mu_alpha"][0] - truth["mu_alpha"]) < 0.2
    # the demo ends with NUTS from the ADVI solution: it also finds eps, and agrees with ADVI on it
    assert res["overlay_png"].exists() and res["overlay_png"].stat().st_size > 10_000
    assert abs(float(res["nuts"].posterior["eps"].mean()) - truth["eps"]) < 0.1
    assert abs(res["comparison"].table.loc["eps", "mean_diff_sd"]) < 1.0


def test_cli_help_in_a_fresh_process():
    """The real entry point (``python -m variational``) in a process of its own: the one subprocess
    of the fast suite's command-line tests; the others call ``variational.cli.main`` in-process."""
    out = subprocess.run([sys.executable, "-m", "variational", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout


def test_cli_unknown_command_exits_2_and_names_it(capsys):
    from variational.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["nope"])
    assert exc.value.code == 2 and "unknown command 'nope'" in capsys.readouterr().err
