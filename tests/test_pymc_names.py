"""PyMC's names: ``adagrad_window``, ``nesterov_momentum``, ``adadelta`` and per-dimension
``total_size``.

Truths: the update rules as PyMC documents them (``pymc.variational.updates``), written out
here with NumPy; PyMC's own analytic-posterior example for ``adagrad_window``
(``tests/variational/test_inference.py``: a normal mean with known variance, 1000 points,
``mu_post`` and ``1/sqrt(d)`` in closed form); PyMC's scaling rule for ``total_size``.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import variational as vi
from variational.engine.optim import OPTIMIZERS
from variational.data.plan import plan
from variational.model.handlers import total_size_factor

from _pymc_example import D, DATA, MU_POST, simple_model

GRADS = np.random.default_rng(0).normal(size=(25, 3)) * np.array([0.1, 1.0, 10.0])


def run(opt, lr):
    x = jnp.zeros(3)
    state = opt.init(x)
    out = []
    for g in GRADS:
        u, state = opt.update(jnp.asarray(g, jnp.float32), state, x)
        x = x + u
        out.append(np.asarray(x))
    return np.array(out)


def test_adagrad_window_follows_pymc_rule():
    lr, eps, n_win = 0.3, 0.1, 4
    x, window, want = np.zeros(3), np.zeros((3, n_win)), []
    for t, g in enumerate(GRADS):       # accu[..., i] = g^2; x -= lr g / sqrt(sum(accu) + eps)
        window[:, t % n_win] = g**2
        x = x - lr * g / np.sqrt(window.sum(-1) + eps)
        want.append(x.copy())
    np.testing.assert_allclose(run(vi.adagrad_window(lr, n_win=n_win, epsilon=eps), lr), want, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(run(OPTIMIZERS["adagrad_window"](lr), lr)[:1],
                               [-lr * GRADS[0] / np.sqrt(GRADS[0] ** 2 + 0.1)], rtol=2e-5)


def test_nesterov_momentum_and_adadelta_follow_pymc_rules():
    lr, mom = 0.1, 0.9
    x, v, want = np.zeros(3), np.zeros(3), []
    for g in GRADS:                     # v = mom v - lr g; x += mom v - lr g
        v = mom * v - lr * g
        x = x + mom * v - lr * g
        want.append(x.copy())
    np.testing.assert_allclose(run(OPTIMIZERS["nesterov_momentum"](lr), lr), want, rtol=2e-5, atol=1e-6)
    rho, eps = 0.95, 1e-6
    x, acc, dacc, want = np.zeros(3), np.zeros(3), np.zeros(3), []
    for g in GRADS:                     # PyMC's adadelta with its defaults rho=0.95, eps=1e-6
        acc = rho * acc + (1 - rho) * g**2
        step = g * np.sqrt(dacc + eps) / np.sqrt(acc + eps)
        x = x - lr * step
        dacc = rho * dacc + (1 - rho) * step**2
        want.append(x.copy())
    np.testing.assert_allclose(run(OPTIMIZERS["adadelta"](lr), lr), want, rtol=2e-5, atol=1e-7)


# PyMC's test_fit_oo (ADVI, full data and minibatch of 128 with total_size)
@pytest.mark.parametrize("batch_size,lr,steps", [(None, 0.02, 5000), (128, 0.01, 12000)])
def test_adagrad_window_reproduces_pymc_analytic_posterior_example(batch_size, lr, steps):
    fit = vi.fit(simple_model, {"x": DATA}, optimizer=vi.adagrad_window(lr, n_win=50),
                 batch_size=batch_size, steps=steps, seed=42, progress=False)
    draws = fit.sample(10_000, seed=0)["mu"]
    np.testing.assert_allclose(draws.mean(), MU_POST, rtol=0.05)       # PyMC's tolerances
    np.testing.assert_allclose(draws.std(), np.sqrt(1.0 / D), rtol=0.2)
    assert abs(draws.mean() - MU_POST) < 0.1 * np.sqrt(1.0 / D) + 0.02   # and much closer


def test_total_size_per_dimension_follows_pymc_rule():
    assert total_size_factor(1000, (100, 3)) == 10.0
    assert total_size_factor([1000, None], (100, 3)) == 10.0
    assert total_size_factor([1000, 6], (100, 3)) == 20.0
    assert total_size_factor([None, ..., 30], (100, 4, 3)) == 10.0
    assert total_size_factor([1000, ..., 30], (100, 4, 3)) == 100.0
    rows = np.random.default_rng(1).normal(2.0, 1.0, size=(500, 4))

    def model(y):   # a minibatch of rows of a (N, 4) table: only the rows are scaled
        mu = vi.Normal("mu", 0.0, 10.0, shape=4)
        vi.Normal("y", mu, 1.0, observed=y, total_size=[500, None])

    # the first 50 rows with total_size=[500, None] weigh as 500 rows: the posterior sd of each
    # column mean is 1/sqrt(500 + 1/100), not 1/sqrt(50)
    ld = vi.LogDensity(model, {"y": rows[:50]})
    z = jnp.asarray(rows[:50].mean(0))
    h = np.asarray(__import__("jax").hessian(lambda z: ld.logp(z, {"y": rows[:50]}))(z))
    np.testing.assert_allclose(np.diag(-h), 500 + 1 / 100, rtol=1e-5)
    assert plan(model, {"y": rows}, batch_size=50).obs_scale == {"y": 10.0}
    for bad, msg in [([500, None, None], "more entries"), ([500, ..., ...], "more than one"),
                     ([0, None], "positive int"), ("500", "an int or a list")]:
        def m(y, bad=bad):
            vi.Normal("y", vi.Normal("mu", 0.0, 1.0), 1.0, observed=y, total_size=bad)

        with pytest.raises(vi.ModelError, match=f"site 'y'.*{msg}"):
            vi.LogDensity(m, {"y": rows[:50]})
