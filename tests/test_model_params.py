"""Parameters in the model (``numpyro.param``): optimised with the variational parameters.

Truths: the closed-form maximiser of a marginal likelihood (type-II maximum likelihood), the
sample mean and standard deviation (maximum likelihood without latent variables), a one-
dimensional maximisation of an exact Gaussian marginal likelihood (for the minibatch fit), and
exact equality of an interrupted-and-resumed run with an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.distributions import constraints
from scipy.optimize import minimize_scalar

import variational as vi
from variational.errors import CheckpointError, ModelError

S = 1.0  # known noise sd of the hierarchical model


def hierarchical(y):
    """y_j ~ N(theta_j, S), theta_j ~ N(0, tau): tau is a parameter (empirical Bayes)."""
    tau = numpyro.param("tau", 1.0, constraint=constraints.positive)
    with numpyro.plate("groups", y.shape[0]):
        theta = numpyro.sample("theta", dist.Normal(0.0, tau))
        numpyro.sample("y", dist.Normal(theta, S), obs=y)


def location_noise(y):
    """y_i ~ N(mu, sigma) with mu ~ N(0, 10) latent and sigma a parameter."""
    sigma = numpyro.param("sigma", 1.0, constraint=constraints.positive)
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("rows", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def ml_only(y):
    """No latent variable: maximum likelihood of a normal's mean and sd."""
    mu = numpyro.param("mu", 0.0)
    sigma = numpyro.param("sigma", 1.0, constraint=constraints.positive)
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def test_type_ii_ml_matches_the_closed_form_maximiser():
    # marginally y_j ~ N(0, tau^2 + S^2): the likelihood is maximised at tau^2 = mean(y^2) - S^2.
    # Given tau the posterior of theta is independent normal, so mean-field q holds it exactly and
    # the ELBO's maximiser in tau is the marginal likelihood's.
    y = np.random.default_rng(1).normal(0.0, np.sqrt(2.0**2 + S**2), size=50)
    exact = np.sqrt(np.mean(y**2) - S**2)
    steps = 3000
    fit = vi.fit(hierarchical, {"y": y}, steps=steps, num_particles=4, stl=True,
                 optimizer=optax.adam(optax.cosine_decay_schedule(0.05, steps, alpha=0.01)), progress=False)
    tau = float(fit.params["model"]["tau"])
    assert fit.model_params["tau"] == fit.params["model"]["tau"]
    assert abs(tau - exact) / exact < 0.02, (tau, exact)
    # the latent posterior given tau: theta_j | y_j ~ N(y_j tau^2 / (tau^2 + S^2), ...)
    shrink = tau**2 / (tau**2 + S**2)
    np.testing.assert_allclose(fit.mean["theta"], y * shrink, atol=0.05)


def test_no_latent_variables_is_maximum_likelihood():
    y = np.random.default_rng(2).normal(1.0, 2.0, size=40)
    fit = vi.fit(ml_only, {"y": y}, steps=3000, learning_rate=0.05, progress=False)
    assert fit.logdensity.dim == 0
    assert abs(float(fit.model_params["mu"]) - y.mean()) < 1e-3
    assert abs(float(fit.model_params["sigma"]) - y.std()) < 1e-3
    d = fit.diagnose()
    assert d.status == "good" and "maximum-likelihood point estimate" in d.verdict
    # predictions use the fitted parameters: their mean is mu-hat (MC sd 2 / sqrt(4000) = 0.03)
    pred = fit.predict(n=4000, seed=0)["y"]
    assert abs(pred.mean() - y.mean()) < 0.15


def test_minibatch_fit_of_a_parameter_reaches_the_marginal_likelihood_maximiser():
    rng = np.random.default_rng(3)
    y = rng.normal(1.5, 2.0, size=200)
    n = len(y)

    def neg_log_marginal(log_s):  # y ~ N(0, s^2 I + 100 11^T): split into the mean and the rest
        s2 = np.exp(2 * log_s)
        perp = np.sum((y - y.mean()) ** 2)
        return 0.5 * ((n - 1) * np.log(s2) + perp / s2 + np.log(s2 + 100 * n) + n * y.mean() ** 2 / (s2 + 100 * n))

    exact = float(np.exp(minimize_scalar(neg_log_marginal, bounds=(-3, 3), method="bounded").x))

    def guide(y):  # a custom guide: its parameters and the model's are kept apart
        m = numpyro.param("m", 0.0)
        s = numpyro.param("s", 1.0, constraint=constraints.positive)
        numpyro.sample("mu", dist.Normal(m, s))

    steps = 4000
    fit = vi.fit(location_noise, {"y": y}, guide=guide, batch_size=20, steps=steps, num_particles=2,
                 optimizer=optax.adam(optax.cosine_decay_schedule(0.03, steps, alpha=0.01)), progress=False)
    assert fit._plan.obs_scale == {"y": 10.0}
    assert sorted(fit.params) == ["m", "model", "s"]
    sigma = float(fit.model_params["sigma"])
    assert abs(sigma - exact) / exact < 0.03, (sigma, exact)
    # the posterior of mu given sigma-hat: N(n ybar / (n + s^2/100), s^2 / (n + s^2/100))
    prec = n / sigma**2 + 1 / 100
    assert abs(float(fit.params["m"]) - y.sum() / sigma**2 / prec) < 0.05
    assert abs(float(fit.params["s"]) - prec**-0.5) < 0.03
    # the full-data ELBO at the fitted parameters (guide's and model's) is the final loss level
    assert abs(-fit.elbo(num_draws=500, seed=0) - np.mean(fit.hist[-500:])) < 2.0


def test_parameters_are_saved_and_resumed_exactly(tmp_path):
    y = np.random.default_rng(4).normal(1.0, 2.0, size=40)
    path = tmp_path / "ck.npz"
    whole = vi.fit(location_noise, {"y": y}, steps=400, batch_size=10, progress=False)
    vi.fit(location_noise, {"y": y}, steps=200, batch_size=10, checkpoint=path, progress=False)
    resumed = vi.fit(location_noise, {"y": y}, steps=400, batch_size=10, checkpoint=path, resume=True,
                     progress=False)
    assert np.array_equal(whole.hist, resumed.hist)
    assert float(whole.model_params["sigma"]) == float(resumed.model_params["sigma"])
    loaded = vi.load(path, location_noise, {"y": y})
    assert float(loaded.params["model"]["sigma"]) == float(resumed.model_params["sigma"])

    def other(y):  # same latent sites, a parameter under another name
        scale = numpyro.param("scale", 1.0, constraint=constraints.positive)
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        numpyro.sample("y", dist.Normal(mu, scale), obs=y)

    with pytest.raises(CheckpointError, match=r"parameters \(numpyro.param\) \['sigma'\].*\['scale'\]"):
        vi.load(path, other, {"y": y})


def test_mutable_state_is_refused_with_a_clear_error():
    from numpyro.primitives import mutable

    def model(y):
        mutable("running_mean", {"m": np.zeros(1)})
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(ModelError, match="'running_mean' is numpyro.mutable state"):
        vi.fit(model, {"y": np.zeros(3)}, steps=10, progress=False)
