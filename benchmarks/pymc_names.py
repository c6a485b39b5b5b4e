"""PyMC's optimiser names against PyMC itself, and PyMC's analytic-posterior ADVI example.

1. The same sequence of gradients is fed to PyMC's update functions (``pm.adagrad_window``,
   ``pm.nesterov_momentum``, ``pm.adadelta``, through pytensor shared variables) and to
   ``variational``'s optimisers of the same names; reported is the largest absolute difference
   of the parameter trajectories (float64 on both sides).
2. PyMC's ``test_fit_oo`` example (normal mean, known variance, 1000 points; ADVI with
   ``adagrad_window(learning_rate=0.02, n_win=50)``, 5000 steps) is fitted by ``pm.fit`` and
   by ``vi.fit`` in the same process: posterior mean and sd against the closed form, and wall
   times (medians over ``--repeats``; PyMC's includes its compilation, ours too).

Needs PyMC (the ``bench`` extra). Run:

    python benchmarks/pymc_names.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import variational as vi  # noqa: E402
from variational.engine.optim import OPTIMIZERS  # noqa: E402


def pymc_trajectory(name: str, grads: np.ndarray, **kw) -> np.ndarray:
    import pymc as pm
    import pytensor

    param = pytensor.shared(np.zeros(grads.shape[1]))
    g = pytensor.shared(np.zeros(grads.shape[1]))
    step = pytensor.function([], [], updates=getattr(pm, name)([g], [param], **kw))
    out = []
    for row in grads:
        g.set_value(row)
        step()
        out.append(param.get_value().copy())
    return np.array(out)


def our_trajectory(opt, grads: np.ndarray) -> np.ndarray:
    x = jnp.zeros(grads.shape[1], jnp.float64)
    state, out = opt.init(x), []
    update = jax.jit(opt.update)
    for row in grads:
        u, state = update(jnp.asarray(row), state, x)
        x = x + u
        out.append(np.asarray(x))
    return np.array(out)


def compare_updates() -> list[tuple[str, float]]:
    grads = np.random.default_rng(0).normal(size=(200, 5)) * np.logspace(-2, 2, 5)
    rows = []
    for name, kw, ours in [
        ("adagrad_window", dict(learning_rate=0.05, n_win=10, epsilon=0.1), vi.adagrad_window(0.05, 10, 0.1)),
        ("adagrad_window", dict(learning_rate=0.02, n_win=50, epsilon=0.1), vi.adagrad_window(0.02, 50, 0.1)),
        ("nesterov_momentum", dict(learning_rate=0.01, momentum=0.9), OPTIMIZERS["nesterov_momentum"](0.01)),
        ("adadelta", dict(learning_rate=1.0, rho=0.95, epsilon=1e-6), OPTIMIZERS["adadelta"](1.0)),
    ]:
        diff = np.abs(pymc_trajectory(name, grads, **kw) - our_trajectory(ours, grads)).max()
        rows.append((f"{name}({', '.join(f'{k}={v}' for k, v in kw.items())})", float(diff)))
    return rows


def analytic_example(repeats: int) -> dict:
    import pymc as pm

    rng = np.random.default_rng(42)
    n, s0, m0, s = 1000, 2.0, 4.0, 3.0
    data = s * rng.standard_normal(n) - 5.0
    d = n / s**2 + 1 / s0**2
    mu_post, sd_post = (n * data.mean() / s**2 + m0 / s0**2) / d, d**-0.5

    def ours() -> np.ndarray:
        def model(x):
            mu = vi.Normal("mu", m0, s0)
            vi.Normal("x", mu, s, observed=x)

        fit = vi.fit(model, {"x": data}, optimizer=vi.adagrad_window(0.02, n_win=50), steps=5000,
                     seed=42, progress=False)
        return fit.sample(10_000, seed=0)["mu"]

    def theirs() -> np.ndarray:
        with pm.Model():
            mu = pm.Normal("mu", m0, s0)
            pm.Normal("x", mu, s, observed=data, total_size=n)
            approx = pm.fit(5000, method="advi", obj_optimizer=pm.adagrad_window(learning_rate=0.02, n_win=50),
                            random_seed=42, progressbar=False)
        return np.asarray(approx.sample(10_000, random_seed=0).posterior["mu"]).ravel()

    times: dict[str, list[float]] = {"variational": [], "pymc": []}
    draws = {}
    for _ in range(repeats):
        for label, fn in (("variational", ours), ("pymc", theirs)):
            t0 = time.perf_counter()
            draws[label] = fn()
            times[label].append(time.perf_counter() - t0)
    return {"mu_post": mu_post, "sd_post": sd_post,
            **{label: (float(v.mean()), float(v.std()), statistics.median(times[label]))
               for label, v in draws.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print("| PyMC update | max abs difference of 200 steps |\n|---|---:|")
    for label, diff in compare_updates():
        print(f"| `{label}` | {diff:.1e} |")
    r = analytic_example(args.repeats)
    print(f"\nPyMC's analytic example: mu_post = {r['mu_post']:.4f}, sd = {r['sd_post']:.4f}\n")
    print("| library | mean | sd | wall s (median) |\n|---|---:|---:|---:|")
    for label in ("variational", "pymc"):
        m, sd, t = r[label]
        print(f"| {label} | {m:.4f} | {sd:.4f} | {t:.2f} |")
    print(f"\nwall time pymc / variational: {r['pymc'][2] / r['variational'][2]:.1f}")


if __name__ == "__main__":
    main()
