"""Amortised local latent variables (``batch_size=vi.Batches(size, local=vi.Amortised())``) against
the closed form.

Model: ``mu ~ N(0, 10); z_i ~ N(mu, 1); y_i ~ N(z_i, 0.5)``. Given mu, ``z_i | mu, y_i`` is
``N((mu + 4 y_i) / 5, 1/5)``: its mean is linear in ``y_i`` and in mu, and its sd is the same for
every row, so an encoder linear in ``y_i`` with a map from mu holds the exact posterior, of the
training rows and of new rows alike: ``E[z | y] = (E[mu | y] + 4 y) / 5``,
``Var[z | y] = 1/5 + Var[mu | y] / 25``.
"""

from __future__ import annotations

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import variational as vi
from variational.errors import VariationalError
from variational.families.amortised import Amortiser, encoder_body


def _data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(rng.normal(1.0, 1.0, n), 0.5).astype(np.float32)


def _exact(y: np.ndarray, new: np.ndarray | None = None) -> dict:
    prec = 1 / 100 + len(y) / 1.25
    m_mu, v_mu = (y.sum() / 1.25) / prec, 1 / prec
    rows = y if new is None else new
    return {"mu": (m_mu, np.sqrt(v_mu)), "z": ((m_mu + 4 * rows) / 5, np.sqrt(0.2 + v_mu / 25))}


def model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("rows", len(y)):
        z = numpyro.sample("z", dist.Normal(mu, 1.0))
        numpyro.deterministic("w", 2.0 * z)
        numpyro.sample("y", dist.Normal(z, 0.5), obs=y)


def test_linear_encoder_gives_the_exact_posterior_of_mu_every_row_and_new_rows():
    n = 600
    y = _data(n)
    fit = vi.fit(model, {"y": y}, batch_size=vi.Batches(60, local=vi.Amortised(hidden=())), steps=1500,
                 learning_rate=0.02, progress=False)
    # no parameter has a row per data row: the encoder's and the globals' only
    leaves = jax.tree_util.tree_leaves(fit.state.params)
    assert sum(np.size(x) for x in leaves) < 50 and all(np.shape(x)[:1] != (n,) for x in leaves)
    exact = _exact(y)
    m, s = fit.unconstrained_mean, fit.unconstrained_std
    for name, tol_sd in (("mu", 0.1), ("z", 0.05)):
        em, es = exact[name]
        assert np.max(np.abs(m[name] - em) / es) < 0.1, name
        assert np.max(np.abs(s[name] / es - 1)) < tol_sd, name
    # new rows, far outside the training data too: 4000 draws, Monte Carlo error 1/63 sd
    new = np.array([-4.0, -1.0, 0.5, 1.0, 2.0, 6.0], np.float32)
    draws = fit.local_posterior({"y": new}, n=4000, seed=0)
    assert draws["z"].shape == (4000, 6) and draws["mu"].shape == (4000,)
    em, es = _exact(y, new)["z"]
    assert np.max(np.abs(draws["z"].mean(0) - em) / es) < 0.1 + 5 / np.sqrt(4000)
    assert np.max(np.abs(draws["z"].std(0) / es - 1)) < 0.05 + 5 / np.sqrt(2 * 4000)
    # predict on new rows: the local values come from the encoder, not from the prior
    w = fit.predict({"y": new}, n=4000, seed=1)["w"]
    assert w.shape == (4000, 6)
    assert np.max(np.abs(w.mean(0) / 2 - em) / es) < 0.1 + 5 / np.sqrt(4000)


