"""Steps/s against batch size, on one device and split across several.

Each device count runs in its own subprocess (JAX fixes the host device count at import:
``XLA_FLAGS=--xla_force_host_platform_device_count=K``). The workload is a logistic regression
with 20 features on N generated rows held in memory; each configuration is timed over several
fits, steady state (compilation excluded), median reported. On a GPU machine run with
``--backend gpu`` to use the real devices instead of forced host devices.

    python benchmarks/devices_scaling.py [--rows 1000000] [--devices 1 4] [--batches 100 1000 10000 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def worker(rows: int, batches: list[int], repeats: int, steps: int, all_devices: bool) -> None:
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

    out = {"devices": jax.device_count(), "backend": jax.default_backend(), "rates": {}}
    for b in batches:
        rates = []
        for r in range(repeats):
            fit = vi.fit(model, {"x": x, "y": y}, batch_size=b, steps=steps, progress=False, seed=r,
                         devices="all" if all_devices else None)
            rates.append(fit.timings["steps"] / fit.timings["run_s"])
        out["rates"][b] = statistics.median(rates)
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--batches", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2_000)
    ap.add_argument("--backend", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--all", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.rows, a.batches, a.repeats, a.steps, a.all)
        return
    results = []
    for k in a.devices:
        env = dict(os.environ)
        if a.backend == "cpu":
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={k}"
            env["JAX_PLATFORMS"] = "cpu"
        cmd = [sys.executable, __file__, "--worker", "--rows", str(a.rows), "--repeats", str(a.repeats),
               "--steps", str(a.steps), "--batches", *map(str, a.batches)]
        if k > 1:
            cmd.append("--all")
        if a.backend == "gpu" and k > 1:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(k)))
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode:
            sys.exit(r.stderr[-3000:])
        results.append(json.loads(r.stdout.strip().splitlines()[-1]))
    base = results[0]["rates"]
    print(f"logistic regression, 20 features, {a.rows:,} rows in memory; steps/s (median of {a.repeats})")
    print("| batch size | " + " | ".join(f"{r['devices']} {r['backend']} device(s)" for r in results) + " | ratio |")
    print("|---:|" + "---:|" * (len(results) + 1))
    for b in map(str, a.batches):
        cells = " | ".join(f"{r['rates'][b]:,.0f}" for r in results)
        print(f"| {int(b):,} | {cells} | {results[-1]['rates'][b] / base[b]:.2f} |")


if __name__ == "__main__":
    main()
