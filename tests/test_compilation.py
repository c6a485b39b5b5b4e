"""Compiled programs are made once: the persistent cache, sharing between fits, compile counts.

Truths: the number of XLA compilations JAX reports (``jax.monitoring``), exact equality of the
numbers of two runs, the conjugate posterior of a normal mean, and ArviZ's PSIS.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import variational as vi
from variational.compilation import cache as compilation
from variational.compilation import clear_programs, fingerprint, freeze, stats

Y = np.random.default_rng(3).normal(2.0, 1.0, size=50)


def _posterior_mean(y, scale):
    """Exact posterior mean of mu under mu ~ N(0, 10), y ~ N(scale * mu, 1)."""
    return scale * y.sum() / (scale**2 * len(y) + 1 / 100)


def mean_model(y):
    mu = vi.Normal("mu", 0.0, 10.0)
    vi.HalfNormal("tau", 1.0)
    vi.Normal("y", mu, 1.0, observed=y)


@pytest.fixture
def cache_state(tmp_path):
    """Run a test with the cache settings of its own and put the process's back afterwards."""
    before_current, before_dir = compilation._current, jax.config.jax_compilation_cache_dir
    before_ours = compilation._ours
    yield tmp_path
    compilation._current, compilation._ours = before_current, before_ours
    compilation._point_jax_at(None if before_dir is None else before_dir)
    compilation._ours = before_ours


def _fit(model=mean_model, seed=0, **kw):
    return vi.fit(model, {"y": Y}, steps=300, progress=False, seed=seed, **kw)


def test_a_second_fit_of_the_same_model_compiles_nothing():
    first = _fit(seed=0)
    first.diagnose(n=500)
    first.sample(200)
    before = stats()
    second = _fit(seed=1)                 # another seed: the same program
    d = second.diagnose(n=500)
    draws = second.sample(200)
    s = stats() - before
    assert (s.compilations, s.cache_hits) == (0, 0)
    assert second.timings["compilations"] == 0
    assert np.isfinite(d.khat) and draws["mu"].shape == (200,)
    assert not np.array_equal(first.hist, second.hist)   # it did run with its own seed


def test_a_first_fit_compiles_a_handful_of_programs(cache_state):
    """Counts every XLA compilation of a first fit + diagnose + draws (nothing cached anywhere)."""
    vi.set_compile_cache(cache_state)
    jax.clear_caches()
    clear_programs()

    def fresh_model(y):   # not seen by any other test
        mu = vi.Normal("m", 1.0, 5.0)
        vi.Normal("y", mu, vi.HalfNormal("s", 2.0), observed=y)

    before = stats()
    # mean-field at a given constant step (with every default, the step-size trials, the
    # schedule and the full-rank family add 3: 14 for the fit, 19 in all)
    fit = vi.fit(fresh_model, {"y": Y}, steps=200, method="advi", learning_rate=0.01, progress=False)
    n_fit = (stats() - before).compilations
    fit.diagnose(n=500)
    fit.sample(300)
    assert np.isfinite(fit.mean["m"])
    n = (stats() - before).compilations
    # measured: the fit 11 (data to the device 2, the seed, the initial point, the flat initial
    # point 2, the family's initial scale 2, the first state, a conversion, the chunk); then the
    # importance weights, a conversion and the draws' key, and the draws and their constrained
    # values for sample(300) and for mean (4000 draws) 4
    assert n_fit <= 11 and n <= 18, (n_fit, n)
    assert fit.timings["compilations"] == n


def _same(a, b):
    np.testing.assert_array_equal(a.hist, b.hist)
    for k in ("loc", "rho"):
        np.testing.assert_array_equal(np.asarray(a.state.params[k]), np.asarray(b.state.params[k]))


