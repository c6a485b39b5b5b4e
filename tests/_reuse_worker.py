"""Subprocess worker for tests/test_compilation.py: fits that share compiled programs.

``python _reuse_worker.py OUT METHODS DEVICES STEPS [edited]``: fits every method of the comma-separated
``METHODS``, in that order, each on a model with data and on one without; with ``DEVICES=4``
(four forced host devices) each fit of a stepped method runs on one device and then on all four. ``STEPS`` is a
number of steps (at a learning rate of 0.01; ``Nauto``: N steps after the step-size search),
or ``default`` (every default). ``edited``: the models as a user edits them (other numbers in
their priors; the programs are the same, their numbers an argument). Writes ``{"method/model[/4]": [the posterior means]}`` as JSON, and
the XLA compilations of each fit to ``OUT.counts``. The compile cache is the one ``VARIATIONAL_COMPILE_CACHE`` names.
"""

import json
import os
import sys

OUT, METHODS, DEVICES, STEPS = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
EDITED = sys.argv[5:] == ["edited"]
if DEVICES > 1:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES}"

import jax  # noqa: E402
import numpy as np  # noqa: E402

import variational as vi  # noqa: E402
from variational.compilation import stats  # noqa: E402

Y = np.random.default_rng(3).normal(2.0, 1.0, size=48)
STEPPED = ("advi", "fullrank_advi", "lowrank_advi", "svgd")


def no_data():
    vi.HalfNormal("one", 3 if EDITED else 1, shape=(10, 2))
    vi.Normal("two", 0, 1, shape=(10,))
    vi.Normal("three", 0, 1, shape=(10, 1, 2))


def with_data(y):
    mu = vi.Normal("mu", 0.0, 0.5 if EDITED else 10.0)
    vi.Normal("y", mu, vi.HalfNormal("s", 0.7 if EDITED else 2.0), observed=y)


def means(method, model, data, **kw):
    if STEPS != "default" and method in STEPPED:
        kw.update(steps=int(STEPS.removesuffix("auto")))
        if not STEPS.endswith("auto"):
            kw.update(learning_rate=0.01)
    before = stats().compilations
    fit = vi.fit(model, data, method=method, progress=False, seed=7, **kw)
    means = [float(x) for name in sorted(fit.mean) for x in np.ravel(fit.mean[name])]
    compiled.append(stats().compilations - before)
    return means


out, compiled, counts = {}, [], {}
for method in METHODS:
    for name, model, data in (("data", with_data, {"y": Y}), ("none", no_data, None)):
        out[f"{method}/{name}"] = means(method, model, data)
        counts[f"{method}/{name}"] = compiled[-1]
        if DEVICES > 1 and method in STEPPED:   # (the direct methods take no devices=)
            out[f"{method}/{name}/{DEVICES}"] = means(method, model, data, devices=jax.devices())
with open(OUT, "w") as f:
    json.dump(out, f)
with open(OUT + ".counts", "w") as f:   # XLA compilations by fit (programs loaded from the cache are none)
    json.dump(counts, f)