@pytest.mark.slow   # (each fit compiles its loop afresh in the suite: ~5 s unloaded, ~20 s at load 8)
def test_model_that_subsamples_itself_with_the_default_encoder():
    n, b = 600, 60
    y = _data(n, seed=1)

    def subsampled(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("rows", n, subsample_size=b) as idx:
            z = numpyro.sample("z", dist.Normal(mu, 1.0))
            numpyro.sample("y", dist.Normal(z, 0.5), obs=y[idx])

    fit = vi.fit(subsampled, {"y": y}, batch_size=vi.Batches(local=vi.Amortised(hidden=(8,))), steps=1500,
                 learning_rate=0.02, progress=False)
    exact = _exact(y)
    m, s = fit.unconstrained_mean, fit.unconstrained_std
    assert m["z"].shape == (n,)
    # the hidden layer's terms should vanish here (the exact encoder is linear), but they move
    # with the noise of the steps: the worst row (an extreme y) within 0.25 sd, the typical
    # row within 0.05; sds: the worst within 10%, the typical within 2%
    (em, es), (zm, zs) = exact["mu"], exact["z"]
    assert abs(m["mu"] - em) / es < 0.1 and abs(s["mu"] / es - 1) < 0.1
    err, sd_err = np.abs(m["z"] - zm) / zs, np.abs(s["z"] / zs - 1)
    assert np.max(err) < 0.25 and np.median(err) < 0.05
    assert np.max(sd_err) < 0.1 and np.median(sd_err) < 0.02


def _flax_linen():
    import flax.linen as nn

    class Body(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.tanh(nn.Dense(4)(x))

    return Body()


def _flax_nnx():
    from flax import nnx
    return nnx.Linear(1, 4, rngs=nnx.Rngs(0))


def _equinox():
    import equinox as eqx
    return eqx.nn.MLP(1, 4, 3, 1, key=jax.random.PRNGKey(0))


@pytest.mark.parametrize("make", [_flax_linen, _flax_nnx, _equinox, lambda: None])
def test_encoder_modules_give_every_row_its_q_and_are_trained(make):
    y = np.linspace(-2.0, 2.0, 5).astype(np.float32)
    am = Amortiser({"y": y}, None, make(), (3,), dl=1, dg=1, coupled=True)
    x = am.features({"y": y})
    assert np.allclose(np.asarray(x).mean(), 0.0, atol=1e-6)   # standardised inputs
    p = am.init(jax.random.PRNGKey(0), x)
    rows = am.rows(p, x, np.zeros(1))
    assert rows["loc"].shape == (5, 1) and rows["coup"].shape == (5, 1, 1)
    np.testing.assert_allclose(rows["log_s"], np.log(0.1), atol=0.1)   # the initial sd, 0.1
    # the body's parameters get a gradient through the head (they are part of the fitted state)
    grads = jax.grad(lambda q: (am.rows(q, x, np.zeros(1))["loc"] ** 2).sum())(
        {**p, "head": p["head"] + 1.0, "bias": p["bias"] + 1.0})
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree_util.tree_leaves(grads["body"]))


def test_what_an_amortised_fit_cannot_do_is_named(tmp_path):
    y = _data(600)   # the shapes of the linear-encoder test's fit: its compiled setup serves `tiny`
    with pytest.raises(VariationalError, match="no latent sites in a plate over the data rows"):
        vi.fit(model, {"y": y}, steps=10, batch_size=vi.Batches(local=vi.Amortised()), progress=False)   # no size
    with pytest.raises(VariationalError, match="cannot be checkpointed"):
        vi.fit(model, {"y": y}, batch_size=vi.Batches(50, local=vi.Amortised()), steps=10, progress=False,
               checkpoint=tmp_path / "fit.npz")
    with pytest.raises(TypeError, match="vi.Amortised"):
        vi.fit(model, {"y": y}, batch_size=vi.Batches(50, local="amortised"), steps=10, progress=False)
    with pytest.raises(VariationalError, match=r"\['x'\] are not among"):
        vi.fit(model, {"y": y}, batch_size=vi.Batches(50, local=vi.Amortised(inputs="x")), steps=10,
               progress=False)
    tiny = vi.fit(model, {"y": y}, batch_size=vi.Batches(60, local=vi.Amortised(hidden=())), steps=0,
                  progress=False)
    with pytest.raises(VariationalError, match="cannot be saved"):
        tiny.save(tmp_path / "fit.npz")
    with pytest.raises(ValueError, match="hidden"):
        vi.Amortised(hidden=(0,))
    with pytest.raises(TypeError, match="flax"):
        encoder_body(object(), ())
    fit = vi.fit(model, {"y": y}, batch_size=60, steps=0, progress=False)   # per-row parameters
    with pytest.raises(VariationalError, match="local=vi.Amortised"):
        fit.local_posterior({"y": y[:3]})


@pytest.mark.slow
def test_parquet_stream_rows_never_in_memory_new_rows_exact(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    n = 600
    y = _data(n, seed=3)
    pq.write_table(pa.table({"y": y}), tmp_path / "y.parquet", row_group_size=150)

    def fixed(y):   # (a stream's batches: the plate declared with N)
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("rows", n):
            z = numpyro.sample("z", dist.Normal(mu, 1.0))
            numpyro.sample("y", dist.Normal(z, 0.5), obs=y)

    fit = vi.fit(fixed, vi.data.parquet(tmp_path / "y.parquet"), progress=False, steps=1500,
                 batch_size=vi.Batches(60, local=vi.Amortised(hidden=())), learning_rate=0.02)
    new = np.array([-1.0, 0.0, 2.0], np.float32)
    draws = fit.local_posterior({"y": new}, n=4000, seed=0)
    exact = _exact(y, new)
    for name, got in (("mu", draws["mu"]), ("z", draws["z"])):
        em, es = exact[name]
        assert np.max(np.abs(got.mean(0) - em) / es) < 0.1 + 5 / np.sqrt(4000), name
        assert np.max(np.abs(got.std(0) / es - 1)) < 0.1, name
    with pytest.raises(VariationalError, match="not in memory"):
        fit.unconstrained_mean
