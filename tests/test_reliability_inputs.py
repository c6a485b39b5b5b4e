"""Inputs that used to give a silently wrong number, faults that must end cleanly, and errors that
must name what the user wrote: each asserts the exact behaviour or an exact value."""

import os


import multiprocessing  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402

import variational as vi  # noqa: E402
from variational.posterior import export  # noqa: E402
from variational.posterior.diagnostics import psis  # noqa: E402

Y2 = np.array([1.0, 3.0])
PRIOR_SD = 10.0
POST_PREC = 1 / PRIOR_SD**2 + len(Y2)              # conjugate normal, unit noise
POST_MEAN, POST_SD = Y2.sum() / POST_PREC, POST_PREC ** -0.5


def normal_model(y):
    mu = vi.Normal("mu", 0.0, PRIOR_SD)
    vi.Normal("y", mu, 1.0, observed=y)


def regression(x, y=None):
    b = vi.Normal("b", 0.0, 1.0)
    vi.Normal("y", b * x, 1.0, observed=y)


# the in-memory data of the regression's fits: one shape, so the fits of this module share their programs
REG5 = {"x": np.arange(5.0), "y": np.arange(5.0)}


def log_evidence(y):
    """log p(y) of the conjugate normal model: y ~ N(0, I + PRIOR_SD^2 11')."""
    cov = np.eye(len(y)) + PRIOR_SD**2
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (len(y) * np.log(2 * np.pi) + logdet + y @ np.linalg.solve(cov, y))


# ---------------------------------------------------------------------------------------------
# silently wrong results, now exact or refused
# ---------------------------------------------------------------------------------------------
def test_int64_beyond_32_bits_is_refused_by_name_and_kept_exact_within(tmp_path):
    big = np.arange(4, dtype=np.int64) * 2**31 + 3
    with pytest.raises(vi.DataError, match="column 'x' holds integers beyond the 32-bit range"):
        vi.fit(regression, {"x": big, "y": np.ones(4)}, steps=5, progress=False)
    fit = vi.fit(regression, REG5, steps=5, progress=False)
    with pytest.raises(vi.DataError, match="column 'x' holds integers beyond"):
        fit.predict({"x": big}, n=2)
    np.save(tmp_path / "x.npy", big)
    np.save(tmp_path / "y.npy", np.ones(4))
    with pytest.raises(vi.DataError, match=r"column 'x' in rows 0:4 of the .npy files holds integers beyond"):
        vi.fit(regression, vi.data.npy(tmp_path), batch_size=2, steps=5, progress=False)
    small = np.array([2**31 - 1, -(2**31), 7], dtype=np.int64)
    assert vi.as_columns({"x": small})["x"].tolist() == small.tolist()   # exact, as int32


def test_total_size_scales_the_likelihood_without_batch_size():
    def model(y):
        mu = vi.Normal("mu", 0.0, 1.0)
        vi.Normal("y", mu, 1.0, observed=y, total_size=1000)

    y = np.array([0.5, 1.0, 1.5, 2.0], np.float32)
    ld = vi.LogDensity(model, {"y": y})
    logp = jax.jit(ld.logp)    # one program (called eagerly, every op inside compiles on its own)
    for mu in (-1.0, 0.3, 2.0):
        exact = (-0.5 * np.log(2 * np.pi) - mu**2 / 2
                 + 250.0 * np.sum(-0.5 * np.log(2 * np.pi) - (y - mu) ** 2 / 2))
        assert float(logp(jnp.array([mu]), {"y": y})) == pytest.approx(exact, rel=1e-5)
    fit = vi.fit(model, {"y": y}, steps=0, progress=False)
    assert float(jax.jit(fit.logdensity.logp)(jnp.array([0.3]), fit.data)) == pytest.approx(
        float(logp(jnp.array([0.3]), {"y": y})), rel=1e-6)


