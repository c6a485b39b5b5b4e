"""``variational demo``: the seed's hierarchical radon regression, fitted with minibatch ADVI.

By default on radon-like data that the library generates (85 counties, 919 homes, known true
parameters), or on the radon survey CSV given with ``--data``. Each step reads a minibatch of
100 homes (``--batch-size``; 0 for all rows), as in the seed; the likelihood is scaled by N/B
automatically. Prints a summary table and the
recovered-versus-true parameters, and writes the ELBO history as a PNG. Ends with the fit's
diagnosis and the comparison with NUTS started from the ADVI solution (the seed's
``pm.NUTS(scaling=means)``): a table and a figure of the marginals overlaid.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import numpy as np

HYPER = ["mu_alpha", "sigma_alpha", "mu_beta", "sigma_beta", "eps"]


def run(data_path: str | None = None, out: str | Path = "out/demo", steps: int = 20_000,
        seed: int = 0, progress: bool = True, batch_size: int | None = 100,
        nuts_draws: int = 500, nuts_tune: int = 500) -> dict:
    """Run the demo; returns a dict with the fit and the recovery table (used by tests).

    Examples
    --------
    >>> res = run(steps=2000, progress=False, out="/tmp/vi-demo")   # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import variational as vi
    from variational.data.datasets import load_radon, make_radon, radon_model

    d = load_radon(data_path) if data_path else make_radon(seed=seed)
    source = str(data_path) if data_path else "generated radon-like data (known truth)"
    print(f"data: {source}: {len(d)} homes in {d.n_counties} counties")
    t0 = time.perf_counter()
    fit = vi.fit(radon_model, d.columns, model_kwargs={"n_counties": d.n_counties},
                 method="advi", steps=steps, optimizer="adam", learning_rate=1e-2, seed=seed,
                 progress=progress, batch_size=batch_size or None)
    wall = time.perf_counter() - t0
    rate = fit.timings["steps"] / max(fit.timings["run_s"], 1e-9)
    print(f"\nADVI: minibatches of {batch_size or len(d)} homes, {fit.epochs:,.0f} epochs")
    print(f"ADVI: {fit.steps} steps in {wall:.1f}s (compile {fit.timings['compile_s']:.1f}s, "
          f"{rate:,.0f} steps/s), skipped steps: {fit.skipped_steps}")
    table = fit.summary()
    print("\nposterior summary (hyperparameters):")
    print(table.loc[HYPER].to_string(float_format=lambda x: f"{x: .3f}"))

    mean, sd = fit.mean, fit.std
    rows = []
    if d.truth:
        print("\nrecovered vs true:")
        print(f"  {'parameter':<12} {'true':>8} {'mean':>8} {'sd':>7} {'|z|':>6}")
        for k in HYPER:
            z = abs(float(mean[k]) - d.truth[k]) / float(sd[k])
            rows.append((k, d.truth[k], float(mean[k]), float(sd[k]), z))
            print(f"  {k:<12} {d.truth[k]:8.3f} {float(mean[k]):8.3f} {float(sd[k]):7.3f} {z:6.2f}")
        for k in ("alpha", "beta"):
            r = float(np.corrcoef(mean[k], d.truth[k])[0, 1])
            cover = float(np.mean(np.abs(mean[k] - d.truth[k]) <= 2 * sd[k]))
            print(f"  {k:<12} correlation(mean, truth) = {r:.2f}; truth within 2 sd for "
                  f"{cover:.0%} of counties")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    h = fit.hist
    ax.plot(h, lw=0.5, alpha=0.4, label="loss (-ELBO) per step")
    w = max(1, len(h) // 100)
    ax.plot(np.arange(w - 1, len(h)), np.convolve(h, np.ones(w) / w, mode="valid"), lw=1.5,
            label=f"running mean ({w} steps)")
    ax.set_yscale("symlog")
    ax.set_xlabel("step")
    ax.set_ylabel("-ELBO")
    ax.set_title(f"minibatch ADVI (batch {batch_size or len(d)}) on the hierarchical radon regression")
    ax.legend()
    fig.tight_layout()
    png = out / "elbo_history.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    print(f"\nwrote {png}")
    result = {"fit": fit, "data": d, "recovery": rows, "png": png}
    if nuts_draws > 0:
        result.update(_compare_with_nuts(fit, d, out, nuts_draws, nuts_tune, seed))
    return result


def _compare_with_nuts(fit, d, out: Path, draws: int, tune: int, seed: int) -> dict:
    """Diagnosis, NUTS from the ADVI solution, the comparison table and the overlay figure."""
    import variational as vi
    from variational.data.datasets import radon_model

    print(f"\ndiagnosis: {fit.diagnose()}")
    t0 = time.perf_counter()
    idata = vi.nuts(radon_model, init=fit, draws=draws, tune=tune, chains=2, seed=seed,
                    coords={"county": d.county_names}, dims={"alpha": ["county"], "beta": ["county"]})
    divergences = int(idata.sample_stats["diverging"].sum())
    print(f"\nNUTS from the ADVI solution: 2 chains x {draws} draws after {tune} warm-up steps in "
          f"{time.perf_counter() - t0:.1f}s, {divergences} divergences")
    cmp = vi.compare(fit, idata, labels=("ADVI", "NUTS"))
    cols = ["mean", "ref_mean", "sd", "ref_sd", "mean_diff_sd", "sd_ratio", "wasserstein"]
    print("\nADVI versus NUTS (difference of means in NUTS sds, ratio of sds, Wasserstein-1):")
    print(cmp.table.loc[HYPER, cols].to_string(float_format=lambda x: f"{x: .3f}"))
    for k in ("alpha", "beta"):
        rows = cmp.table.loc[[i for i in cmp.table.index if i.startswith(k + "[")]]
        print(f"  {k}: median |mean diff| {rows['mean_diff_sd'].abs().median():.2f} sd, "
              f"median sd ratio {rows['sd_ratio'].median():.2f} over {len(rows)} counties")
    fig = cmp.plot(var_names=HYPER + ["alpha", "beta"], max_elements=6)
    png = out / "advi_vs_nuts.png"
    fig.savefig(png, dpi=100)
    print(f"\nwrote {png}")
    return {"nuts": idata, "comparison": cmp, "overlay_png": png}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry of the demo."""
    p = argparse.ArgumentParser(prog="variational demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="radon survey CSV (columns county, floor, log_radon); default: generated data")
    p.add_argument("--out", default="out/demo", help="output folder for figures (default out/demo)")
    p.add_argument("--steps", type=int, default=20_000, help="optimisation steps (default 20000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=100, help="homes per step (default 100; 0: all rows)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--nuts-draws", type=int, default=500,
                   help="NUTS draws per chain for the comparison (default 500; 0 skips it)")
    p.add_argument("--nuts-tune", type=int, default=500, help="NUTS warm-up steps (default 500)")
    a = p.parse_args(argv)
    run(a.data, a.out, a.steps, a.seed, progress=not a.no_progress, batch_size=a.batch_size,
        nuts_draws=a.nuts_draws, nuts_tune=a.nuts_tune)
    return 0
