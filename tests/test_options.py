"""vi.fit's settings as values: at most 14 keywords, option objects, and the moved keywords.

Every keyword that moved into an option object still works for one release: it warns with a
``FutureWarning`` that names its new home, at the line of the call, and gives the same numbers
as the new form with the same seed.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import variational as vi

Y = np.random.default_rng(3).normal(1.0, 1.0, size=20)


def model(y):
    mu = vi.Normal("mu", 0, 10)
    vi.Normal("y", mu, 1.0, observed=y)


def guide(y):
    loc = numpyro.param("loc", 0.0)
    numpyro.sample("mu", dist.Normal(loc, 1.0))


def _fit(**kw):
    base = dict(steps=kw.pop("steps", 40), learning_rate=kw.pop("learning_rate", 0.05), progress=False, seed=1)
    return vi.fit(model, {"y": Y}, **{**base, **kw})


# moved keyword, its value, the new form, other keywords of both calls
CASES = [
    ("num_particles", 3, dict(objective=vi.Objective(num_particles=3)), {}),
    ("stl", True, dict(objective=vi.Objective(stl=True)), {}),
    ("alpha", 0.5, dict(objective=vi.Objective("renyi", num_particles=2, alpha=0.5)),
     dict(objective="renyi", num_particles=2)),
    ("kl_weight", 0.5, dict(objective=vi.Objective(kl_weight=0.5)), {}),
    ("score_function", True, dict(objective=vi.Objective(score_function=True), guide=guide), dict(guide=guide)),
    ("schedule", "adaptive", dict(learning_rate=vi.StepSize(0.05, schedule="adaptive")), {}),
    ("replace", True, dict(batch_size=vi.Batches(5, replace=True)), dict(batch_size=5)),
    ("devices", "all", dict(batch_size=vi.Batches(4, devices="all")), dict(batch_size=4)),
    ("max_steps", 30, dict(stop=vi.Stop(max_steps=30)), dict(steps=None)),
    ("max_seconds", 1e6, dict(stop=vi.Stop(max_steps=30, max_seconds=1e6)), dict(steps=None, max_steps=30)),
    ("start", {"mu": 2.0}, dict(init=vi.Start(values={"mu": 2.0})), {}),
    ("init_params", {"loc": np.array([2.0])}, dict(init=vi.Start(params={"loc": np.array([2.0])})),
     dict(method="advi")),
]


def _without_warnings(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        return _fit(**kw)


@pytest.mark.parametrize("name, value, new, common", CASES, ids=[c[0] for c in CASES])
def test_a_moved_keyword_warns_where_it_went_and_gives_the_same_numbers(name, value, new, common):
    home = vi.api._options.MOVED[name]
    with pytest.warns(FutureWarning) as record:
        old = _fit(**common, **{name: value})
    mine = [w for w in record if f"vi.fit({name}=...)" in str(w.message)]
    assert mine, [str(w.message) for w in record]
    assert f"{home[0]}=vi.{home[1].__name__}({home[2]}=...)" in str(mine[0].message)
    assert mine[0].filename == __file__    # the warning points at the user's line
    new_kw = {k: v for k, v in common.items() if k not in ("objective", "batch_size", "max_steps", "num_particles")}
    fresh = _without_warnings(**{**new_kw, **new})
    np.testing.assert_array_equal(old.hist, fresh.hist)
    assert old.steps == fresh.steps
    for k in ("num_particles", "stl", "alpha", "kl_weight", "schedule", "replace", "score_function"):
        assert old.settings.get(k) == fresh.settings.get(k), k


def test_checkpoint_keywords_moved_into_checkpoint(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    with pytest.warns(FutureWarning, match=r"checkpoint=vi\.Checkpoint\(every=\.\.\.\)"):
        old = _fit(checkpoint=a, checkpoint_every=10)
    new = _without_warnings(checkpoint=vi.Checkpoint(b, every=10))
    np.testing.assert_array_equal(old.hist, new.hist)
    with pytest.warns(FutureWarning, match=r"checkpoint=vi\.Checkpoint\(resume=\.\.\.\)"):
        resumed_old = _fit(checkpoint=a, resume=True, steps=60)
    resumed_new = _without_warnings(checkpoint=vi.Checkpoint(b, resume=True), steps=60)
    assert resumed_old.steps == resumed_new.steps == 60
    np.testing.assert_array_equal(resumed_old.hist, resumed_new.hist)
    np.testing.assert_array_equal(resumed_new.hist[:40], new.hist)   # it continued the saved run


def test_fit_takes_at_most_14_keywords_and_the_objects_are_exported():
    params = inspect.signature(vi.fit).parameters
    keywords = [p for p in params.values() if p.kind == p.KEYWORD_ONLY]
    assert len(keywords) <= 14, [p.name for p in keywords]
    for cls in (vi.Objective, vi.StepSize, vi.Batches, vi.Stop, vi.Checkpoint, vi.Start):
        assert cls.__module__ == "variational.engine.options" and cls.__doc__


def test_option_values_are_hashable_and_equal_by_value():
    assert hash(vi.Objective(num_particles=4)) == hash(vi.Objective("elbo", 4))
    assert vi.Batches(8, devices=["d0", "d1"]) == vi.Batches(8, devices=("d0", "d1"))
    assert len({vi.Stop(1e3), vi.Stop(1000), vi.StepSize(0.1), vi.Checkpoint("f.npz", every=5)}) == 3
    start = vi.Start(values={"mu": np.zeros(2)})
    assert hash(start) == hash(start)    # by identity: it holds arrays
    with pytest.raises(ValueError, match=r"num_particles=0 must be a whole number >= 1"):
        vi.Objective(num_particles=0)
    with pytest.raises(ValueError, match=r"schedule='fast'"):
        vi.StepSize(0.1, schedule="fast")


def test_unknown_keywords_are_named_with_the_nearest_ignoring_case():
    with pytest.raises(TypeError, match=r"'Steps' \(did you mean 'steps'\?\)"):
        vi.fit(model, {"y": Y}, Steps=10, progress=False)
    with pytest.raises(TypeError, match=r"did you mean 'num_particles'\? it moved to objective=vi\.Objective"):
        vi.fit(model, {"y": Y}, num_particle=2, progress=False)


def test_a_setting_given_twice_is_refused():
    with pytest.raises(TypeError, match=r"num_particles= and objective="):
        vi.fit(model, {"y": Y}, objective=vi.Objective(num_particles=2), num_particles=3, progress=False)
    with pytest.raises(TypeError, match=r"stop=100: give vi\.Stop"):
        vi.fit(model, {"y": Y}, stop=100, progress=False)
