"""Marginal quantiles and medians, unconstrained draws under PyMC's names, ``init_params=`` and
guides without parameters.

Truths: the Gaussian marginal quantiles pushed through each site's monotone bijection (computed
here with scipy from the fit's mean and covariance); empirical quantiles of many draws; the
conjugate normal model's evidence in closed form (a guide equal to the exact posterior gives
``log p(y)`` at every draw).
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints
from scipy.special import expit, logit
from scipy.stats import norm

import variational as vi

Q = np.array([0.05, 0.25, 0.5, 0.75, 0.95])


def sites_model():
    mu = vi.Normal("mu", 1.0, 1.0)
    vi.HalfNormal("s", 1.0)
    vi.Uniform("u", -1.0, 3.0, shape=2)
    vi.Beta("p", 2.0, 3.0)
    vi.Site("ub", dist.TruncatedNormal(0.0, 1.0, high=1.0))   # upper bound: a decreasing bijection
    vi.Dirichlet("w", jnp.ones(3))
    vi.Deterministic("twice", 2 * mu)


@pytest.fixture(scope="module")
def fullrank_fit():
    # any q will do: the identity holds whether or not the fit has converged
    return vi.fit(sites_model, method="fullrank_advi", steps=200, learning_rate=0.02, progress=False)


def test_fullrank_quantiles_are_the_gaussian_marginal_quantiles(fullrank_fit):
    fit = fullrank_fit
    got = fit.quantiles(Q)
    lay = {s.name: s for s in fit.logdensity.layout}
    m, sd = np.asarray(fit.family.mean(fit.state.params)), np.sqrt(np.diag(fit.cov))
    z = lambda name, q: (m[lay[name].offset:lay[name].offset + lay[name].size]  # noqa: E731
                         + sd[lay[name].offset:lay[name].offset + lay[name].size] * norm.ppf(q)[:, None])
    np.testing.assert_allclose(got["mu"], z("mu", Q)[:, 0], rtol=1e-5)
    np.testing.assert_allclose(got["s"], np.exp(z("s", Q))[:, 0], rtol=1e-5)
    np.testing.assert_allclose(got["u"], -1.0 + 4.0 * expit(z("u", Q)), rtol=1e-5)
    np.testing.assert_allclose(got["p"], expit(z("p", Q))[:, 0], rtol=1e-5)
    np.testing.assert_allclose(got["ub"], 1.0 - np.exp(z("ub", 1 - Q))[:, 0], rtol=1e-5)
    assert got["w"].shape == (5, 3) and got["twice"].shape == (5,)
    np.testing.assert_allclose(fit.median["s"], np.exp(z("s", np.array([0.5])))[0, 0], rtol=1e-5)
    # and other draws agree (the simplex and the deterministic site come from the 4000 summary
    # draws: the 0.05 and 0.95 quantiles of two sets of 4000 draws differ by under 0.15 sd)
    draws = fit.sample(4000, seed=1)
    for name in ("mu", "s", "u", "p", "ub", "w", "twice"):
        tol = 0.15 * draws[name].std(0)
        assert np.all(np.abs(got[name] - np.quantile(draws[name], Q, axis=0)) < tol), name


def test_particle_quantiles_are_the_particles_own():
    def positive():
        vi.HalfNormal("s", 1.0)

    fit = vi.fit(positive, method="svgd", n_particles=40, steps=50, progress=False)
    s = np.exp(np.asarray(fit.params["particles"])[:, 0])
    assert float(fit.median["s"]) == pytest.approx(float(np.median(s)), rel=1e-5)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        fit.quantiles([0.5, 1.0])


def test_include_transformed_adds_the_unconstrained_values_under_pymc_names(fullrank_fit):
    d = fullrank_fit.sample(50, seed=3, include_transformed=True)
    assert {"s_log__", "u_interval__", "p_logodds__", "ub_upperbound__", "w_simplex__"} <= set(d)
    assert "mu_" not in "".join(k for k in d if k.endswith("__"))           # real sites: none
    np.testing.assert_allclose(d["s_log__"], np.log(d["s"]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d["p_logodds__"], logit(d["p"]), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(d["u_interval__"], logit((d["u"] + 1) / 4), rtol=1e-3, atol=1e-4)
    assert d["w_simplex__"].shape == (50, 2)
    plain = fullrank_fit.sample(50, seed=3)
    np.testing.assert_array_equal(plain["s"], d["s"])


# -- guides --------------------------------------------------------------------------------------

Y = np.random.default_rng(0).normal(1.0, 1.0, size=20)
PREC = len(Y) + 1 / 100
POST_MEAN, POST_SD = Y.sum() / PREC, PREC**-0.5
_COV = np.eye(len(Y)) + 100.0
LOG_EVIDENCE = float(-0.5 * (len(Y) * np.log(2 * np.pi) + np.linalg.slogdet(_COV)[1] + Y @ np.linalg.solve(_COV, Y)))


def conjugate(y):
    vi.Normal("y", vi.Normal("mu", 0.0, 10.0), 1.0, observed=y)


def guide(y):
    m = numpyro.param("m", 0.0)
    s = numpyro.param("s", 1.0, constraint=constraints.positive)
    numpyro.sample("mu", dist.Normal(m, s))


def test_a_guide_without_parameters_is_evaluated_as_a_fixed_q():
    def exact(y):
        numpyro.sample("mu", dist.Normal(POST_MEAN, POST_SD))

    fit = vi.fit(conjugate, {"y": Y}, guide=exact, steps=20, progress=False)
    assert fit.params == {}
    # q is the posterior: log p(y, mu) - log q(mu) = log p(y) at every draw
    np.testing.assert_allclose(-fit.hist, LOG_EVIDENCE, rtol=1e-5)
    assert fit.elbo() == pytest.approx(LOG_EVIDENCE, rel=1e-5)
    assert float(fit.mean["mu"]) == pytest.approx(POST_MEAN, abs=0.02)


def test_init_params_set_a_guide_s_constrained_parameters_and_a_family_s_pytree():
    fit = vi.fit(conjugate, {"y": Y}, guide=guide, init_params={"m": 3.0, "s": 0.5}, steps=0,
                 progress=False)
    assert (float(fit.params["m"]), float(fit.params["s"])) == pytest.approx((3.0, 0.5), rel=1e-6)
    assert float(fit.state.params["s"]) == pytest.approx(np.log(0.5), rel=1e-6)   # raw: unconstrained
    moved = vi.fit(conjugate, {"y": Y}, guide=guide, init_params={"m": 3.0}, steps=3000,
                   num_particles=4, learning_rate=0.01, progress=False)
    assert float(moved.params["m"]) == pytest.approx(POST_MEAN, abs=0.05)
    adv = vi.fit(conjugate, {"y": Y}, method="advi", init_params={"loc": [2.0]}, steps=0, progress=False)
    assert float(adv.params["loc"][0]) == 2.0 and float(adv.median["mu"]) == pytest.approx(2.0)
    for bad, msg in [({"q": 1.0}, r"\['q'\].*\['m', 's'\]"), ({"s": -1.0}, "outside the constraint"),
                     ({"m": [1.0, 2.0]}, "shape"), ({"m": np.nan}, "NaN")]:
        with pytest.raises(vi.VariationalError, match=msg):     # what vi.fit(init_params=bad) runs
            vi.families.with_init_params(fit.family, fit.state.params, bad)
    with pytest.raises(vi.VariationalError, match="init_params="):
        vi.fit(conjugate, {"y": Y}, init=adv, init_params={"loc": [1.0]}, steps=0, progress=False)
