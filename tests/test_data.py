"""Minibatches, N/B scaling and streaming, checked against counts and closed forms."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import variational as vi
from variational.data import Minibatches
from variational.families import mean_field
from variational.data.plan import plan
from variational.model import LogDensity
from variational.objectives import make_loss_and_grad
from variational.data.feeder import Feeder

SIGMA, PRIOR_SD = 2.0, 10.0


def normal_model(y):
    mu = vi.Normal("mu", 0.0, PRIOR_SD)
    vi.Normal("y", mu, SIGMA, observed=y)


def posterior(y):
    """Conjugate Normal-Normal posterior of mu (mean, sd)."""
    prec = 1 / PRIOR_SD**2 + len(y) / SIGMA**2
    return (y.sum() / SIGMA**2) / prec, prec**-0.5


@pytest.fixture(scope="module")
def y1000():
    return np.random.default_rng(0).normal(1.0, SIGMA, size=1000)


def _shards(folder, n, sizes=(0.37, 0.41), row_group_size=700):
    """Write columns id, x, y of n rows into three Parquet shards; returns (x, y)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=n)
    y = 0.5 + 2.0 * x + rng.normal(size=n)
    cuts = [0, int(sizes[0] * n), int((sizes[0] + sizes[1]) * n), n]
    for k in range(3):
        a, b = cuts[k], cuts[k + 1]
        pq.write_table(pa.table({"id": np.arange(a, b), "x": x[a:b], "y": y[a:b]}),
                       os.path.join(folder, f"part{k}.parquet"), row_group_size=row_group_size)
    return x, y


# ---------------------------------------------------------------------------------------------
# unbiasedness of the scaled minibatch gradient
# ---------------------------------------------------------------------------------------------

def regression(x, g, y):
    """Linear regression with group intercepts (x, g are covariates sliced with y)."""
    w = vi.Normal("w", 0.0, 1.0, shape=3)
    a = vi.Normal("a", 0.0, 1.0, shape=4)
    s = vi.HalfNormal("s", 2.0)
    vi.Normal("y", x @ w + a[g], s, observed=y)


