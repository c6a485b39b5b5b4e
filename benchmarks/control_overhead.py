"""Overhead of fit control on the radon model: progress bar + one convergence callback every
100 steps, against the bare compiled loop, in one process.

    PYTHONPATH=src python benchmarks/control_overhead.py [--steps 5000] [--reps 7]

Every configuration runs the same number of steps from the same starting state, after a
warm-up that compiles the loop; the configurations are interleaved, and the report gives, for
wall-clock time and for the process's CPU time (less sensitive to other processes on a shared
machine), the median time of each and the median of the per-round ratios to the bare loop.
The progress bar is drawn (to stderr) as a user would see it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import variational as vi  # noqa: E402
from variational.callbacks import CheckParametersConvergence, ELBOConvergence  # noqa: E402
from variational.data.datasets import make_radon, radon_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--per-step-steps", type=int, default=500,
                    help="steps of the (slow) every-step plain-function configuration")
    args = ap.parse_args()

    d = make_radon(seed=0)
    fit = vi.fit(radon_model, d.columns, model_kwargs={"n_counties": d.n_counties}, steps=0,
                 progress=False)
    start = fit.state

    def run(steps: int, callbacks: list, progress: bool) -> tuple[float, float]:
        fit._set_state(start)
        fit._hist = []
        t0, c0 = time.perf_counter(), time.process_time()
        fit._run(steps, callbacks=callbacks, progress=progress)
        elapsed = time.perf_counter() - t0, time.process_time() - c0
        assert fit.steps == steps, (fit.steps, fit.message)
        return elapsed

    def never_stop() -> list:   # a tolerance no fit reaches: the callback runs and never stops
        return [CheckParametersConvergence(every=100, tolerance=1e-30)]

    def plain(fit, losses, i) -> None:  # a plain function: called after every step
        return None

    configs = {
        "bare compiled loop": lambda: run(args.steps, [], False),
        "progress bar": lambda: run(args.steps, [], True),
        "progress + CheckParametersConvergence(every=100)": lambda: run(args.steps, never_stop(), True),
        "progress + ELBOConvergence(every=100)":
            lambda: run(args.steps, [ELBOConvergence(tolerance=1e-30)], True),
    }
    for f in configs.values():   # warm-up: compile, first bar
        f()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in configs}
    for _ in range(args.reps):
        for name, f in configs.items():
            times[name].append(f())
    base = times["bare compiled loop"]
    print(f"radon model (D={fit.logdensity.dim}), {args.steps} steps, {args.reps} interleaved rounds: "
          f"median seconds, median overhead against the bare loop")
    print(f"  {'':50s} {'wall':>8s}   {'':>7s}   {'cpu':>8s}")
    for name, ts in times.items():
        cols = []
        for k in (0, 1):
            ratios = [t[k] / b[k] for t, b in zip(ts, base)]
            cols.append(f"{statistics.median(t[k] for t in ts):8.3f} s {100 * (statistics.median(ratios) - 1):+6.1f} %")
        print(f"  {name:50s} {'   '.join(cols)}")

    n = args.per_step_steps
    bare_small = [run(n, [], False)[0] for _ in range(3)]
    every_step = [run(n, [plain], False)[0] for _ in range(3)]
    print(f"  a plain function called every step ({n} steps): "
          f"{statistics.median(every_step) / statistics.median(bare_small):.1f}x the bare loop's wall time")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
