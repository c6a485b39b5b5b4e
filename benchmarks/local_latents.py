"""Local latent variables at scale: accuracy against the conjugate posterior, against NumPyro
SVI + AutoNormal at the same number of steps, and steps/s and peak memory as N grows.

Model: ``mu ~ N(0, 10); z_i ~ N(mu, 1); y_i ~ N(z_i, 0.5)`` (closed-form posterior, see
``tests/test_local.py``), batch 256.

    python benchmarks/local_latents.py --rows 10000 --steps 6000        # accuracy, both libraries
    python benchmarks/local_latents.py --scaling 10000,100000,1000000   # steps/s, peak memory
    python benchmarks/local_latents.py --hier --steps 2000              # 1e5 groups, 1e6 rows
    python benchmarks/local_latents.py --regression 10000000 --steps 3000   # global-only, 1e7 rows
    python benchmarks/local_latents.py --amortised --rows 100000 --steps 6000 [--hidden 16]   # encoder

Each measurement runs in its own process (``--one``) so that peak memory (``ru_maxrss``) is
its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(rng.normal(1.0, 1.0, n), 0.5).astype(np.float32)


def exact(y: np.ndarray) -> dict:
    prec = 1 / 100 + len(y) / 1.25
    m, v = (y.sum() / 1.25) / prec, 1 / prec
    return {"mu": (m, np.sqrt(v)), "z": ((m + 4 * y) / 5, np.sqrt(0.2 + v / 25))}


def model_of(n: int, b: int | None):
    import numpyro
    import numpyro.distributions as dist

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("rows", n, subsample_size=b) as idx:
            z = numpyro.sample("z", dist.Normal(mu, 1.0))
            numpyro.sample("y", dist.Normal(z, 0.5), obs=y if b is None else y[idx])
    return model


def errors(y: np.ndarray, mean: dict, sd: dict) -> dict:
    ex = exact(y)
    out = {}
    for k in ("mu", "z"):
        out[f"{k}_max_mean_err_sd"] = float(np.max(np.abs(np.asarray(mean[k]) - ex[k][0]) / ex[k][1]))
        out[f"{k}_max_sd_err"] = float(np.max(np.abs(np.asarray(sd[k]) / ex[k][1] - 1)))
    return out


def run_variational(n: int, steps: int, b: int = 256) -> dict:
    import variational as vi
    y = data(n)
    t = time.perf_counter()
    fit = vi.fit(model_of(n, None), {"y": y}, batch_size=b, steps=steps, progress=False)
    wall = time.perf_counter() - t
    res = errors(y, fit.unconstrained_mean, fit.unconstrained_std)
    return {"lib": "variational", "rows": n, "steps": steps, "wall_s": wall,
            "steps_per_s": steps / max(fit.timings["run_s"], 1e-9), **res}


def run_amortised(n: int, steps: int, b: int = 256, hidden: tuple = ()) -> dict:
    """The encoder fit (``vi.Batches(b, local=vi.Amortised())``): training rows from q's moments, and 200 new rows
    (drawn as the data were) from 4000 draws of ``fit.local_posterior`` (Monte Carlo error of a
    mean: 1/63 sd; of an sd: 1.1%)."""
    import variational as vi
    y = data(n)
    t = time.perf_counter()
    fit = vi.fit(model_of(n, None), {"y": y}, batch_size=vi.Batches(b, local=vi.Amortised(hidden=hidden)),
                 steps=steps, learning_rate=0.02, progress=False)
    wall = time.perf_counter() - t
    res = errors(y, fit.unconstrained_mean, fit.unconstrained_std)
    new = data(200, seed=99)
    draws = fit.local_posterior({"y": new}, n=4000, seed=0)["z"]
    mu_m, mu_s = exact(y)["mu"]
    em, es = (mu_m + 4 * new) / 5, np.sqrt(0.2 + mu_s ** 2 / 25)
    res["new_z_max_mean_err_sd"] = float(np.max(np.abs(draws.mean(0) - em) / es))
    res["new_z_max_sd_err"] = float(np.max(np.abs(draws.std(0) / es - 1)))
    import jax
    res["parameters"] = int(sum(np.size(v) for v in jax.tree_util.tree_leaves(fit.state.params)))
    return {"lib": "variational amortised", "rows": n, "steps": steps, "wall_s": wall,
            "steps_per_s": steps / max(fit.timings["run_s"], 1e-9), **res}


def run_numpyro(n: int, steps: int, b: int = 256) -> dict:
    import jax
    import optax
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    y = data(n)
    model = model_of(n, b)
    guide = AutoNormal(model)
    svi = SVI(model, guide, optax.adam(0.01), Trace_ELBO())
    t = time.perf_counter()
    res = svi.run(jax.random.PRNGKey(0), steps, jax.numpy.asarray(y), progress_bar=False)
    wall = time.perf_counter() - t
    p = res.params
    mean = {"mu": p["mu_auto_loc"], "z": p["z_auto_loc"]}
    sd = {"mu": p["mu_auto_scale"], "z": p["z_auto_scale"]}
    return {"lib": "numpyro AutoNormal", "rows": n, "steps": steps, "wall_s": wall,
            "steps_per_s": steps / wall, **errors(y, mean, sd)}


def run_hier(groups: int = 100_000, rows: int = 1_000_000, steps: int = 2000) -> dict:
    """Hierarchical logistic regression: a global intercept/slope, one effect per group (global,
    10^5 of them), one latent per row (local noise), Bernoulli rows, batch 256."""
    import numpyro
    import numpyro.distributions as dist
    import variational as vi
    rng = np.random.default_rng(1)
    g = rng.integers(0, groups, rows).astype(np.int32)
    x = rng.normal(size=rows).astype(np.float32)
    eff = rng.normal(0, 0.5, groups)
    yb = (rng.random(rows) < 1 / (1 + np.exp(-(0.3 + 0.8 * x + eff[g])))).astype(np.float32)

    def model(g, x, y):
        a = numpyro.sample("a", dist.Normal(0, 2))
        b = numpyro.sample("b", dist.Normal(0, 2))
        tau = numpyro.sample("tau", dist.HalfNormal(1))
        with numpyro.plate("groups", groups):
            u = numpyro.sample("u", dist.Normal(0, 1))
        with numpyro.plate("rows", rows):
            e = numpyro.sample("e", dist.Normal(0, 0.3))
            numpyro.sample("y", dist.Bernoulli(logits=a + b * x + tau * u[g] + e), obs=y)

    t = time.perf_counter()
    fit = vi.fit(model, {"g": g, "x": x, "y": yb}, batch_size=256, steps=steps, method="advi",
                 progress=False)
    return {"lib": "variational", "model": "hier logistic", "groups": groups, "rows": rows,
            "steps": steps, "wall_s": time.perf_counter() - t,
            "steps_per_s": steps / max(fit.timings["run_s"], 1e-9),
            "a": float(fit.unconstrained_mean["a"]), "b": float(fit.unconstrained_mean["b"])}


def run_regression(n: int, steps: int, b: int = 256) -> dict:
    """Global-only linear regression (no local sites) on ``n`` rows: steps/s and memory."""
    import numpyro
    import numpyro.distributions as dist
    import variational as vi
    rng = np.random.default_rng(2)
    x = rng.normal(size=n).astype(np.float32)
    y = (0.5 + 2.0 * x + rng.normal(size=n)).astype(np.float32)

    def model(x, y):
        a = numpyro.sample("a", dist.Normal(0, 5))
        w = numpyro.sample("w", dist.Normal(0, 5))
        numpyro.sample("y", dist.Normal(a + w * x, 1.0), obs=y)

    t = time.perf_counter()
    fit = vi.fit(model, {"x": x, "y": y}, batch_size=b, steps=steps, learning_rate=0.01, progress=False)
    return {"lib": "variational", "model": "global-only regression", "rows": n, "steps": steps,
            "wall_s": time.perf_counter() - t, "steps_per_s": steps / max(fit.timings["run_s"], 1e-9)}


def one(kind: str, n: int, steps: int, hidden: str = "") -> None:
    runs = {"variational": run_variational, "numpyro": run_numpyro, "regression": run_regression}
    if kind == "amortised":
        res = run_amortised(n, steps, hidden=tuple(int(h) for h in hidden.split(",") if h))
    else:
        res = runs[kind](n, steps) if kind != "hier" else run_hier(steps=steps)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))


def spawn(kind: str, n: int, steps: int, *extra: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", kind, str(n), str(steps), *extra],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs="+", help="KIND ROWS STEPS [HIDDEN]: one run in this process")
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--scaling", default="")
    ap.add_argument("--hier", action="store_true")
    ap.add_argument("--amortised", action="store_true", help="the encoder fit at --rows, --steps")
    ap.add_argument("--hidden", default="", help="the encoder's hidden sizes, comma-separated (default: linear)")
    ap.add_argument("--regression", default="", help="rows of global-only regressions, comma-separated")
    a = ap.parse_args()
    if a.one:
        one(a.one[0], int(a.one[1]), int(a.one[2]), *a.one[3:])
        return
    if a.hier:
        print(json.dumps(spawn("hier", 0, a.steps)))
        return
    if a.amortised:
        print(json.dumps(spawn("amortised", a.rows, a.steps, a.hidden)))
        return
    if a.regression:
        for n in [int(v) for v in a.regression.split(",")]:
            print(json.dumps(spawn("regression", n, a.steps)))
        return
    if a.scaling:
        for n in [int(v) for v in a.scaling.split(",")]:
            print(json.dumps(spawn("variational", n, a.steps)))
        return
    for kind in ("variational", "numpyro"):
        print(json.dumps(spawn(kind, a.rows, a.steps)))


if __name__ == "__main__":
    main()