def test_a_long_fit_compiles_its_answers_while_it_runs(monkeypatch):
    monkeypatch.setenv("VARIATIONAL_COMPILE_AHEAD", "1")   # (the suite turns it off elsewhere)

    def ahead_model(y):   # not seen by any other test
        vi.Normal("y", vi.Normal("a", 0.5, 3.0), 1.0, observed=y)

    fit = vi.fit(ahead_model, {"y": Y}, steps=5000, progress=False)
    fit.sample(10)                       # (the eager work of drawing: a key)
    before = stats()
    d = fit.diagnose()                   # 4000 draws: compiled during the steps
    mean = fit.mean["a"]                 # 4000 draws: compiled during the steps
    assert (stats() - before).compilations == 0
    exact = (Y.sum() + 0.5 / 9) / (len(Y) + 1 / 9)   # a ~ N(0.5, 3), y ~ N(a, 1)
    assert d.khat < 0.5 and abs(float(mean) - exact) < 0.1   # posterior sd 0.14


def test_numbers_are_identical_with_and_without_the_disk_cache(cache_state):
    vi.set_compile_cache(cache_state)
    jax.clear_caches()
    clear_programs()
    before = stats()
    compiled = _fit(seed=5)                      # compiles every program (and writes them)
    assert (stats() - before).cache_hits == 0
    jax.clear_caches()                           # as in a new session:
    clear_programs()
    before = stats()
    loaded = _fit(seed=5)                        # every program from JAX's cache
    s = stats() - before
    assert s.compilations == 0 and s.cache_hits >= 3
    _same(loaded, compiled)
    vi.set_compile_cache(None)                   # and with no cache at all
    jax.clear_caches()
    clear_programs()
    _same(_fit(seed=5), compiled)


SCALE = 1.0


def global_model(y):
    mu = vi.Normal("mu", 0.0, 10.0)
    vi.Normal("y", SCALE * mu, 1.0, observed=y)


def kwarg_model(y, scale):
    mu = vi.Normal("mu", 0.0, 10.0)
    vi.Normal("y", scale * mu, 1.0, observed=y)


def test_a_changed_global_or_model_kwarg_is_a_new_program():
    """The same model function with another global or model_kwargs value is not reused stale."""
    global SCALE
    kw = {"steps": 1500, "stl": True, "learning_rate": 0.05, "progress": False}
    try:
        for scale in (1.0, 2.0):
            SCALE = scale
            got = float(vi.fit(global_model, {"y": Y}, **kw).mean["mu"])
            assert abs(got - _posterior_mean(Y, scale)) < 0.03, (scale, got)
    finally:
        SCALE = 1.0
    for scale in (1.0, 0.5):
        got = float(vi.fit(kwarg_model, {"y": Y}, model_kwargs={"scale": scale}, **kw).mean["mu"])
        assert abs(got - _posterior_mean(Y, scale)) < 0.05, (scale, got)


def test_settings_that_are_constants_of_a_program_are_part_of_its_key():
    """Two fits of one model that differ in the learning rate, a family option or the optimiser
    share nothing that would carry the first one's setting into the second."""
    _fit(seed=0)
    for kw, check in [({"learning_rate": 0.5}, lambda f: f.learning_rate == 0.5),
                      ({"init_scale": 0.5}, lambda f: np.allclose(jax.nn.softplus(f.state.params["rho"]), 0.5)),
                      ({"optimizer": "sgd", "learning_rate": 0.25}, lambda f: f.learning_rate == 0.25)]:
        assert check(vi.fit(mean_model, {"y": Y}, steps=0, progress=False, **kw)), kw


def test_another_objective_is_another_program():
    """The objective is a constant of the chunk: fits of one model under the ELBO, a KL weight
    and the closed-form mean-field KL (same seed) each run their own steps, not the first one's."""
    base = _fit(seed=0)
    before = stats()
    weighted = _fit(seed=0, kl_weight=0.5)
    closed = _fit(seed=0, objective="meanfield_elbo")
    made = stats() - before
    assert made.compilations + made.cache_hits >= 2   # two chunks of their own (compiled or loaded)
    assert not np.array_equal(base.hist, weighted.hist)
    assert not np.array_equal(base.hist, closed.hist)
    assert not np.array_equal(weighted.hist, closed.hist)


