"""Discrete latent variables: summed out exactly (enumeration), or a score-function estimator.

Truths: the hand-marginalised mixture likelihood (logsumexp over the labels), the exact
responsibilities ``p(z_i = k | y, mu)`` averaged over the exact posterior of ``mu`` (two-
dimensional quadrature), the identity "mean over the batches of a partition of the N/B-scaled
minibatch log density = the full-data log density", and the best Poisson approximation of an
exactly summed posterior (for the score-function estimator).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy.special import gammaln
from jax.scipy.special import logsumexp
from numpyro.contrib.funsor import config_enumerate
from numpyro.distributions import constraints

import variational as vi
from variational.errors import ModelError

W = np.array([0.3, 0.7])
PRIOR_MEANS = np.array([-2.0, 2.0])  # (distinct priors: no label switching in the posterior)


def enumerated(y):
    mu = numpyro.sample("mu", dist.Normal(PRIOR_MEANS, 1.0).to_event(1))
    with numpyro.plate("rows", y.shape[0]):
        z = numpyro.sample("z", dist.Categorical(W), infer={"enumerate": "parallel"})
        numpyro.sample("y", dist.Normal(mu[z], 1.0), obs=y)


def hand_marginalised(y):
    mu = numpyro.sample("mu", dist.Normal(PRIOR_MEANS, 1.0).to_event(1))
    with numpyro.plate("rows", y.shape[0]):
        numpyro.sample("y", dist.MixtureSameFamily(dist.Categorical(W), dist.Normal(mu, 1.0)), obs=y)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    z = rng.random(100) < W[1]
    return np.where(z, rng.normal(1.5, 1.0, 100), rng.normal(-1.5, 1.0, 100)).astype(np.float32)


@pytest.fixture(scope="module")
def fits(data):
    kw = dict(steps=2000, learning_rate=0.02, num_particles=2, stl=True, progress=False)
    return vi.fit(enumerated, {"y": data}, **kw), vi.fit(hand_marginalised, {"y": data}, **kw)


def test_enumerated_log_density_equals_the_hand_marginalised_one(data):
    a, b = vi.LogDensity(enumerated, {"y": data}), vi.LogDensity(hand_marginalised, {"y": data})
    assert a.enumerated == ["z"] and a.names == b.names == ["mu"]
    zs = 2 * np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    la = jax.jit(jax.vmap(a.logp, in_axes=(0, None)))(zs, {"y": data})
    lb = jax.jit(jax.vmap(b.logp, in_axes=(0, None)))(zs, {"y": data})
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    # config_enumerate marks the sites as the infer= argument does (and the library's own
    # constructors accept the enumerated shapes)
    def unmarked(y):
        mu = vi.Normal("mu", PRIOR_MEANS, 1.0)  # (a batch dimension that no plate declares)
        with numpyro.plate("rows", y.shape[0]):
            z = vi.Categorical("z", W)
            vi.Normal("y", mu[z], 1.0, observed=y)

    c = vi.LogDensity(config_enumerate(unmarked), {"y": data})
    np.testing.assert_allclose(jax.jit(c.logp)(zs[0], {"y": data}), lb[0], rtol=1e-5)


def test_enumerated_fit_reaches_the_hand_marginalised_elbo(fits):
    a, b = fits
    ea, sa = a.elbo(num_draws=1000, seed=1, return_se=True)
    eb, sb = b.elbo(num_draws=1000, seed=1, return_se=True)
    assert abs(ea - eb) < 3 * np.hypot(sa, sb) + 1e-3, (ea, eb, sa, sb)
    # q's own means (mu is unbounded: unconstrained is constrained), exact, with no draws
    np.testing.assert_allclose(a.unconstrained_mean["mu"], b.unconstrained_mean["mu"], atol=0.02)


def test_label_probabilities_match_the_exact_responsibilities(fits, data):
    fit = fits[0]
    # the exact posterior of mu on a grid (it is concentrated: sd about 0.2 per coordinate)
    g0, g1 = np.meshgrid(np.linspace(-3.5, 0.0, 161), np.linspace(0.5, 3.0, 161), indexing="ij")
    mu = np.stack([g0.ravel(), g1.ravel()], -1)                                     # (G, 2)
    comp = np.log(W) - 0.5 * (data[None, :, None] - mu[:, None, :]) ** 2             # (G, N, 2)
    log_post = (np.sum(-0.5 * (mu - PRIOR_MEANS) ** 2, -1)
                + np.sum(np.asarray(logsumexp(comp, -1)), -1))
    post = np.exp(log_post - log_post.max())
    post /= post.sum()
    resp = np.exp(comp - np.asarray(logsumexp(comp, -1, keepdims=True)))          # (G, N, 2)
    exact = np.einsum("g,gnk->nk", post, resp)
    probs = fit.discrete_probs(2000, seed=0)["z"]
    assert probs.shape == (len(data), 2)
    assert np.abs(probs - exact).max() < 0.02, np.abs(probs - exact).max()
    # draws of the labels (infer_discrete) follow the same probabilities (MC sd <= 0.5/63)
    z = fit.sample(4000, seed=2)["z"]
    assert z.shape == (4000, len(data)) and set(np.unique(z)) <= {0, 1}
    assert np.abs(z.mean(0) - exact[:, 1]).max() < 0.04


def test_minibatch_scaling_of_enumerated_sites_is_unbiased(data):
    n, b = len(data), 20
    plan_fit = vi.fit(enumerated, {"y": data}, batch_size=b, steps=0, progress=False)
    assert plan_fit._plan.obs_scale == {"y": n / b, "z": n / b}
    full = vi.LogDensity(enumerated, {"y": data})
    part = vi.LogDensity(enumerated, {"y": data[:b]}, obs_scale=plan_fit._plan.obs_scale)
    z = jnp.array([-1.0, 1.2])
    logp = jax.jit(part.logp)
    batches = [float(logp(z, {"y": data[i:i + b]})) for i in range(0, n, b)]
    assert abs(np.mean(batches) - float(jax.jit(full.logp)(z, {"y": data}))) < 1e-5 * abs(np.mean(batches))


def test_a_discrete_site_shared_by_all_rows_is_refused_on_minibatches():
    def global_switch(y):
        s = numpyro.sample("s", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
        with numpyro.plate("rows", y.shape[0]):
            numpyro.sample("y", dist.Normal(2.0 * s, 1.0), obs=y)
        numpyro.sample("mu", dist.Normal(0.0, 1.0))

    y = np.zeros(40, np.float32)
    # (a given learning rate: 20 steps need no search of a step size, whose trials are longer)
    assert np.isfinite(vi.fit(global_switch, {"y": y}, steps=20, learning_rate=0.01, progress=False).hist).all()
    with pytest.raises(ModelError, match="cannot be summed out on a minibatch without bias"):
        vi.fit(global_switch, {"y": y}, batch_size=10, steps=20, progress=False)


def test_unmarked_and_infinite_discrete_latents_say_what_to_do():
    def categorical(y):
        z = numpyro.sample("z", dist.Categorical(W))
        numpyro.sample("y", dist.Normal(z, 1.0), obs=y)

    def poisson(y):
        k = numpyro.sample("k", dist.Poisson(3.0))
        numpyro.sample("y", dist.Normal(k, 1.0), obs=y)

    with pytest.raises(ModelError, match=r"site 'z' is a discrete.*infer=\{'enumerate': 'parallel'\}"):
        vi.LogDensity(categorical, {"y": np.ones(1)})
    with pytest.raises(ModelError, match="site 'k'.*infinite.*score_function=True"):
        vi.LogDensity(poisson, {"y": np.ones(1)})
    with pytest.raises(vi.VariationalError, match="score_function=True needs guide="):
        vi.fit(poisson, {"y": np.ones(1)}, score_function=True, steps=10, progress=False)


def test_score_function_estimator_reaches_the_best_poisson_approximation():
    y, lam0, s = 4.2, 3.0, 0.7

    def model(y):
        k = numpyro.sample("k", dist.Poisson(lam0))
        numpyro.sample("y", dist.Normal(k, s), obs=y)

    def guide(y):
        rate = numpyro.param("rate", 2.0, constraint=constraints.positive)
        numpyro.sample("k", dist.Poisson(rate))

    # the truth on the host: Poisson and normal log densities in NumPy, for 251 rates at once
    ks = np.arange(80)

    def log_poisson(rate):
        return ks * np.log(rate) - rate - gammaln(ks + 1)

    log_p = log_poisson(lam0) - 0.5 * ((ks - y) / s) ** 2 - np.log(s * np.sqrt(2 * np.pi))
    rates = np.linspace(2.5, 5.0, 251)
    lq = log_poisson(rates[:, None])                                               # (rates, k)
    kl = np.sum(np.exp(lq) * (lq - log_p), -1)
    best = rates[int(np.argmin(kl))]
    with pytest.warns(RuntimeWarning, match="score-function estimate, unbiased but with a high variance"):
        fit = vi.fit(model, {"y": np.array([y])}, guide=guide, score_function=True, num_particles=16,
                     steps=3000, learning_rate=0.01, progress=False)
    assert abs(float(fit.params["rate"]) - best) < 0.2, (float(fit.params["rate"]), best)
    draws = fit.sample(2000, seed=0)["k"]
    assert np.all(draws == np.round(draws)) and draws.min() >= 0