def test_guide_fit_elbo_and_importance_weights_use_the_raw_parameters():
    def guide(y):   # starts at the exact posterior, so q = p(mu | y)
        m = numpyro.param("m", POST_MEAN)
        s = numpyro.param("s", POST_SD, constraint=constraints.positive)
        numpyro.sample("mu", dist.Normal(m, s))

    fit = vi.fit(normal_model, {"y": Y2}, guide=guide, steps=0, progress=False)
    est, se = fit.elbo(num_draws=200, seed=0, return_se=True)
    assert est == pytest.approx(log_evidence(Y2), abs=1e-3) and se < 1e-3   # KL(q || p) = 0
    q = fit.approximation
    _, lw, _ = psis(q.logdensity, q.family, q.params, q.training_data(), jax.random.PRNGKey(0), 200)
    assert np.ptp(lw) < 1e-3                                                 # equal weights


def test_elbo_of_a_model_without_data_columns():
    fit = vi.fit(lambda: vi.Normal("x", 0.0, 1.0), steps=0, progress=False)
    m, s = float(fit.unconstrained_mean["x"]), float(fit.unconstrained_std["x"])
    exact = -0.5 * np.log(2 * np.pi) - (m**2 + s**2) / 2 + 0.5 * np.log(2 * np.pi * np.e * s**2)
    est, se = fit.elbo(num_draws=4000, seed=0, return_se=True)
    assert abs(est - exact) < 4 * se + 1e-6


def test_latent_delta_site_is_refused():
    def model():
        vi.Site("d", dist.Delta(1.0))
        vi.Normal("x", 0.0, 1.0)

    with pytest.raises(vi.ModelError, match="site 'd' is a latent Delta"):
        vi.fit(model, steps=5, progress=False)


def test_silent_acceptances_are_refused_by_name():
    df = pd.DataFrame(np.ones((3, 2)), columns=["y", "y"])
    with pytest.raises(vi.DataError, match="2 columns named 'y'"):
        vi.fit(normal_model, df, steps=5, progress=False)
    for steps in (10.7, "10", True):
        with pytest.raises(ValueError, match=f"steps={steps!r} must be a whole number"):
            vi.fit(normal_model, {"y": Y2}, steps=steps, progress=False)
    fit = vi.fit(normal_model, {"y": Y2}, steps=1e2, progress=False)
    assert fit.steps == 100
    with pytest.raises(vi.DataError, match="column 'x' has NaN or inf at row 1"):
        vi.fit(regression, REG5, steps=5, progress=False).predict(
            {"x": np.array([1.0, np.nan])}, n=2)


