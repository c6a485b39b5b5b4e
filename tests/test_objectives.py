"""Objectives beyond the ELBO: Renyi bound, KL weight (beta-ELBO), closed-form KL for mean-field.

Truths: the conjugate normal model's posterior and evidence in closed form; the tempered
posterior (the optimum of the beta-ELBO) in closed form; the KL between two Gaussians; the
identity of the estimators at the limits (alpha -> 1, kl_weight = 1).
"""

import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints

import variational as vi
from variational.families import mean_field
from variational.objectives import elbo, meanfield_elbo, renyi_bound, weighted_elbo

Y = np.random.default_rng(0).normal(1.0, 1.0, size=20)
N, PRIOR_SD = len(Y), 10.0
PREC = N + 1 / PRIOR_SD**2
POST_MEAN, POST_SD = Y.sum() / PREC, PREC**-0.5
# log p(y) = log N(y; 0, I + PRIOR_SD^2 11^T)
_COV = np.eye(N) + PRIOR_SD**2
LOG_EVIDENCE = float(-0.5 * (N * np.log(2 * np.pi) + np.linalg.slogdet(_COV)[1] + Y @ np.linalg.solve(_COV, Y)))


def conjugate(y):
    mu = vi.Normal("mu", 0.0, PRIOR_SD)
    vi.Normal("y", mu, 1.0, observed=y)


def q_params(mean, sd):
    return {"loc": jnp.array([mean]), "rho": jnp.array([np.log(np.expm1(sd))])}


@pytest.fixture(scope="module")
def ld():
    return vi.LogDensity(conjugate, {"y": Y})


def test_log_terms_split_the_log_joint(ld):
    def model(y):
        mu = vi.Normal("mu", 0, 10)
        s = vi.HalfNormal("s", 2.0)
        w = vi.Dirichlet("w", jnp.ones(3))
        vi.Normal("y", mu + w[0], s, observed=y)

    m = vi.LogDensity(model, {"y": Y})
    z = jax.random.normal(jax.random.PRNGKey(0), (m.dim,))

    @jax.jit          # one program (called eagerly, every jax.numpy op inside compiles on its own)
    def parts(z):
        terms, trace = m.log_terms(z, {"y": Y})
        return terms, m.logp(z, {"y": Y}), m.unravel(z)["s"], trace["y"]["fn"].log_prob(Y).sum()

    terms, logp, log_s, log_lik = parts(z)
    assert float(sum(terms.values())) == pytest.approx(float(logp), rel=1e-6)
    s = np.exp(float(log_s))
    assert float(terms["_s_log_det"]) == pytest.approx(np.log(s), rel=1e-5)   # d exp(u)/du
    assert float(terms["y"]) == pytest.approx(float(log_lik), rel=1e-6)


# -- Renyi -----------------------------------------------------------------------------------------

def test_renyi_tends_to_the_elbo_as_alpha_tends_to_one(ld):
    fam, p, key = mean_field(), q_params(0.5, 0.4), jax.random.PRNGKey(1)

    @jax.jit          # one program for all the estimates
    def estimates(p, key):
        z, lq = fam.sample_and_log_q(p, key, 64)
        return (elbo(fam, ld.logp, p, key, {"y": Y}, num_particles=64),
                jax.vmap(ld.logp, in_axes=(0, None))(z, {"y": Y}) - lq,
                [renyi_bound(fam, ld.logp, p, key, {"y": Y}, 64, alpha) for alpha in (0.99, 0.999)])

    e, w, bounds = estimates(p, key)
    e, w = float(e), np.asarray(w)
    for alpha, r in zip((0.99, 0.999), bounds):
        r = float(r)
        # second-order expansion: L_alpha = mean(w) + (1 - alpha) var(w) / 2 + O((1 - alpha)^2)
        assert r - e == pytest.approx((1 - alpha) * w.var() / 2, rel=0.05, abs=1e-5)


