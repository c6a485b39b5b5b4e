"""The quickstart's 40,000 x 100 Normal model: minibatches of 500 rows against the full batch.

Data as in the seed: ``U(0, 1) * randint(1, 10) + U(0, 10)`` per column. Model:
``mu ~ N(0, 1000)`` (the seed's flat prior, made proper) and ``sd ~ HalfNormal(1)`` per column, every entry ``~ Normal(mu, sd)``. With
40,000 rows the posterior is concentrated at the column means and standard deviations, which are
the known truth here. Claims checked: the minibatch fit recovers every column's mean to within
2% of its sd and every column's sd to within 2%, as the full-batch fit does, and a minibatch step is
faster than a full-batch step (ratio measured in this process).

    python examples/normal_minibatch.py [--quick] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import optax  # noqa: E402

import variational as vi  # noqa: E402
from _common import Report, budget, parse_args, plt  # noqa: E402


def normal_model(data):
    mu = vi.Normal("mu", 0.0, 1000.0, shape=(100,))   # the seed's Flat prior, made proper
    sd = vi.HalfNormal("sd", 1.0, shape=(100,))
    vi.Normal("likelihood", mu, sd, observed=data)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args("normal_minibatch", __doc__, argv)
    rep = Report("normal_minibatch", "Normal model, 100 columns, minibatch 500 against full batch", a.out, a.quick)
    rows, steps = (8_000, 3000) if a.quick else (40_000, 10_000)
    steps = budget(steps)
    rng = np.random.default_rng(0)
    data = rng.random((rows, 100)) * rng.integers(1, 10, size=100) + rng.random(100) * 10
    col_mean, col_sd = data.mean(0), data.std(0)
    opt = optax.adam(optax.cosine_decay_schedule(0.1, steps))
    common = dict(steps=steps, optimizer=opt, progress=False, seed=0, objective=vi.Objective(num_particles=4),
                  init=vi.Start(values={"mu": col_mean.mean() * np.ones(100), "sd": np.ones(100)}))
    mb = vi.fit(normal_model, {"data": data}, batch_size=500, **common)
    full = vi.fit(normal_model, {"data": data}, **common)
    fits = {"minibatch": mb, "full": full}
    rate = {k: f.timings["steps"] / f.timings["run_s"] for k, f in fits.items()}
    err = {k: (np.max(np.abs(f.mean["mu"] - col_mean) / col_sd), np.max(np.abs(f.mean["sd"] / col_sd - 1)))
           for k, f in fits.items()}

    rep.say(f"{rows:,} x 100 data, {steps} steps (minibatch: {mb.epochs:.1f} epochs).\n")
    rep.table(["fit", "max abs(mean(mu) - column mean) / column sd", "max abs(mean(sd) / column sd - 1)", "steps/s"],
              [[k, f"{err[k][0]:.4f}", f"{err[k][1]:.4f}", f"{rate[k]:,.0f}"] for k in fits])
    for k in fits:
        rep.check(f"{k}: every column's mean within 2% of its sd", err[k][0], err[k][0] < 0.02)
        rep.check(f"{k}: every column's sd within 2%", err[k][1], err[k][1] < 0.02)
    rep.check("minibatch steps/s / full-batch steps/s above 1 (same process, compilation excluded)",
              rate["minibatch"] / rate["full"], rate["minibatch"] > rate["full"])

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for i, (k, truth) in enumerate((("mu", col_mean), ("sd", col_sd))):
        ax[i].scatter(truth, mb.mean[k], s=10, label="minibatch 500")
        ax[i].scatter(truth, full.mean[k], s=30, facecolors="none", edgecolors="k", label="full batch")
        ax[i].set(xlabel=f"column {'mean' if k == 'mu' else 'sd'}", ylabel=f"posterior mean of {k}")
        ax[i].legend()
    rep.savefig(fig, "normal_columns.png")
    return rep.finish()


if __name__ == "__main__":
    main()
