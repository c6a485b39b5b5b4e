"""Long latent series: a random walk observed with noise, exact posterior from a Kalman smoother.

    x ~ GaussianRandomWalk(0.3, T),  y_t ~ N(x_t, 0.5)

For each length T, each runner fits in a fresh child process (so wall time includes tracing and
compilation, and the peak resident memory is the runner's own) and reports the largest error of
a posterior mean in posterior sds and the range of sd ratios q / exact over the T states:

* ``default``: ``vi.fit(model, data)`` (the family ``method="auto"`` chooses);
* ``autonormal``, ``lowrank``: NumPyro SVI with ``AutoNormal`` / ``AutoLowRankMultivariateNormal``,
  Adam(0.01), ``--svi-steps`` steps, moments from 4000 draws of the guide;
* ``nuts``: NumPyro NUTS, one chain, ``--nuts`` warm-up and ``--nuts`` kept draws.

    python benchmarks/long_series.py [--lengths 100 1000 10000] [--runners default autonormal lowrank nuts]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _kalman import random_walk_data, smoother  # noqa: E402

STEP_SD, NOISE_SD = 0.3, 0.5
RUNNERS = ("default", "autonormal", "lowrank", "nuts")


def model(y):
    import numpyro
    import numpyro.distributions as dist

    x = numpyro.sample("x", dist.GaussianRandomWalk(STEP_SD, num_steps=len(y)))
    numpyro.sample("y", dist.Normal(x, NOISE_SD), obs=y)


def _svi(guide_cls, y, steps: int) -> tuple[np.ndarray, dict]:
    import jax
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO

    guide = guide_cls(model)
    svi = SVI(model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
    res = svi.run(jax.random.PRNGKey(0), steps, y, progress_bar=False)
    draws = guide.sample_posterior(jax.random.PRNGKey(1), res.params, sample_shape=(4000,))
    return np.asarray(draws["x"]), {"steps": steps}


def run_one(runner: str, t: int, svi_steps: int, nuts: int) -> dict:
    y = random_walk_data(t, STEP_SD, NOISE_SD, seed=0)
    started = time.perf_counter()
    if runner == "default":
        import variational as vi

        fit = vi.fit(model, {"y": y}, progress=False)
        mean, sd = np.asarray(fit.mean["x"]), np.asarray(fit.std["x"])
        info = {"method": fit.method, "steps": fit.steps}
    elif runner == "nuts":
        import jax
        from numpyro.infer import MCMC, NUTS

        mcmc = MCMC(NUTS(model), num_warmup=nuts, num_samples=nuts, num_chains=1, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(0), y)
        x = np.asarray(mcmc.get_samples()["x"])
        mean, sd, info = x.mean(0), x.std(0), {"draws": nuts}
    else:
        from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal

        x, info = _svi(AutoNormal if runner == "autonormal" else AutoLowRankMultivariateNormal, y, svi_steps)
        mean, sd = x.mean(0), x.std(0)
    wall = time.perf_counter() - started
    m, s = smoother(y, STEP_SD, NOISE_SD)
    ratio = sd / s
    return {"runner": runner, "T": t, "wall_s": round(wall, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "max_err_sd": round(float(np.max(np.abs(mean - m) / s)), 3),
            "sd_ratio_min": round(float(ratio.min()), 3), "sd_ratio_max": round(float(ratio.max()), 3), **info}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=RUNNERS)
    ap.add_argument("--svi-steps", type=int, default=20000)
    ap.add_argument("--nuts", type=int, default=500)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per child process")
    ap.add_argument("--one", nargs=2, metavar=("RUNNER", "T"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one[0], int(a.one[1]), a.svi_steps, a.nuts)))
        return
    print("| T | runner | wall s | peak RSS MB | max error (sd) | sd ratio min-max | notes |")
    print("|---|---|---|---|---|---|---|")
    for t in a.lengths:
        for r in a.runners:
            cmd = [sys.executable, __file__, "--one", r, str(t), "--svi-steps", str(a.svi_steps), "--nuts", str(a.nuts)]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
                res = json.loads(out.stdout.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                print(f"| {t} | {r} | > {a.timeout:.0f} | | | | did not finish |", flush=True)
                continue
            except (json.JSONDecodeError, IndexError):
                print(f"| {t} | {r} | | | | | failed: {out.stderr.strip().splitlines()[-1:]} |", flush=True)
                continue
            notes = ", ".join(f"{k} {res[k]}" for k in ("method", "steps", "draws") if k in res)
            print(f"| {t} | {r} | {res['wall_s']} | {res['peak_rss_mb']} | {res['max_err_sd']} | "
                  f"{res['sd_ratio_min']}-{res['sd_ratio_max']} | {notes} |", flush=True)


if __name__ == "__main__":
    main()
