"""SVGD steps per second with 1000 particles on the seed's 1-D NormalMixture.

Measures ``variational``'s SVGD and, when PyMC is importable, PyMC's SVGD on the same model, in
the same process, with the seed's settings (1000 particles, SGD with learning rate 0.01, 300
steps). For each library it reports the median over ``--repeats`` runs of

- the wall time of a whole 300-step fit (compilation included, as the seed's "300 steps in 52 s");
- the steady-state step rate, from the difference between a 2x and a 1x fit
  (``steps / (t(2 steps) - t(steps))``), which cancels compilation and set-up;

and the ratio of the two libraries' numbers. PyMC must not be installed into the project's own
environment; use a separate one::

    python3 -m venv /work/benchvenv && /work/benchvenv/bin/pip install -e . pymc
    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false PYTHONPATH=src \\
        /work/benchvenv/bin/python benchmarks/svgd_steps.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

W, MU, SD = [0.2, 0.8], [-0.3, 0.5], [0.1, 0.1]


def time_variational(particles: int, steps: int) -> Callable[[int], float]:
    import jax.numpy as jnp

    import variational as vi

    def model():
        vi.NormalMixture("x", jnp.array(W), jnp.array(MU), jnp.array(SD))

    def run(n: int) -> float:
        t0 = time.perf_counter()
        fit = vi.fit(model, method="svgd", n_particles=particles, steps=n, optimizer="sgd",
                     learning_rate=0.01, progress=False)
        fit.params["particles"].block_until_ready()
        return time.perf_counter() - t0

    return run


def time_pymc(particles: int, steps: int) -> Callable[[int], float] | None:
    try:
        import numpy as np
        import pymc as pm
    except ImportError:
        return None

    def run(n: int) -> float:
        t0 = time.perf_counter()
        with pm.Model():
            pm.NormalMixture("x", w=np.array(W), mu=np.array(MU), sigma=np.array(SD))
            pm.fit(n, method="svgd", inf_kwargs={"n_particles": particles},
                   obj_optimizer=pm.sgd(learning_rate=0.01), progressbar=False)
        return time.perf_counter() - t0

    return run


def measure(run: Callable[[int], float], steps: int, repeats: int) -> dict[str, float]:
    whole, rates = [], []
    for _ in range(repeats):
        t1 = run(steps)
        t2 = run(2 * steps)
        whole.append(t1)
        rates.append(steps / max(t2 - t1, 1e-9))
    return {"fit_s": statistics.median(whole), "steps_per_s": statistics.median(rates)}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    results = {"variational": measure(time_variational(args.particles, args.steps), args.steps, args.repeats)}
    pymc_run = time_pymc(args.particles, args.steps)
    if pymc_run is not None:
        results["pymc"] = measure(pymc_run, args.steps, args.repeats)
    print(f"SVGD, {args.particles} particles, {args.steps}-step fits, median of {args.repeats} runs")
    for name, r in results.items():
        print(f"  {name:12s} whole fit {r['fit_s']:7.2f} s   steady state {r['steps_per_s']:8.1f} steps/s")
    if "pymc" in results:
        v, p = results["variational"], results["pymc"]
        print(f"  ratio variational/pymc: whole fit {p['fit_s'] / v['fit_s']:.1f}x faster, "
              f"steady state {v['steps_per_s'] / p['steps_per_s']:.1f}x the steps/s")
    else:
        print("  (PyMC not importable here: no reference run)")
    return results


if __name__ == "__main__":
    main()
