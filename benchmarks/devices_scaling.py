"""Steps/s against batch size, on one device and split across several, in one process.

The process starts with ``XLA_FLAGS=--xla_force_host_platform_device_count=K`` (K = the largest
device count asked for; JAX fixes it at import, so the script re-executes itself once with the
flag set) and, for each batch size, interleaves fits on 1 device (``devices=None``) and on the
first k devices (``devices=jax.devices()[:k]``). The workload is a logistic regression with 20
features on N generated rows held in memory; steady state (compilation excluded), median of the
repeats. On a GPU machine run with ``--backend gpu`` to use the real devices.

    python benchmarks/devices_scaling.py [--rows 1000000] [--devices 1 4] [--batches 100 1000 10000 100000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys


def run(rows: int, batches: list[int], repeats: int, steps: int, counts: list[int]) -> None:
    import jax
    import numpy as np

    import variational as vi

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 20)).astype(np.float32)
    w = rng.normal(size=20).astype(np.float32)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(x @ w)))).astype(np.float32)

    def model(x, y):
        coef = vi.Normal("w", 0, 1, shape=20)
        vi.Bernoulli("y", logit_p=x @ coef, observed=y)

    print(f"logistic regression, 20 features, {rows:,} rows in memory, backend "
          f"{jax.default_backend()}, {jax.device_count()} devices; steps/s, median of {repeats}")
    print("| batch size | " + " | ".join(f"{k} device(s)" for k in counts) + " | ratio |")
    print("|---:|" + "---:|" * (len(counts) + 1))
    for b in batches:
        rates: dict[int, list[float]] = {k: [] for k in counts}
        for r in range(repeats):
            for k in counts:
                devs = None if k == 1 else jax.devices()[:k]
                fit = vi.fit(model, {"x": x, "y": y}, batch_size=b, steps=steps, progress=False,
                             seed=r, devices=devs)
                rates[k].append(fit.timings["steps"] / fit.timings["run_s"])
        med = [statistics.median(rates[k]) for k in counts]
        print(f"| {b:,} | " + " | ".join(f"{m:,.0f}" for m in med) + f" | {med[-1] / med[0]:.2f} |",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--batches", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2_000)
    ap.add_argument("--backend", default="cpu", choices=["cpu", "gpu"])
    a = ap.parse_args()
    flag = f"--xla_force_host_platform_device_count={max(a.devices)}"
    if a.backend == "cpu" and flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    run(a.rows, a.batches, a.repeats, a.steps, sorted(set(a.devices)))


if __name__ == "__main__":
    main()
