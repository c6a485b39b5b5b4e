"""Minibatch ADVI on the hierarchical radon regression, then NUTS started from the ADVI solution.

County intercepts and floor slopes (85 counties, 919 homes of the Minnesota radon survey when
``radon.csv`` is found in a ``shared/data`` folder, else radon-like data with known truth).
Minibatch ADVI as the seed: batch 100, 40,000 steps, adam from 1e-2 (cosine decay to 1e-4, so
that the last iterate does not jitter with the minibatch noise), 4 draws per step; its ELBO trace; a full-batch
ADVI fit for comparison; then NUTS started from the ADVI means, and per parameter the ADVI
normal densities overlaid on the NUTS histograms.

Claims checked: minibatch and full-batch ADVI agree within 0.2 posterior sds on the five
hyperparameters; ADVI's means of mu_alpha, mu_beta and eps are within 0.5 NUTS sds of NUTS's,
and its county intercepts correlate with NUTS's above 0.95.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import optax  # noqa: E402
from scipy import stats  # noqa: E402

import variational as vi  # noqa: E402
from _common import Report, budget, nuts, parse_args, plt, shared_data, z_diff  # noqa: E402
from variational.data.datasets import load_radon, make_radon, radon_model  # noqa: E402

HYPER = ["mu_alpha", "sigma_alpha", "mu_beta", "sigma_beta", "eps"]


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args("radon", __doc__, argv)
    q = a.quick
    rep = Report("radon", "Minibatch ADVI on the hierarchical radon regression, then NUTS", a.out, q)
    path = shared_data("radon.csv")
    d = load_radon(path) if path else make_radon(seed=0)
    mk = {"n_counties": d.n_counties}
    rep.say(f"data: {path or 'generated radon-like data'}: {len(d)} homes in {d.n_counties} counties\n")

    steps = budget(40_000)
    # adam 1e-2 as the seed, decayed to 1e-4 over the run: with a constant step size the last
    # iterate of a minibatch fit jitters by about half a posterior sd (see docs/examples.md)
    adam = optax.adam(optax.cosine_decay_schedule(1e-2, steps, alpha=0.01))
    # 4 draws per step: with one, the noisy gradient of sigma_beta (a funnel) leaves the minibatch
    # and full-batch fits 2 sds apart on it after 40,000 steps
    mb = vi.fit(radon_model, d.columns, model_kwargs=mk, batch_size=100, steps=steps, optimizer=adam,
                objective=vi.Objective(num_particles=4), seed=0, progress=False)
    fb = vi.fit(radon_model, d.columns, model_kwargs=mk, steps=steps, optimizer=adam,
                objective=vi.Objective(num_particles=4), seed=0, progress=False)
    rate = mb.timings["steps"] / mb.timings["run_s"]
    rep.say(f"minibatch ADVI (batch 100, adam 1e-2 with cosine decay to 1e-4): {mb.steps:,} steps ({mb.epochs:.0f} epochs), "
            f"{rate:,.0f} steps/s after compilation ({mb.timings['compile_s']:.1f} s); "
            f"skipped steps {mb.skipped_steps}\n")
    dmb, dfb = mb.sample(4000, seed=1), fb.sample(4000, seed=1)
    t0 = time.perf_counter()
    start = {k: np.asarray(v) for k, v in mb.mean.items() if k in mb.logdensity.names}
    ref = nuts(radon_model, seed=1, warmup=300 if q else 1000, samples=1000 if q else 10_000,
               init_values=start, **d.columns, **mk)
    t_nuts = time.perf_counter() - t0
    rep.say(f"NUTS from the ADVI means: {len(ref['eps'])} draws in {t_nuts:.1f} s\n")

    rows = []
    for k in HYPER:
        z_mf = float(z_diff(dmb[k], (dfb[k].mean(0), dfb[k].std(0))))
        z_n = float(z_diff(dmb[k], ref[k]))
        rows.append((k, float(dmb[k].mean()), float(dmb[k].std()), float(dfb[k].mean()), float(dfb[k].std()),
                     float(ref[k].mean()), float(ref[k].std()), z_mf, z_n))
    rep.table(["parameter", "minibatch mean", "sd", "full-batch mean", "sd", "NUTS mean", "sd",
               "|mb - fb|/sd", "|mb - NUTS|/sd"], rows)
    worst = max(r[7] for r in rows)
    rep.check("minibatch and full-batch ADVI agree within 0.2 posterior sds on the hyperparameters (max)",
              worst, worst < 0.2)
    for k in ("mu_alpha", "mu_beta", "eps"):
        z = float(z_diff(dmb[k], ref[k]))
        rep.check(f"ADVI mean of {k} within 0.5 NUTS sds of NUTS", z, z < 0.5)
    r_alpha = float(np.corrcoef(dmb["alpha"].mean(0), ref["alpha"].mean(0))[0, 1])
    rep.check("county intercepts: correlation of ADVI and NUTS means > 0.95", r_alpha, r_alpha > 0.95)
    rep.say("mean-field ADVI is known to shrink the group-level sds (sigma_alpha, sigma_beta) of a "
            "hierarchical model; compare their rows above.\n")

    fig, ax = plt.subplots(figsize=(8, 3.5))
    h = -mb.hist
    ax.plot(h, lw=0.3, alpha=0.5, label="ELBO per step (minibatch estimate)")
    w = min(500, len(h))   # (--smoke runs fewer steps than the window)
    ax.plot(np.arange(w - 1, len(h)), np.convolve(h, np.ones(w) / w, "valid"), lw=1.5, label=f"running mean ({w})")
    ax.set(ylim=(-5000, 0), xlabel="step", ylabel="ELBO")
    ax.legend()
    rep.savefig(fig, "elbo_trace.png")

    mean, sd = mb.unconstrained_mean, mb.unconstrained_std
    fig, axs = plt.subplots(len(HYPER) + 2, 1, figsize=(10, 16))
    for ax, k in zip(axs, HYPER + ["alpha", "beta"]):
        draws = dmb[k].reshape(len(dmb[k]), -1)
        nd = np.asarray(ref[k]).reshape(len(ref[k]), -1)
        for j in range(min(draws.shape[1], 12)):
            x = np.linspace(draws[:, j].mean() - 4 * draws[:, j].std(), draws[:, j].mean() + 4 * draws[:, j].std(), 300)
            kde = stats.gaussian_kde(draws[:, j])
            ax.plot(x, kde(x), lw=1)
            ax.hist(nd[:, j], bins=50, density=True, alpha=0.3)
        ax.set_title(k + (" (first 12 counties)" if draws.shape[1] > 1 else ""))
    rep.savefig(fig, "advi_vs_nuts.png")
    rep.say(f"unconstrained mean/sd of q for the hyperparameters: "
            + ", ".join(f"{k} {float(mean[k]):.3f}/{float(sd[k]):.3f}" for k in HYPER) + "\n")
    return rep.finish()


if __name__ == "__main__":
    main()