def test_direct_methods_answer_for_their_own_data():
    """Laplace fits of one model on two data sets share no answer: each mean is the conjugate
    posterior mean of its own data."""
    for y in (Y, Y + 1.0):
        fit = vi.fit(mean_model, {"y": y}, method="laplace", progress=False)
        assert float(fit.mean["mu"]) == pytest.approx(_posterior_mean(y, 1.0), abs=0.02)
        assert fit.sample(100)["mu"].shape == (100,)


def test_fingerprint_sees_constants_by_value():
    a, b = np.arange(3.0), np.arange(3.0) + 1
    fa = fingerprint(jax.make_jaxpr(lambda x: x * a)(np.ones(3)))
    assert fa == fingerprint(jax.make_jaxpr(lambda x: x * a.copy())(np.zeros(3)))
    assert fa != fingerprint(jax.make_jaxpr(lambda x: x * b)(np.ones(3)))
    assert freeze({"k": 1, "a": a}) == freeze({"a": a.copy(), "k": 1})


def test_an_unwritable_cache_directory_falls_back_silently_with_a_note(cache_state, monkeypatch):
    blocker = cache_state / "a-file"
    blocker.write_text("not a directory")
    where = blocker / "cache"
    compilation._point_jax_at(None)
    compilation._current = None
    monkeypatch.setenv(compilation.ENV_VAR, str(where))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = _fit(seed=2)
    info = vi.compile_cache()
    assert not info.enabled and info.source == "off"
    assert str(where) in info.note and "cannot be written" in info.note
    assert fit.steps == 300 and jax.config.jax_compilation_cache_dir is None
    with pytest.raises(OSError, match="a-file"):
        vi.set_compile_cache(where)


def test_the_users_own_jax_cache_is_left_alone(cache_state, monkeypatch):
    mine = str(cache_state / "users-jax-cache")
    monkeypatch.delenv(compilation.ENV_VAR, raising=False)
    compilation._point_jax_at(None)
    jax.config.update("jax_compilation_cache_dir", mine)
    compilation._current = None
    info = vi.compile_cache()
    assert info.source == "jax" and str(info.directory) == mine
    with compilation.caching():
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0   # JAX's default
    assert jax.config.jax_compilation_cache_dir == mine
    monkeypatch.setenv(compilation.ENV_VAR, "off")
    compilation._current = None
    assert vi.compile_cache().source == "off"


def test_the_default_directory_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation.default_cache_dir() == tmp_path / "variational" / "jax"


def _arviz_psislw(log_w):
    """ArviZ's own PSIS of log importance ratios (0.x: az.psislw; 1.x smooths exp(-input))."""
    from variational.families._psis import ARVIZ_1

    if ARVIZ_1:
        from arviz_stats.base import array_stats

        lw, k = array_stats.psislw(-log_w)
    else:
        import arviz as az

        lw, k = az.psislw(log_w.copy())
    return np.asarray(lw), float(k)