def test_minibatch_elbo_gradient_is_unbiased():
    rng = np.random.default_rng(2)
    n, b = 400, 40
    cols = {"x": rng.normal(size=(n, 3)), "g": rng.integers(0, 4, n).astype(np.int32),
            "y": rng.normal(size=n) * 3 + 1}
    p = plan(regression, cols, batch_size=b)
    assert p.obs_scale == {"y": n / b}
    ld_mb = LogDensity(regression, p.trace_data, obs_scale=p.obs_scale)
    ld_full = LogDensity(regression, cols)
    fam = mean_field(init_scale=0.3)
    # away from the optimum: large gradients (init compiled once, not op by op)
    params = jax.jit(fam.init)(jax.random.PRNGKey(0), np.asarray(ld_full.init) + 0.5)
    key = jax.random.PRNGKey(7)   # the same draw of q for both: only the rows differ

    def flat_grad(ld):
        g = make_loss_and_grad(fam, ld.logp, 1)
        return jax.jit(lambda batch: jax.flatten_util.ravel_pytree(g(params, key, batch)[1])[0])

    g_mb = flat_grad(ld_mb)
    full = np.asarray(flat_grad(ld_full)(cols))

    mb = Minibatches(n, b, replace=True)
    dev = {k: jnp.asarray(v) for k, v in cols.items()}

    def one(k):
        batch, _ = mb.next(mb.init(k), dev, 0, k, None)
        return g_mb(batch)

    grads = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(1), 4000)))
    mean, se = grads.mean(0), grads.std(0) / np.sqrt(grads.shape[0])
    z = (mean - full) / np.maximum(se, 1e-6)
    assert np.all(np.abs(z) < 5), np.abs(z).max()
    assert float(np.max(se / (np.abs(full) + 1))) < 0.2   # the check has power

    # without replacement, one whole epoch averages to the full gradient exactly
    mb = Minibatches(n, b)
    ds = mb.init(jax.random.PRNGKey(3))
    step = jax.jit(lambda ds, t: mb.next(ds, dev, t, jax.random.PRNGKey(t), None))   # one program for all t
    acc = 0
    for t in range(n // b):
        batch, ds = step(ds, t)
        acc = acc + np.asarray(g_mb(batch))
    np.testing.assert_allclose(acc / (n // b), full, rtol=2e-3, atol=2e-3 * float(np.abs(full).max()))


# ---------------------------------------------------------------------------------------------
# fits against the analytic posterior
# ---------------------------------------------------------------------------------------------

def _fit_normal(data, **kw):
    opt = optax.adam(optax.cosine_decay_schedule(0.05, 3000))   # noise-free end of the run
    return vi.fit(normal_model, data, method="advi", steps=3000, optimizer=opt, num_particles=8,
                  progress=False, **kw)


@pytest.fixture(scope="module")
def minibatch_fit(y1000):
    """Minibatches of 100 rows without replacement (read by two tests)."""
    return _fit_normal({"y": y1000}, batch_size=100)


def test_minibatch_fit_matches_analytic_posterior(y1000, minibatch_fit):
    m, s = posterior(y1000)
    for replace in (False, True):
        fit = _fit_normal({"y": y1000}, batch_size=100, replace=True) if replace else minibatch_fit
        assert abs(float(fit.mean["mu"]) - m) < 0.05 * abs(m)
        assert abs(float(fit.std["mu"]) - s) < 0.05 * s
        assert fit.epochs == pytest.approx(3000 * 100 / 1000)


def test_same_seed_same_numbers(y1000):
    # an explicit learning rate: the minibatches' order is what is tested (tests/test_foundation.py
    # repeats a fit with its step-size search)
    a = vi.fit(normal_model, {"y": y1000}, batch_size=30, steps=200, learning_rate=0.02, progress=False, seed=4)
    b = vi.fit(normal_model, {"y": y1000}, batch_size=30, steps=200, learning_rate=0.02, progress=True, seed=4)
    np.testing.assert_array_equal(a.hist, b.hist)


def test_subsample_plate_model_keeps_working(y1000):
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0, PRIOR_SD))
        with numpyro.plate("rows", y.shape[0], subsample_size=200):
            numpyro.sample("y", dist.Normal(mu, SIGMA), obs=numpyro.subsample(y, event_dim=0))

    m, s = posterior(y1000)
    # 1500 steps: seeds 0-4 end 0.02-0.29 posterior sds from the mean (3000 steps: 0.05-0.17)
    opt = optax.adam(optax.cosine_decay_schedule(0.05, 1500))
    fit = vi.fit(model, {"y": y1000}, steps=1500, optimizer=opt, num_particles=8, progress=False)
    assert abs(float(fit.mean["mu"]) - m) < 0.5 * s
    with pytest.raises(vi.ModelError, match="subsample_size"):
        vi.fit(model, {"y": y1000}, batch_size=100, steps=10, progress=False)


def test_full_data_elbo_matches_closed_form(y1000, minibatch_fit):
    fit = minibatch_fit
    m, s = float(fit.params["loc"][0]), float(jax.nn.softplus(fit.params["rho"][0]))
    y = y1000
    exact = (np.sum(-0.5 * np.log(2 * np.pi * SIGMA**2) - ((y - m) ** 2 + s**2) / (2 * SIGMA**2))
             - 0.5 * np.log(2 * np.pi * PRIOR_SD**2) - (m**2 + s**2) / (2 * PRIOR_SD**2)
             + 0.5 * np.log(2 * np.pi * np.e * s**2))
    est, se = fit.elbo(batch_size=128, num_draws=1000, return_se=True)   # 8 batches, the last uneven
    assert abs(est - exact) < 4 * se + 1e-3 * abs(exact)


def test_per_row_deterministics_are_left_out_of_summaries(y1000):
    def model(y):
        mu = vi.Normal("mu", 0.0, PRIOR_SD)
        vi.Deterministic("resid", y - mu)     # one value per row
        vi.Deterministic("mu2", 2 * mu)      # not per row
        vi.Normal("y", mu, SIGMA, observed=y)

    fit = vi.fit(model, {"y": y1000}, batch_size=100, steps=0, progress=False)   # what is drawn, not where
    draws = fit.sample(50, seed=0)
    assert sorted(draws) == ["mu", "mu2"]
    np.testing.assert_allclose(draws["mu2"], 2 * draws["mu"], rtol=1e-6)
    assert "resid" in fit.data_note


def test_total_size_is_honoured():
    def model(y):
        mu = vi.Normal("mu", 0.0, PRIOR_SD)
        vi.Normal("y", mu, SIGMA, observed=y[:5], total_size=500)

    p = plan(model, {"y": np.zeros(100)}, batch_size=10)
    assert p.obs_scale == {"y": 500 / 5}


# ---------------------------------------------------------------------------------------------
# every row exactly once per epoch
# ---------------------------------------------------------------------------------------------

def test_in_memory_epoch_visits_every_row_once():
    n, b = 103, 10                       # uneven: batches straddle the epoch boundary
    mb = Minibatches(n, b)
    data = {"id": jnp.arange(n)}
    step = jax.jit(lambda ds, t: mb.next(ds, data, t, jax.random.PRNGKey(0), None))
    ds, seen = mb.init(jax.random.PRNGKey(5)), []
    for t in range(31):                  # 310 rows: three full epochs and one row
        batch, ds = step(ds, t)
        seen += np.asarray(batch["id"]).tolist()
    for e in range(3):
        assert np.bincount(seen[e * n:(e + 1) * n], minlength=n).tolist() == [1] * n
    assert seen[:n] != seen[n:2 * n]     # a fresh order each epoch
    assert int(ds.epoch) == 3 and int(ds.pos) == 1


def test_streaming_epoch_visits_every_row_once(tmp_path):
    n, b = 5003, 64
    _shards(tmp_path, n)
    src = vi.data.parquet(tmp_path, columns=["id", "x"], shuffle_buffer=500)
    assert src.num_rows == n
    feeder = Feeder(src, b, capacity=37, seed=0)
    seen = []
    for k in (37, 5, 37, 20, 37, 37, 37, 1, 37, 37, 37, 37, 37, 37, 37, 37, 37):   # 2 epochs and more
        block = feeder.feed(k)
        assert block["id"].shape == (37, b)
        seen += block["id"][:k].ravel().tolist()
    feeder.close()
    assert len(seen) > 2 * n
    for e in range(2):
        assert np.bincount(seen[e * n:(e + 1) * n], minlength=n).tolist() == [1] * n
    assert seen[:n] != sorted(seen[:n])  # shuffled


def test_streaming_fit_matches_in_memory_posterior(tmp_path):
    x, y = _shards(tmp_path, 3001)

    def reg(x, y):
        a = vi.Normal("a", 0, 10)
        b = vi.Normal("b", 0, 10)
        vi.Normal("y", a + b * x, 1.0, observed=y)

    # the exact posterior of (a, b): conjugate linear regression
    X = np.stack([np.ones_like(x), x], 1)
    cov = np.linalg.inv(X.T @ X + np.eye(2) / 100)
    mean = cov @ X.T @ y
    opt = optax.adam(optax.cosine_decay_schedule(0.05, 2000))
    src = vi.data.parquet(tmp_path, columns=["x", "y"])
    fit = vi.fit(reg, src, batch_size=100, steps=2000, optimizer=opt, num_particles=8, init_scale=0.02,
                 progress=False)
    assert fit.epochs == pytest.approx(2000 * 100 / 3001)
    for i, name in enumerate("ab"):
        assert abs(float(fit.mean[name]) - mean[i]) < 0.5 * np.sqrt(cov[i, i])
        assert abs(float(fit.std[name]) - np.sqrt(cov[i, i])) < 0.1 * np.sqrt(cov[i, i])
    # the same stream, seed and settings give the same numbers (and reuse the fit's programs)
    again = dict(batch_size=100, steps=300, optimizer=opt, num_particles=8, init_scale=0.02, progress=False)
    np.testing.assert_array_equal(vi.fit(reg, src, **again).hist, vi.fit(reg, src, **again).hist)


def test_npy_and_iterable_sources(tmp_path):
    n = 1000
    ids = np.arange(n)
    np.save(tmp_path / "id.npy", ids)
    src = vi.data.npy(tmp_path, chunk_rows=128, shuffle_buffer=100)
    assert src.num_rows == n
    f = Feeder(src, 30, 10, seed=1)
    seen = np.concatenate([f.feed(10)["id"].ravel() for _ in range(4)])   # 1200 rows
    f.close()
    assert np.bincount(seen[:n], minlength=n).tolist() == [1] * n

    chunks = lambda: ({"id": ids[a:a + 77]} for a in range(0, n, 77))  # noqa: E731
    f = Feeder(vi.data.iterable(chunks, num_rows=n), 30, 10, seed=1)
    seen = np.concatenate([f.feed(10)["id"].ravel() for _ in range(4)])
    f.close()
    assert np.bincount(seen[:n], minlength=n).tolist() == [1] * n


# ---------------------------------------------------------------------------------------------
# clear errors
# ---------------------------------------------------------------------------------------------

def test_column_length_mismatch_names_columns():
    with pytest.raises(vi.DataError, match=r"'x': 10, 'y': 9"):
        vi.fit(normal_model, {"x": np.zeros(10), "y": np.zeros(9)}, batch_size=3, progress=False)


def test_empty_dataset():
    with pytest.raises(vi.DataError, match="empty"):
        vi.fit(normal_model, {"y": np.zeros(0)}, batch_size=3, progress=False)


@pytest.mark.parametrize("bs", [0, 11, 2.5])
def test_bad_batch_size(bs):
    with pytest.raises(vi.DataError, match="batch_size"):
        vi.fit(normal_model, {"y": np.zeros(10)}, batch_size=bs, progress=False)


def test_missing_column_named():
    def reg(x, y):
        b = vi.Normal("b", 0, 1)
        vi.Normal("y", b * x, 1, observed=y)

    with pytest.raises(vi.ModelError, match="'x'"):
        vi.fit(reg, {"y": np.zeros(10)}, batch_size=5, progress=False)


def test_missing_parquet_column_named(tmp_path):
    _shards(tmp_path, 100)
    with pytest.raises(vi.DataError, match="'z'"):
        vi.data.parquet(tmp_path, columns=["x", "z"])


def test_nan_in_streamed_chunk_names_column_and_row_group(tmp_path):
    _shards(tmp_path, 3000)
    t = pq.read_table(tmp_path / "part1.parquet").to_pydict()
    t["x"][800] = float("nan")           # row 800 of the shard: its row group 1 (700 rows each)
    pq.write_table(pa.table(t), tmp_path / "part1.parquet", row_group_size=700)

    def reg(x, y):
        b = vi.Normal("b", 0, 1)
        vi.Normal("y", b * x, 1, observed=y)

    with pytest.raises(vi.DataError, match=r"column 'x' in 'part1.parquet' row group 1 has NaN"):
        vi.fit(reg, vi.data.parquet(tmp_path, columns=["x", "y"]), batch_size=50, steps=200, progress=False)


def test_nan_in_memory_names_column_and_row():
    y = np.zeros(20)
    y[7] = np.nan
    with pytest.raises(vi.DataError, match="column 'y' has NaN or inf at row 7"):
        vi.fit(normal_model, {"y": y}, batch_size=5, progress=False)


def test_iterable_with_wrong_num_rows_fails_after_first_epoch():
    chunks = lambda: ({"y": np.ones(10)} for _ in range(5))   # noqa: E731  (50 rows)
    with pytest.raises(vi.DataError, match="gave 50 rows in its first epoch, but num_rows is 60"):
        vi.fit(normal_model, vi.data.iterable(chunks, num_rows=60), batch_size=10, steps=20, progress=False)


def test_observed_site_not_per_row_is_an_error():
    def model(y, y0):
        mu = vi.Normal("mu", 0, 1)
        vi.Normal("y", mu, 1, observed=y)
        vi.Normal("y0", mu, 1, observed=y0)

    with pytest.raises(vi.ModelError, match="observed site 'y0'.*total_size="):
        vi.fit(model, {"y": np.zeros(10)}, batch_size=5, model_kwargs={"y0": np.zeros(3)}, progress=False)

    def outer(y):
        mu = vi.Normal("mu", 0, 1)
        vi.Normal("yy", mu, 1, observed=y[:, None] * y[None, :])

    with pytest.raises(vi.ModelError, match="observed site 'yy'.*ambiguous"):
        vi.fit(outer, {"y": np.zeros(10)}, batch_size=5, progress=False)
