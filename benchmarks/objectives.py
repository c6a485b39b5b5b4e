"""Numbers behind docs/objectives.md: estimator variance, bounds, kernels, VSBC cost.

1. ``meanfield_elbo`` against the Monte Carlo ELBO on a hierarchical model (Normal, LogNormal,
   HalfNormal and a Normal given the others' draws), q about as wide as the posterior: mean and
   variance of 4000 one-draw estimates of the value and of the gradient.
2. The Renyi bound at alpha = 0 (the importance-weighted bound) and the ELBO of a q twice as wide
   as the conjugate normal posterior, against the exact log evidence.
3. SVGD kernels on a correlated 2-D Gaussian (50 particles, 600 adam steps at 0.1): error of the
   particles' mean and the largest relative error of their covariance.
4. VSBC: the cost of one more simulation when the first fit's engine is restarted on each
   simulated dataset (what ``vi.vsbc`` does) against building a new fit per simulation (the
   ``guide=`` path): the difference of two runs with different ``n_sims`` divided by the
   difference, in one process; medians over ``--repeats``.

Run:

    python benchmarks/objectives.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

import variational as vi  # noqa: E402
from variational.families import mean_field  # noqa: E402
from variational.objectives import elbo, meanfield_elbo, renyi_bound  # noqa: E402
from variational.posterior.vsbc import calibrate  # noqa: E402


def variance() -> None:
    def hierarchical(y):
        mu = vi.Normal("mu", 0.0, 2.0)
        s = vi.LogNormal("s", 0.0, 0.5)
        tau = vi.HalfNormal("tau", 1.0)
        theta = vi.Normal("theta", mu, tau, shape=3)
        vi.Normal("y", theta, s, observed=y)

    y = np.array([0.5, -1.0, 2.0])
    ld, fam = vi.LogDensity(hierarchical, {"y": y}), mean_field()
    p = {"loc": jnp.array([0.3, 0.2, 0.1, 0.0, 0.4, -0.2]), "rho": jnp.full(6, -2.0)}
    keys = jax.random.split(jax.random.PRNGKey(4), 4000)
    print("| estimator | mean | variance of the value | total variance of the gradient |\n|---|---:|---:|---:|")
    for label, f in (("elbo (Monte Carlo)", lambda p, k: elbo(fam, ld.logp, p, k, {"y": y})),
                     ("meanfield_elbo", lambda p, k: meanfield_elbo(fam, ld, p, k, {"y": y}))):
        v, g = jax.vmap(jax.value_and_grad(f), (None, 0))(p, keys)
        gv = sum(float(np.asarray(a).var(0).sum()) for a in jax.tree_util.tree_leaves(g))
        print(f"| {label} | {float(np.mean(v)):.3f} | {float(np.var(v)):.3f} | {gv:.3f} |")


def bounds() -> None:
    y = np.random.default_rng(0).normal(1.0, 1.0, size=20)

    def conjugate(y):
        vi.Normal("y", vi.Normal("mu", 0.0, 10.0), 1.0, observed=y)

    prec = len(y) + 0.01
    cov = np.eye(len(y)) + 100.0
    evidence = -0.5 * (len(y) * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + y @ np.linalg.solve(cov, y))
    ld, fam = vi.LogDensity(conjugate, {"y": y}), mean_field()
    wide = {"loc": jnp.array([y.sum() / prec]), "rho": jnp.array([np.log(np.expm1(2 * prec**-0.5))])}
    key = jax.random.PRNGKey(0)
    print(f"\nlog evidence {evidence:.4f}")
    print("| draws K | ELBO gap | Renyi alpha=0 gap | Renyi alpha=0.5 gap |\n|---:|---:|---:|---:|")
    for k in (1, 8, 64, 1024):
        e = float(jnp.mean(jax.vmap(lambda kk: elbo(fam, ld.logp, wide, kk, {"y": y}, k))(jax.random.split(key, 2000))))
        r0 = float(jnp.mean(jax.vmap(lambda kk: renyi_bound(fam, ld.logp, wide, kk, {"y": y}, k, 0.0))(jax.random.split(key, 2000))))
        r5 = float(jnp.mean(jax.vmap(lambda kk: renyi_bound(fam, ld.logp, wide, kk, {"y": y}, k, 0.5))(jax.random.split(key, 2000))))
        print(f"| {k} | {evidence - e:.4f} | {evidence - r0:.4f} | {evidence - r5:.4f} |")


def kernels() -> None:
    mu, cov = jnp.array([1.0, -2.0]), jnp.array([[1.0, 0.8], [0.8, 2.0]])

    def gaussian():
        vi.Site("x", dist.MultivariateNormal(mu, cov))

    print("\n| kernel | max abs error of the mean | max relative error of the covariance |\n|---|---:|---:|")
    for k in ("rbf", "imq", "linear", "random_features"):
        x = np.asarray(vi.fit(gaussian, method="svgd", kernel=k, n_particles=50, steps=600,
                              learning_rate=0.1, progress=False).params["particles"])
        print(f"| {k} | {np.abs(x.mean(0) - mu).max():.4f} | "
              f"{np.abs(np.cov(x.T, ddof=0) / cov - 1).max():.3f} |")


def vsbc_cost(repeats: int) -> None:
    def model(y=None):
        mu = vi.Normal("mu", 0.0, 1.0)
        vi.Normal("y", mu, 1.0, shape=5, observed=y)

    def build(cols):
        return vi.fit(model, cols, steps=0, progress=False, learning_rate=0.05)

    def seconds(n: int, rebuild: bool) -> float:
        t0 = time.perf_counter()
        calibrate(build, model, n_sims=n, steps=500, rebuild=rebuild)
        return time.perf_counter() - t0

    calibrate(build, model, n_sims=2, steps=500)            # warm the library's first calls
    out = {}
    for label, rebuild, (lo, hi) in (("restart", False, (5, 45)), ("rebuild", True, (3, 8))):
        per, fixed = [], []
        for _ in range(repeats):
            a, b = seconds(lo, rebuild), seconds(hi, rebuild)
            per.append((b - a) / (hi - lo))
            fixed.append(a - lo * per[-1])
        out[label] = statistics.median(per), statistics.median(fixed)
    (r, rf), (b, _) = out["restart"], out["rebuild"]
    print(f"\nVSBC, 500 steps per fit: {r * 1e3:.0f} ms per extra simulation restarting one engine "
          f"(fixed cost {rf:.1f} s: simulation and one compilation), {b * 1e3:.0f} ms per extra "
          f"simulation building a fit each time (ratio {b / r:.0f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    variance()
    bounds()
    kernels()
    vsbc_cost(args.repeats)


if __name__ == "__main__":
    main()