def test_psis_matches_arviz():
    from variational.families._psis import ARVIZ_1, pareto_smooth

    rng = np.random.default_rng(0)
    for log_w in (rng.normal(size=4000), 2.0 * rng.standard_t(3, size=4000), rng.normal(size=40)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want, want_k = _arviz_psislw(log_w)
        got, got_k = pareto_smooth(log_w)
        if ARVIZ_1:   # ArviZ 1.x fits the Pareto tail with its own variant of the estimator
            assert abs(got_k - want_k) < 0.05
            np.testing.assert_allclose(np.exp(got), np.exp(want), rtol=0, atol=1e-3)
        else:         # ArviZ 0.x: the same estimator, the same numbers
            assert got_k == pytest.approx(want_k, rel=1e-12)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_timings_say_where_the_time_went():
    fit = _fit(seed=3)
    fit.diagnose(n=500)
    assert np.isfinite(fit.mean["mu"])
    t = fit.timings
    assert t["steps"] == 300
    for k in ("setup_s", "compile_s", "run_s", "draws_s", "diagnose_s"):
        assert t[k] >= 0.0, k
    assert t["diagnose_s"] > 0 and t["draws_s"] > 0


# -- programs run only for the fits they belong to ---------------------------------------------

WORKER = str(Path(__file__).with_name("_reuse_worker.py"))
METHODS = ("advi", "fullrank_advi", "lowrank_advi", "dadvi", "laplace", "pathfinder", "svgd")


def _worker(tmp_path, name, methods, devices=1, steps="30", cache=None, edited=False):
    """Run the worker in a new process; its means by fit (a crash fails the test, with its output)."""
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "VARIATIONAL_COMPILE_AHEAD": "0",
           "VARIATIONAL_COMPILE_CACHE": str(cache or tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    done = subprocess.run([sys.executable, WORKER, str(out), ",".join(methods), str(devices), steps]
                          + (["edited"] if edited else []),
                          env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"{name}: exit {done.returncode}\n{done.stderr[-3000:]}"
    return json.loads(out.read_text())


@pytest.mark.slow  # (two processes)
def test_a_fit_without_data_runs_again_in_a_new_process(tmp_path):
    """lowrank_advi on a model without data, 10 steps after the step-size search, twice in two
    processes sharing a cache directory: the second died of a segmentation fault when it ran the
    first one's stored program."""
    first = _worker(tmp_path, "first", ["lowrank_advi"], steps="10auto")
    second = _worker(tmp_path, "second", ["lowrank_advi"], steps="10auto")
    assert first == second


@pytest.mark.slow  # (a subprocess with four host devices)
def test_a_data_parallel_fit_after_a_one_device_fit(tmp_path):
    """Four host devices after one, in one process: the four-device fit ran the one-device
    program ("compiled for input shardings that disagree"). The two agree to rounding."""
    got = _worker(tmp_path, "devices", ["advi"], devices=4)
    for name in ("advi/data", "advi/none"):
        np.testing.assert_allclose(got[name + "/4"], got[name], rtol=1e-5, atol=1e-6)


def test_a_flow_with_the_default_step_size_runs():
    """method='flow' with the step-size search: its layers were built inside a trace, and the
    search then ran a program made for other arguments ("compiled for 148 inputs")."""
    fit = vi.fit(mean_model, {"y": Y}, method="flow", steps=20, progress=False)
    assert np.isclose(fit.lr_search and fit.learning_rate, list(fit.lr_search), rtol=1e-6).any()
    assert np.isfinite(fit.mean["mu"])


@pytest.mark.slow
def test_every_method_gives_the_same_numbers_in_any_process_and_order(tmp_path):
    """Each method, with and without data: twice in two processes sharing a cache directory,
    in two orders (dadvi after the others failed with a segmentation fault), and on one and
    four devices; the same numbers every time, no crash. Then the models as a user edits them
    (other prior scales, which the programs take as an argument): with the cache the originals
    left, each fit compiles no more than a repeat of the original does besides its initial
    point, and its numbers are exactly those of a process that compiles everything afresh for
    the edit, in a cache of its own and in reverse order."""
    first = _worker(tmp_path, "first", METHODS)
    assert _worker(tmp_path, "again", METHODS) == first
    edited = _worker(tmp_path, "edited", METHODS, edited=True)
    # (in another cache, in reverse order: the same numbers from programs compiled afresh)
    assert _worker(tmp_path, "edited-fresh", METHODS[::-1], cache=tmp_path / "edit", edited=True) == edited
    assert all(edited[name] != means for name, means in first.items())
    counts = {name: json.loads((tmp_path / f"{name}.json.counts").read_text()) for name in ("again", "edited")}
    # (the initial point, compiled with its numbers in it: see the in-process edit test)
    assert all(counts["edited"][name] <= n + 1 for name, n in counts["again"].items()), counts
    assert _worker(tmp_path, "reversed", METHODS[::-1]) == first
    both = _worker(tmp_path, "devices", METHODS, devices=4)
    for name, means in first.items():
        np.testing.assert_allclose(both[name], means, rtol=0, atol=0)
        if name + "/4" in both:
            np.testing.assert_allclose(both[name + "/4"], means, rtol=1e-4, atol=1e-5)
    assert sum(name.endswith("/4") for name in both) == 8   # advi, fullrank, lowrank, svgd


@pytest.mark.slow
def test_default_fits_give_the_same_numbers_in_a_new_process(tmp_path):
    methods = ["advi", "dadvi", "laplace", "pathfinder"]
    assert _worker(tmp_path, "first", methods, steps="default") == _worker(
        tmp_path, "second", methods[::-1], steps="default")


def test_importing_the_library_leaves_arviz_matplotlib_and_pandas_alone():
    """ArviZ, matplotlib, pandas and xarray load when a function needs them (SciPy comes with
    NumPyro itself); counted in a new process."""
    probe = ("import sys, variational; "
             "print(sorted(m for m in ('arviz', 'matplotlib', 'pandas', 'xarray', 'pyarrow') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_first_default_fit_compiles_few_programs(tmp_path):
    """A first default fit of a small radon-like regression (step-size search, adaptive schedule,
    full-rank family), diagnose() and 1000 draws, counted from JAX's compile log in a new
    process: 57 compilations before, most of them single operations run eagerly between chunks.
    Now the schedule's host work runs two small compiled programs and the step-size trials run
    the chunk; what is left eager is the model's set-up (the seed, the data's conversion of a key,
    the flat initial point) and the step-size search's keys."""
    out = tmp_path / "counts.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("XLA_FLAGS", None)
    worker = str(Path(__file__).with_name("_count_worker.py"))
    done = subprocess.run([sys.executable, worker, str(out)], env=env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(out.read_text())
    every = counts["fit"] + counts["diagnose"] + counts["draws"]
    # single operations run eagerly: only the step-size search's key (its int, the fold); the
    # seed's key and the flat initial point are made on the host (compilation.host)
    single = ["jit(convert_element_type)", "jit(_threefry_fold_in)"]
    assert sorted(n for n in every if n in single) == sorted(single), every
    # the library's programs: the initial point, the first state, the chunk, the schedule's
    # summaries and new stage; the importance weights and the constrained values of its 4000
    # draws (the verdict's moment check in the model's space; compiled ahead during the fit when
    # compiling ahead is on); the draws and their constrained values
    assert sorted(n for n in every if n not in single) == sorted(
        ["jit(<lambda>)"] * 5 + ["jit(_chunk)", "jit(summary)", "jit(new_stage)", "jit(fn)"]), every
    assert len(every) == 11


@pytest.fixture
def made(monkeypatch):
    """The kinds of the programs compiled (not found in this process) while a test runs."""
    from variational.compilation import programs

    kinds = []
    resolve = programs._resolve

    def counting(key, lower):
        if key not in programs._programs:
            kinds.append(key[0])
        return resolve(key, lower)

    monkeypatch.setattr(programs, "_resolve", counting)
    return kinds


def coin_model(data):
    p = numpyro.sample("p", dist.Beta(1.0, 1.0))
    with numpyro.plate("flips", len(data)):
        numpyro.sample("obs", dist.Bernoulli(p), obs=data)


def beta_guide(data):
    # initial values written as Python numbers (weakly typed), a sampler with a custom derivative
    a = numpyro.param("a", 5.0, constraint=dist.constraints.positive)
    b = numpyro.param("b", 5.0, constraint=dist.constraints.positive)
    numpyro.sample("p", dist.Beta(a, b))


def test_a_guide_fit_compiles_its_chunk_once_and_a_second_fit_reuses_it(made):
    """A guide's weakly typed initial values and a sampler with a custom derivative rule
    (Beta's) once made every chunk of a long fit and every later fit compile anew."""
    flips = np.array([1.0] * 12 + [0.0] * 8)
    kw = dict(guide=beta_guide, optimizer="adam", learning_rate=0.005, steps=4200, progress=False, seed=4)
    first = vi.fit(coin_model, {"data": flips}, **kw)      # two chunks (4096 + 104 steps)
    assert made.count("chunk") == 1
    before = stats()
    second = vi.fit(coin_model, {"data": flips}, **kw)
    assert (stats() - before).compilations == 0 and made.count("chunk") == 1
    np.testing.assert_array_equal(first.hist, second.hist)
    a, b = float(second.params["a"]), float(second.params["b"])
    assert abs(a / (a + b) - 13 / 22) < 0.03              # the exact posterior is Beta(13, 9)


def prior_model(y, scale):
    """mu ~ N(0, scale), y ~ N(mu, 1): the posterior of mu is N(sum y / (n + 1/scale^2), 1 / (n + 1/scale^2))."""
    def model(y):
        mu = vi.Normal("mu", 0.0, scale)
        vi.Normal("y", mu, 1.0, observed=y)
    return model


def test_a_fit_after_an_edit_of_a_prior_compiles_only_its_initial_point(made):
    """A user's next fit after editing a prior's scale (10 -> 0.1): its steps, diagnosis and
    draws run the programs of the first fit, with the new scale as their argument; only the
    initial point is compiled again (a small program that XLA folds with its numbers in it,
    5x faster than with them as an argument on the radon model). Each fit, and the edited fit's
    draws, match their own exact posterior (the two are 9 posterior sds apart). (That reused
    programs give the very numbers of programs compiled afresh, for every method and across
    processes, is the slow every-method test's.)"""
    kw = dict(method="advi", steps=1500, learning_rate=0.02, progress=False, seed=1)
    first = vi.fit(prior_model(Y, 10.0), {"y": Y}, **kw)
    first.diagnose(), first.sample(200, seed=2)
    made.clear()
    edited = vi.fit(prior_model(Y, 0.1), {"y": Y}, **kw)
    edited.diagnose()
    draws = np.asarray(edited.sample(200, seed=2)["mu"])
    assert made == ["initial point"]
    for fit, scale in ((first, 10.0), (edited, 0.1)):
        prec = len(Y) + scale ** -2
        assert abs(float(fit.mean["mu"]) - Y.sum() / prec) < 0.5 * prec ** -0.5
        assert 0.8 < float(fit.std["mu"]) * prec ** 0.5 < 1.25
    assert abs(draws.mean() - Y.sum() / (len(Y) + 100)) < 0.5 / np.sqrt(len(Y) + 100)


def test_an_autoguide_object_fitted_again_on_new_data_warm_starts():
    """One AutoNormal object for two fits, the second on new data from the first (NumPyro's warm
    start). An autoguide keeps what its first call found on the object itself, so that first call
    must run on concrete values: set up inside a traced program, it kept tracers, and the second
    fit's setup died ("compiled for 9 inputs but called with 3")."""
    from numpyro.infer.autoguide import AutoNormal

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("rows", len(y)):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    guide = AutoNormal(model)
    kw = dict(guide=guide, optimizer="adam", learning_rate=0.05, progress=False, seed=2)
    first = vi.fit(model, {"y": Y}, steps=1500, **kw)
    y2 = Y[:20] + 1.0
    second = vi.fit(model, {"y": y2}, init=first, steps=1500, **kw)
    for fit, y in ((first, Y), (second, y2)):          # conjugate: N(sum y / (n + 1/100), 1 / (n + 1/100))
        n = len(y)
        assert abs(float(fit.mean["mu"]) - y.sum() / (n + 0.01)) < 0.5 / np.sqrt(n)   # half a posterior sd
    assert second.hist[0] < vi.fit(model, {"y": y2}, steps=1, **{**kw, "guide": AutoNormal(model)}).hist[0]