def test_renyi_bound_equals_the_evidence_at_the_exact_posterior_and_bounds_it_elsewhere(ld):
    fam, key = mean_field(), jax.random.PRNGKey(2)

    @jax.jit          # one program for all the bounds
    def bounds(exact, wide):
        at_exact = [renyi_bound(fam, ld.logp, exact, key, {"y": Y}, 8, alpha) for alpha in (0.0, 0.5, -1.0, 3.0)]
        return (at_exact, renyi_bound(fam, ld.logp, wide, key, {"y": Y}, 4000, 0.0),
                elbo(fam, ld.logp, wide, key, {"y": Y}, 4000))

    wide = q_params(POST_MEAN + 0.3, 2 * POST_SD)
    at_exact, iwae, el = bounds(q_params(POST_MEAN, POST_SD), wide)
    for r in at_exact:   # q = posterior: every weight is p(y), for any alpha
        assert float(r) == pytest.approx(LOG_EVIDENCE, abs=2e-3)
    iwae, el = float(iwae), float(el)
    assert el < iwae <= LOG_EVIDENCE + 0.01 and LOG_EVIDENCE - iwae < 0.02 < LOG_EVIDENCE - el


def test_renyi_fit_recovers_the_conjugate_posterior_and_works_with_a_guide():
    fit = vi.fit(conjugate, {"y": Y}, method="advi", objective="renyi", alpha=0.5, num_particles=8, steps=2500,
                 learning_rate=0.02, progress=False)
    assert fit.settings["objective"] == "renyi" and fit.settings["alpha"] == 0.5
    assert float(fit.params["loc"][0]) == pytest.approx(POST_MEAN, abs=0.03)
    assert float(jax.nn.softplus(fit.params["rho"][0])) == pytest.approx(POST_SD, rel=0.1)

    def guide(y):
        m = numpyro.param("m", 0.0)
        s = numpyro.param("s", 1.0, constraint=constraints.positive)
        numpyro.sample("mu", dist.Normal(m, s))

    g = vi.fit(conjugate, {"y": Y}, guide=guide, objective="renyi", alpha=0.5, num_particles=8,
               steps=2500, learning_rate=0.02, progress=False)
    assert float(g.params["m"]) == pytest.approx(POST_MEAN, abs=0.03)
    assert float(g.params["s"]) == pytest.approx(POST_SD, rel=0.1)


# -- KL weight -------------------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_kl_weight_optimum_is_the_tempered_posterior(beta):
    # maximise E_q[log p(y|mu)] - beta KL(q || prior): q = N(m, s^2) with
    # m = (sum y) / (N + beta / tau^2), s^2 = beta / (N + beta / tau^2)
    fit = vi.fit(conjugate, {"y": Y}, method="advi", kl_weight=beta, steps=3000, stl=True, learning_rate=0.02,
                 progress=False)
    prec = N + beta / PRIOR_SD**2
    assert float(fit.params["loc"][0]) == pytest.approx(Y.sum() / prec, abs=0.02)
    assert float(jax.nn.softplus(fit.params["rho"][0])) == pytest.approx(np.sqrt(beta / prec), rel=0.05)


def test_kl_weight_zero_is_maximum_likelihood_and_one_is_the_elbo(ld):
    fit = vi.fit(conjugate, {"y": Y}, method="advi", kl_weight=0.0, steps=3000, learning_rate=0.02, progress=False)
    assert float(fit.params["loc"][0]) == pytest.approx(Y.mean(), abs=0.02)       # the MLE
    assert float(jax.nn.softplus(fit.params["rho"][0])) < 0.2 * POST_SD             # q collapses
    fam, p, key = mean_field(), q_params(0.3, 0.5), jax.random.PRNGKey(3)
    a, b = jax.jit(lambda p: (weighted_elbo(fam, ld, p, key, {"y": Y}, 16, kl_weight=1.0),
                              elbo(fam, ld.logp, p, key, {"y": Y}, 16)))(p)
    assert float(a) == pytest.approx(float(b), rel=1e-6)


# -- closed-form KL for mean-field ---------------------------------------------------------------

def hierarchical(y):
    mu = vi.Normal("mu", 0.0, 2.0)
    s = vi.LogNormal("s", 0.0, 0.5)          # Gaussian on the log scale: closed form
    tau = vi.HalfNormal("tau", 1.0)          # no closed form: Monte Carlo term
    theta = vi.Normal("theta", mu, tau, shape=3)   # closed form given the draws of mu and tau
    vi.Normal("y", theta, s, observed=y)