def test_iterable_giving_fewer_rows_in_a_later_epoch_is_an_error():
    calls = []

    def chunks():
        calls.append(1)
        n = 60 if len(calls) <= 3 else 50   # columns, the traced head, epoch 0; then epoch 1
        return ({"x": np.ones(10), "y": np.ones(10)} for _ in range(n // 10))

    every3 = vi.callbacks.Tracker(every=3, steps=lambda fit: fit.steps)
    with pytest.raises(vi.DataError, match="gave 50 rows in epoch 1") as err:
        vi.fit(regression, vi.data.iterable(chunks, num_rows=60), batch_size=10, steps=12,
               callbacks=[every3], progress=False)
    assert err.value.fit.steps == 6 and len(err.value.fit.hist) == 6   # the good epoch's steps are kept


DISCRETE = [
    ("Poisson", lambda c: vi.Poisson("c", vi.HalfNormal("r", 5.0), observed=c), [0.0, 1.0, 2.5]),
    ("Binomial", lambda c: vi.Binomial("c", 5, vi.Beta("p", 1.0, 1.0), observed=c), [0.0, 2.0, 6.0]),
    ("Categorical", lambda c: vi.Categorical("c", vi.Dirichlet("w", jnp.ones(3)), observed=c), [0, 1, 3]),
    ("Bernoulli", lambda c: vi.Bernoulli("c", vi.Beta("p", 1.0, 1.0), observed=c), [0.0, 1.0, 0.25]),
]


@pytest.mark.parametrize("name,site,values", DISCRETE, ids=[d[0] for d in DISCRETE])
def test_discrete_sites_refuse_values_they_cannot_take(name, site, values):
    def model(c):
        site(c)

    with pytest.raises(vi.DataError, match=f"site 'c' \\({name}\\) observes data column 'c', which holds "
                                           f"{values[2]!r} at row 2"):
        vi.fit(model, {"c": np.asarray(values)}, steps=5, progress=False)
    with pytest.raises(vi.DataError, match="at row 2"):   # a minibatch fit checks every row
        vi.fit(model, {"c": np.asarray(values)}, batch_size=1, steps=5, progress=False)
    if name == "Poisson":                                  # a streamed fit, every chunk
        src = vi.data.iterable(lambda: iter([{"c": np.zeros(3)}, {"c": np.asarray(values)}]), num_rows=6)
        with pytest.raises(vi.DataError, match=r"column 'c' in chunk 1, which holds 2.5 at row 2"):
            vi.fit(model, src, batch_size=1, steps=5, progress=False)


# ---------------------------------------------------------------------------------------------
# faults that must end cleanly
# ---------------------------------------------------------------------------------------------
def test_fits_in_two_threads_equal_the_same_fits_one_after_the_other():
    jobs = {"a": (normal_model, {"y": Y2}), "b": (regression, REG5)}
    alone = {k: vi.fit(m, d, steps=300, progress=False) for k, (m, d) in jobs.items()}
    together, errors = {}, []

    def run(k):
        try:
            together[k] = vi.fit(*jobs[k], steps=300, progress=False)
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in jobs]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert not errors, errors
    for k in jobs:
        assert np.array_equal(together[k].hist, alone[k].hist)


def _fit_in_child(queue):
    try:
        vi.fit(lambda: vi.Normal("x", 0.0, 1.0), steps=5, progress=False)
        queue.put("no error")
    except Exception as e:  # noqa: BLE001
        queue.put(f"{type(e).__name__}: {e}")


def test_fit_in_a_forked_child_is_refused_instead_of_hanging():
    vi.fit(lambda: vi.Normal("x", 0.0, 1.0), steps=0, progress=False)   # JAX has started here
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # fork of a threaded process
        child = ctx.Process(target=_fit_in_child, args=(queue,))
        child.start()
    child.join(60)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung
    assert queue.get(timeout=10).startswith("ForkError: this process")


def test_npy_file_that_shrinks_is_a_data_error_not_sigbus(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(20_000.0))
    np.save(tmp_path / "y.npy", np.zeros(20_000))
    src = vi.data.npy(tmp_path, chunk_rows=1000, shuffle_buffer=0)
    os.truncate(tmp_path / "x.npy", os.path.getsize(tmp_path / "x.npy") // 2)
    with pytest.raises(vi.DataError, match=r"'x': '.*x\.npy' is \d+ bytes, too short for rows"):
        vi.fit(regression, src, batch_size=500, steps=60, progress=False)


def test_damaged_parquet_and_misshapen_chunks_are_named(tmp_path):
    for k in range(2):
        pd.DataFrame({"x": np.arange(100.0), "y": np.zeros(100)}).to_parquet(
            tmp_path / f"p{k}.parquet", row_group_size=50)
    src = vi.data.parquet(tmp_path)
    path = tmp_path / "p1.parquet"
    path.write_bytes(path.read_bytes()[:300])                      # truncated after opening
    with pytest.raises(vi.DataError, match=r"'p1.parquet' row group \d: .*changed since the source was opened"):
        vi.fit(regression, src, batch_size=10, steps=30, progress=False)
    with pytest.raises(vi.DataError, match=r"'.*p1.parquet' is not a readable Parquet file"):
        vi.data.parquet(tmp_path)
    pd.DataFrame({"x": np.arange(100.0), "y": np.zeros(100)}).to_parquet(path, row_group_size=50)
    src, st = vi.data.parquet(tmp_path), os.stat(path)
    raw = bytearray(path.read_bytes())
    raw[4:1200] = bytes(b ^ 0xFF for b in raw[4:1200])    # corrupt pages, same size and mtime
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(vi.DataError, match=r"'.*p1.parquet' row group 0 could not be read .*expected 50 rows"):
        src.read((1, 0))

    def chunks():
        yield {"x": np.ones((10, 2)), "y": np.ones(10)}
        yield {"x": np.ones((10, 3)), "y": np.ones(10)}

    src = vi.data.iterable(chunks, num_rows=20)
    with pytest.raises(vi.DataError, match=r"column 'x' in chunk 1 has rows of shape \(3,\) .* first chunk's are \(2,\)"):
        src.head(20)


def _interrupting_source():
    def chunks():
        for start in range(0, 1000, 100):
            if threading.current_thread().name == "variational-prefetch" and start == 0:
                os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C while vi.fit waits for data
                time.sleep(0.5)
            yield {"x": np.ones(100, np.float32), "y": np.ones(100, np.float32)}
    return vi.data.iterable(chunks, num_rows=1000)


def test_ctrl_c_while_waiting_for_data_or_compiling_returns_the_fit_and_stops_the_reader(monkeypatch):
    fit = vi.fit(regression, _interrupting_source(), batch_size=10, steps=50, progress=False)
    assert fit.interrupted and fit.steps == 0 and len(fit.hist) == 0
    assert not fit._plan.feeder.running
    assert "variational-prefetch" not in [t.name for t in threading.enumerate()]

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    fit = vi.fit(regression, REG5, steps=0, learning_rate=0.01, progress=False)
    monkeypatch.setattr(fit.engine, "compile", ctrl_c)
    fit.refine(10)
    assert fit.interrupted and fit.steps == 0 and "interrupted at step 0" in fit.message


def test_to_arviz_bounds_the_predictive_by_default(monkeypatch):
    monkeypatch.setattr(export, "MAX_PREDICTIVE_VALUES", 1000)
    fit = vi.fit(regression, {"x": np.ones(200), "y": np.ones(200)}, batch_size=20, steps=0, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idata = fit.to_arviz(n=10)
    said = sorted(str(w.message).split(" left out")[0] for w in caught if "would hold 2,000 numbers" in str(w.message))
    assert said == ["log_likelihood", "posterior_predictive"]
    kept = [g for g in ("posterior", "observed_data", "posterior_predictive", "log_likelihood") if g in idata]
    assert kept == ["posterior", "observed_data"] and idata.posterior["b"].shape == (1, 10)
    full = fit.to_arviz(n=10, posterior_predictive=True, log_likelihood=True)
    assert full.posterior_predictive["y"].shape == full.log_likelihood["y"].shape == (1, 10, 200)


# ---------------------------------------------------------------------------------------------
# errors that name what the user wrote
# ---------------------------------------------------------------------------------------------
def test_errors_name_the_column_parameter_or_argument():
    for bad, name in [(np.array([1.0, np.inf, 2.0]), "column 'x' has NaN or inf at row 1"),
                      (pd.array([1.0, None, 2.0], dtype="Float64"), "column 'x' has a missing value")]:
        with pytest.raises(vi.DataError, match=name):
            vi.fit(regression, pd.DataFrame({"x": bad, "y": [1.0, 2.0, 3.0]}), steps=5, progress=False)
    with pytest.raises(vi.ModelError, match=r"site 's': HalfNormal's scale must be positive, got -2.0"):
        vi.fit(lambda: vi.HalfNormal("s", -2.0), steps=5, progress=False)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'n_steps' \(did you mean 'steps'\?\)"):
        vi.fit(normal_model, {"y": Y2}, n_steps=5, progress=False)
    with pytest.raises(vi.ModelError, match=r"'yy' is not an argument of the model \(did you mean 'y'\?\)"):
        vi.fit(normal_model, {"yy": Y2}, steps=5, progress=False)


def test_diagnose_draw_counts_and_trackers_of_builtins():
    tracker = vi.callbacks.Tracker(every=5, time=time.time, mu=lambda fit: float(fit.params["loc"][0]))
    fit = vi.fit(normal_model, {"y": Y2}, steps=20, progress=False, callbacks=[tracker])
    assert len(tracker["time"]) == 4 and all(isinstance(t, float) for t in tracker["time"])
    for n in (0, 1, 99):
        with pytest.raises(ValueError, match=f"n={n}: k-hat .* needs at least 100"):
            fit.diagnose(n=n)
    assert fit.diagnose(n=100).n_draws == 100
    fig = vi.plots.tracker(tracker)
    assert [ax.get_title() for ax in fig.axes] == ["time", "mu"]
    assert list(fig.axes[1].lines[0].get_xdata()) == [5, 10, 15, 20]
