"""Neural networks in the model: ``flax_module`` / ``random_flax_module`` / ``eqx_module``.

Truths: the conjugate Gaussian posterior of a Bayesian linear model (written as a flax Dense
layer with a Normal prior on its weights), and least squares (the maximum-likelihood weights
of a point-estimated Dense layer or equinox Linear layer).
"""

from __future__ import annotations

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import variational as vi
from variational.model import RNG_KEY

import equinox as eqx  # noqa: E402  (flax and equinox are in the test extra)
import flax.linen as flax_linen  # noqa: E402
import jax  # noqa: E402
from numpyro.contrib.module import eqx_module, flax_module, random_flax_module  # noqa: E402

SIGMA = 0.5
D = 2


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, D)).astype(np.float32)
    y = (X @ np.array([1.0, -0.5]) + 0.3 + SIGMA * rng.normal(size=30)).astype(np.float32)
    return X, y


def bayesian_linear(X, y):
    net = random_flax_module("lin", flax_linen.Dense(1), prior=dist.Normal(0.0, 1.0), input_shape=(D,))
    numpyro.sample("y", dist.Normal(net(X)[:, 0], SIGMA), obs=y)


def point_linear(X, y):
    net = flax_module("lin", flax_linen.Dense(1), input_shape=(D,))
    numpyro.sample("y", dist.Normal(net(X)[:, 0], SIGMA), obs=y)


def test_bayesian_flax_dense_matches_the_conjugate_posterior(regression):
    X, y = regression
    A = np.c_[X, np.ones(len(y))]
    cov = np.linalg.inv(A.T @ A / SIGMA**2 + np.eye(D + 1))
    mean = cov @ A.T @ y / SIGMA**2
    fit = vi.fit(bayesian_linear, {"X": X, "y": y}, method="fullrank_advi", steps=4000, learning_rate=0.02,
                 num_particles=4, stl=True, progress=False)
    assert sorted(fit.logdensity.names) == ["lin/bias", "lin/kernel"]
    assert fit.params["model"] == {}  # every weight is random: nothing point-estimated
    got_mean = np.r_[fit.mean["lin/kernel"][:, 0], fit.mean["lin/bias"]]
    got_sd = np.r_[fit.std["lin/kernel"][:, 0], fit.std["lin/bias"]]
    np.testing.assert_allclose(got_mean, mean, atol=0.3 * np.sqrt(np.diag(cov)).min())
    np.testing.assert_allclose(got_sd, np.sqrt(np.diag(cov)), rtol=0.1)


def test_point_estimated_flax_dense_is_least_squares(regression):
    X, y = regression
    fit = vi.fit(point_linear, {"X": X, "y": y}, steps=3000, learning_rate=0.02, progress=False)
    w = fit.model_params["lin$params"]
    got = np.r_[np.asarray(w["kernel"])[:, 0], np.asarray(w["bias"])]
    lstsq = np.linalg.lstsq(np.c_[X, np.ones(len(y))], y, rcond=None)[0]
    np.testing.assert_allclose(got, lstsq, atol=2e-3)
    # predictions on new rows run the network with the fitted weights
    pred = fit.predict({"X": np.zeros((2, D), np.float32)}, n=4000, seed=0)["y"]
    assert abs(pred.mean() - lstsq[-1]) < 0.05


def test_equinox_linear_layer_is_least_squares(regression):
    X, y = regression
    layer = eqx.nn.Linear(D, 1, key=jax.random.PRNGKey(0))

    def model(X, y):
        net = eqx_module("lin", layer)
        numpyro.sample("y", dist.Normal(jax.vmap(net)(X)[:, 0], SIGMA), obs=y)

    fit = vi.fit(model, {"X": X, "y": y}, steps=3000, learning_rate=0.02, progress=False)
    w = fit.model_params["lin$params"]
    got = np.r_[np.asarray(w.weight)[0], np.asarray(w.bias)]
    lstsq = np.linalg.lstsq(np.c_[X, np.ones(len(y))], y, rcond=None)[0]
    np.testing.assert_allclose(got, lstsq, atol=2e-3)


def test_dropout_gets_a_key_per_step(regression):
    X, y = regression

    class Net(flax_linen.Module):
        @flax_linen.compact
        def __call__(self, x, train: bool = True):
            x = flax_linen.Dense(4)(x)
            x = flax_linen.Dropout(0.5, deterministic=not train)(x)
            return flax_linen.Dense(1)(x)

    def model(X, y):
        net = flax_module("net", Net(), input_shape=(D,), apply_rng=["dropout"])
        out = net(X, rngs={"dropout": numpyro.prng_key()})
        numpyro.sample("y", dist.Normal(out[:, 0], SIGMA), obs=y)

    fit = vi.fit(model, {"X": X, "y": y}, steps=20, progress=False)
    ld = fit.logdensity
    assert ld.needs_key and np.isfinite(fit.hist).all()
    # the log density at the same weights depends on the step's key, and only on it
    logp = jax.jit(ld.logp)
    batch = {"X": X, "y": y}
    k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    a, b, c = (float(logp(ld.init, {**batch, RNG_KEY: k})) for k in (k1, k1, k2))
    assert a == b and a != c