def test_meanfield_elbo_is_the_exact_negative_kl_without_data():
    def prior_only():
        vi.Normal("x", 1.0, 2.0)

    ld0, fam = vi.LogDensity(prior_only), mean_field()
    m, s = 0.3, 0.7
    got = jax.jit(lambda p: meanfield_elbo(fam, ld0, p, jax.random.PRNGKey(0), None, 1))(q_params(m, s))
    kl = np.log(2.0 / s) + (s**2 + (m - 1.0) ** 2) / (2 * 2.0**2) - 0.5
    assert float(got) == pytest.approx(-kl, rel=1e-5)


def test_meanfield_elbo_equals_the_monte_carlo_elbo_in_expectation_with_lower_variance():
    y = np.array([0.5, -1.0, 2.0])
    ld = vi.LogDensity(hierarchical, {"y": y})
    fam = mean_field()
    # a q about as wide as the posterior (sd 0.13)
    p = {"loc": jnp.array([0.3, 0.2, 0.1, 0.0, 0.4, -0.2]), "rho": jnp.full(6, -2.0)}
    keys = jax.random.split(jax.random.PRNGKey(4), 2000)
    v_mc = np.asarray(jax.jit(jax.vmap(lambda k: elbo(fam, ld.logp, p, k, {"y": y})))(keys))
    v_an = np.asarray(jax.jit(jax.vmap(lambda k: meanfield_elbo(fam, ld, p, k, {"y": y})))(keys))
    se = np.sqrt(v_mc.var() / v_mc.size + v_an.var() / v_an.size)
    assert abs(v_mc.mean() - v_an.mean()) < 4 * se
    assert v_an.var() < 0.5 * v_mc.var()      # (gradients: benchmarks/objectives.py)


def test_meanfield_fit_recovers_the_conjugate_posterior():
    def one_point(y):   # mu ~ N(0, 1), y ~ N(mu, 1), y = 1: the posterior is N(1/2, 1/2)
        vi.Normal("y", vi.Normal("mu", 0.0, 1.0), 1.0, observed=y)

    fit = vi.fit(one_point, {"y": np.ones(1)}, method="advi", objective="meanfield_elbo", steps=2000,
                 learning_rate=0.02, progress=False)
    assert float(fit.params["loc"][0]) == pytest.approx(0.5, abs=0.03)
    assert float(jax.nn.softplus(fit.params["rho"][0])) == pytest.approx(np.sqrt(0.5), rel=0.05)


def test_objective_errors_name_the_argument():
    data = {"y": Y}
    cases = [
        (dict(objective="renyi"), "num_particles >= 2"),
        (dict(objective="renyi", alpha=1.0, num_particles=4), "alpha=1"),
        (dict(objective="elbo", alpha=0.5), "alpha="),
        (dict(objective="kl"), "objective='kl'"),
        (dict(kl_weight=-1.0), "kl_weight=-1.0"),
        (dict(objective="renyi", kl_weight=0.5, num_particles=4), "kl_weight="),
        (dict(objective="meanfield_elbo", method="fullrank_advi"), "mean-field"),
        (dict(objective="renyi", num_particles=4, stl=True), "stl=True"),
        (dict(objective="renyi", num_particles=4, method="svgd"), "'svgd'"),
    ]
    for kw, msg in cases:
        with pytest.raises(vi.VariationalError, match=msg):
            vi.fit(conjugate, data, steps=1, progress=False, **kw)


def test_renyi_with_minibatches_warns():
    with pytest.warns(RuntimeWarning, match="not an unbiased estimate"):
        fit = vi.fit(conjugate, {"y": Y}, objective="renyi", num_particles=2, batch_size=5,
                     steps=0, learning_rate=0.01, progress=False)   # said when the fit is set up
    assert "batch_size=" in fit.notes[-1]


def test_objective_is_saved_and_restored():
    # the Renyi fit's settings above (alpha=0.5, 8 particles): the same compiled programs
    fit = vi.fit(conjugate, {"y": Y}, method="advi", objective="renyi", alpha=0.5, num_particles=8, steps=50,
                 learning_rate=0.01, progress=False)
    path = os.path.join(tempfile.mkdtemp(), "renyi.npz")
    fit.save(path)
    back = vi.load(path, conjugate, {"y": Y})
    assert (back.settings["objective"], back.settings["alpha"]) == ("renyi", 0.5)
    np.testing.assert_array_equal(back.refine(20).hist, fit.refine(20).hist)
