"""Using the posterior on the hierarchical radon regression: three measurements, one process.

1. ``fit.sample_fn(fn, n)`` (vectorised and compiled) against calling ``fn`` on each draw in
   a Python loop (what one writes by hand with ``fit.sample``);
2. ``fit.predict(new_rows, n)`` (compiled once, new rows of the same shape reuse it) against
   NumPyro's ``Predictive`` called directly, as in the seed notebooks;
3. NUTS started from the ADVI solution (``vi.nuts(init=fit)``: VI mean as start, VI variances
   as the initial inverse mass matrix) against NUTS started cold (prior median, unit mass
   matrix), both with a short warm-up: bulk ESS of the worst hyperparameter per 1000
   gradient evaluations, and divergences.

Times are medians of ``--repeats`` runs after a warm-up call (compilation excluded) unless
marked "first call". Run:

    python benchmarks/posterior.py [--repeats 5] [--nuts-repeats 3] [--tune 200] [--draws 500]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import arviz as az  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from numpyro.infer import Predictive  # noqa: E402

import variational as vi  # noqa: E402
from variational.data.datasets import find_shared_data, load_radon, make_radon, radon_model  # noqa: E402

HYPER = ["mu_alpha", "sigma_alpha", "mu_beta", "sigma_beta", "eps"]


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--nuts-repeats", type=int, default=3)
    p.add_argument("--tune", type=int, default=200)
    p.add_argument("--draws", type=int, default=500)
    p.add_argument("--n", type=int, default=1000, help="draws for sample_fn and predict")
    a = p.parse_args()

    path = find_shared_data("radon.csv")
    d = load_radon(path) if path else make_radon()
    print(f"data: {path or 'generated radon-like data'} ({len(d)} rows, {d.n_counties} counties); "
          f"{platform.processor() or platform.machine()}, jax {jax.__version__}, {jax.devices()[0].platform}")
    kw = {"n_counties": d.n_counties}
    fit = vi.fit(radon_model, d.columns, model_kwargs=kw, steps=20_000, progress=False)

    # 1. functions of draws -------------------------------------------------------------------
    county, floor = jnp.asarray(d.county), jnp.asarray(d.floor, jnp.float32)

    def fn(p):  # expected log radon of every home, and its county's deviation from the mean
        return p["alpha"][county] + p["beta"][county] * floor - p["mu_alpha"]

    t_vec = timed(lambda: fit.sample_fn(fn, a.n, seed=1), a.repeats)

    def loop():
        draws = fit.sample(a.n, seed=1)
        c, f = np.asarray(county), np.asarray(floor)
        return np.stack([p["alpha"][c] + p["beta"][c] * f - p["mu_alpha"]
                         for p in ({k: v[i] for k, v in draws.items()} for i in range(a.n))])

    t_loop = timed(loop, max(1, a.repeats // 2))
    assert np.allclose(fit.sample_fn(fn, a.n, seed=1), loop(), atol=1e-5)
    print(f"\n1. sample_fn over {a.n} draws: {t_vec * 1e3:.1f} ms vectorised vs {t_loop * 1e3:.1f} ms "
          f"per-draw NumPy loop over fit.sample -> {t_loop / t_vec:.1f}x")

    # 2. predictions on new rows --------------------------------------------------------------
    rng = np.random.default_rng(0)
    rows = 200

    def new_rows():
        return {"county": rng.integers(0, d.n_counties, rows).astype(np.int32),
                "floor": rng.integers(0, 2, rows).astype(np.float64)}

    t_ours = timed(lambda: fit.predict(new_rows(), n=a.n, seed=2)["log_radon"], a.repeats)
    latent = {k: jnp.asarray(v) for k, v in fit.sample(a.n, seed=2).items() if k in fit.logdensity.names}
    pred = Predictive(radon_model, posterior_samples=latent, return_sites=["log_radon"])
    t_np = timed(lambda: pred(jax.random.PRNGKey(2), **{k: jnp.asarray(v) for k, v in new_rows().items()},
                              log_radon=None, **kw)["log_radon"], a.repeats)
    print(f"2. predict {a.n} draws x {rows} new rows: {t_ours * 1e3:.1f} ms vs NumPyro Predictive "
          f"{t_np * 1e3:.1f} ms -> {t_np / t_ours:.1f}x")

    # 3. NUTS warm start ------------------------------------------------------------------------
    print(f"3. NUTS, 1 chain, tune={a.tune}, draws={a.draws}, {a.nuts_repeats} seeds "
          f"(ESS per 1000 gradient evaluations of the kept draws, so machine load does not enter):")
    res = {"from ADVI": [], "cold": []}
    for seed in range(a.nuts_repeats):
        for label, init in (("from ADVI", fit), ("cold", None)):
            t0 = time.perf_counter()
            idata = vi.nuts(radon_model, d.columns, init=init, model_kwargs=kw, draws=a.draws,
                            tune=a.tune, chains=1, seed=seed)
            wall = time.perf_counter() - t0
            ess = float(min(az.ess(idata, var_names=HYPER)[k].values.min() for k in HYPER))
            grads = int(idata.sample_stats["n_steps"].sum())
            div = int(idata.sample_stats["diverging"].sum())
            res[label].append((1000 * ess / grads, ess, div))
            print(f"   seed {seed} {label:>9}: min bulk ESS {ess:6.1f} over {grads} gradients "
                  f"({1000 * ess / grads:.2f} per 1000), {div} divergences, {wall:5.1f}s wall")
    med = {k: statistics.median(r[0] for r in v) for k, v in res.items()}
    print(f"   median min-ESS per 1000 gradients: from ADVI {med['from ADVI']:.2f}, cold "
          f"{med['cold']:.2f} -> {med['from ADVI'] / med['cold']:.2f}x; median min ESS: from ADVI "
          f"{statistics.median(r[1] for r in res['from ADVI']):.0f}, cold "
          f"{statistics.median(r[1] for r in res['cold']):.0f}")

if __name__ == "__main__":
    main()
