"""High-dimensional nonlinear posteriors, checked against long NUTS runs.

Two models written here, on simulated data (the generating code is below):

* ``sv``: stochastic volatility of ``T`` daily returns, a centred AR(1) latent log volatility
  per day (``T + 3`` latent dimensions): ``h_1 ~ N(mu, sigma / sqrt(1 - phi^2))``,
  ``h_t ~ N(mu + phi (h_{t-1} - mu), sigma)``, ``r_t ~ N(0, exp(h_t / 2))``;
* ``irt``: a two-parameter item-response model, ``J`` persons and ``I`` items
  (``J + 2 I + 1`` dimensions): ``theta_j ~ N(0, sigma_theta)``, ``a_i ~ LogNormal(0, 0.5)``,
  ``b_i ~ N(0, 2)``, ``y_ij ~ Bernoulli(logit^-1(a_i (theta_j - b_i)))``.

The reference is NumPyro NUTS (one chain, ``--nuts`` warm-up and draws), stored in
``benchmarks/data/high_dim_reference.json`` after its first run. Each runner reports its wall
time and, over every latent coordinate (constrained space), the largest error of a mean in
reference sds, the median and smallest sd ratio, and the library's verdict:
``default`` (``vi.fit(model, data)``), ``fullrank`` and ``structured`` (``method=``), and NumPyro
SVI with ``AutoNormal`` and ``AutoLowRankMultivariateNormal`` (Adam 0.01, ``--svi-steps``).

    python benchmarks/high_dim.py [--models sv irt] [--runners default fullrank structured autonormal lowrank]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).resolve().parent / "data" / "high_dim_reference.json"
RUNNERS = ("default", "fullrank", "structured", "autonormal", "lowrank")


def sv_model(r):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(-1.0, 1.0))
    phi = 2.0 * numpyro.sample("phi_raw", dist.Beta(20.0, 1.5)) - 1.0
    sigma = numpyro.sample("sigma", dist.HalfNormal(0.5))
    h = numpyro.sample("h", dist.Normal(0.0, 1.0).expand([len(r)]).to_event(1))
    # the AR(1) prior of h replaces the standard normal above (kept for a finite initial point)
    ar = (dist.Normal(mu, sigma / jnp.sqrt(1 - phi ** 2)).log_prob(h[0])
          + dist.Normal(mu + phi * (h[:-1] - mu), sigma).log_prob(h[1:]).sum())
    numpyro.factor("ar", ar - dist.Normal(0.0, 1.0).log_prob(h).sum())
    numpyro.sample("r", dist.Normal(0.0, jnp.exp(h / 2)), obs=r)


def sv_data(t: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    mu, phi, sigma = -1.0, 0.95, 0.25
    h = np.empty(t)
    h[0] = rng.normal(mu, sigma / np.sqrt(1 - phi ** 2))
    for i in range(1, t):
        h[i] = mu + phi * (h[i - 1] - mu) + rng.normal(0, sigma)
    return {"r": rng.normal(0.0, np.exp(h / 2))}


def irt_model(person, item, y, n_person, n_item):
    import numpyro
    import numpyro.distributions as dist

    sigma_theta = numpyro.sample("sigma_theta", dist.HalfNormal(1.0))
    theta = numpyro.sample("theta", dist.Normal(0.0, sigma_theta).expand([n_person]).to_event(1))
    a = numpyro.sample("a", dist.LogNormal(0.0, 0.5).expand([n_item]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0).expand([n_item]).to_event(1))
    numpyro.sample("y", dist.Bernoulli(logits=a[item] * (theta[person] - b[item])), obs=y)


def irt_data(n_person: int, n_item: int, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    theta, a, b = rng.normal(0, 1, n_person), rng.lognormal(0, 0.5, n_item), rng.normal(0, 1, n_item)
    person, item = np.repeat(np.arange(n_person), n_item), np.tile(np.arange(n_item), n_person)
    y = rng.random(person.size) < 1 / (1 + np.exp(-a[item] * (theta[person] - b[item])))
    return {"person": person, "item": item, "y": y.astype(np.int32)}, {"n_person": n_person, "n_item": n_item}


def problem(name: str, size: int):
    """``(model, data columns, model keyword arguments)``."""
    if name == "sv":
        return sv_model, sv_data(size), {}
    data, kwargs = irt_data(size, 20)
    return irt_model, data, kwargs


def _flat(draws: dict, names) -> np.ndarray:
    """Draws of every latent site, flattened to (n, total size), in the order of ``names``."""
    return np.concatenate([np.asarray(draws[k]).reshape(len(np.asarray(draws[k])), -1) for k in names], axis=1)


def reference(name: str, size: int, nuts: int) -> dict:
    key = f"{name}-{size}-{nuts}"
    store = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {}
    if key not in store:
        import jax
        from numpyro.infer import MCMC, NUTS

        model, data, kwargs = problem(name, size)
        started = time.perf_counter()
        mcmc = MCMC(NUTS(model), num_warmup=nuts, num_samples=nuts, num_chains=1, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(1), **data, **kwargs)
        s = mcmc.get_samples()
        names = sorted(s)
        x = _flat(s, names)
        store[key] = {"names": names, "mean": x.mean(0).tolist(), "sd": x.std(0).tolist(),
                      "wall_s": round(time.perf_counter() - started, 1), "draws": nuts}
        REFERENCE.parent.mkdir(exist_ok=True)
        REFERENCE.write_text(json.dumps(store))
    return store[key]


def run(name: str, size: int, runner: str, ref: dict, svi_steps: int) -> dict:
    import jax

    model, data, kwargs = problem(name, size)
    started = time.perf_counter()
    out = {}
    if runner in ("default", "fullrank", "structured"):
        import variational as vi

        method = {"default": "auto", "fullrank": "fullrank_advi"}.get(runner, runner)
        fit = vi.fit(model, data, method=method, model_kwargs=kwargs, progress=False, stop=vi.Stop(max_seconds=1200))
        mean = np.concatenate([np.ravel(fit.mean[k]) for k in ref["names"]])
        sd = np.concatenate([np.ravel(fit.std[k]) for k in ref["names"]])
        out = {"method": fit.method, "steps": fit.steps, "verdict": fit.diagnose().status}
    else:
        import numpyro
        from numpyro.infer import SVI, Trace_ELBO
        from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal

        guide = (AutoNormal if runner == "autonormal" else AutoLowRankMultivariateNormal)(model)
        svi = SVI(model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
        res = svi.run(jax.random.PRNGKey(0), svi_steps, **data, **kwargs, progress_bar=False)
        x = _flat(guide.sample_posterior(jax.random.PRNGKey(1), res.params, sample_shape=(4000,)), ref["names"])
        mean, sd = x.mean(0), x.std(0)
        out = {"steps": svi_steps}
    wall = time.perf_counter() - started
    rm, rs = np.asarray(ref["mean"]), np.asarray(ref["sd"])
    ratio = sd / rs
    return {"model": name, "dim": int(rm.size), "runner": runner, "wall_s": round(wall, 1),
            "max_err_sd": round(float(np.max(np.abs(mean - rm) / rs)), 3),
            "sd_ratio_median": round(float(np.median(ratio)), 3), "sd_ratio_min": round(float(ratio.min()), 3), **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["sv", "irt"], choices=["sv", "irt"])
    ap.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=RUNNERS)
    ap.add_argument("--sv-days", type=int, default=500)
    ap.add_argument("--irt-persons", type=int, default=400)
    ap.add_argument("--nuts", type=int, default=2000)
    ap.add_argument("--svi-steps", type=int, default=20000)
    a = ap.parse_args()
    print("| model | dim | runner | wall s | max error (ref sd) | sd ratio median / min | verdict | notes |")
    print("|---|---|---|---|---|---|---|---|")
    for name in a.models:
        size = a.sv_days if name == "sv" else a.irt_persons
        ref = reference(name, size, a.nuts)
        print(f"| {name} | {len(ref['mean'])} | NUTS reference | {ref['wall_s']} | | | | {ref['draws']} draws |", flush=True)
        for runner in a.runners:
            try:
                r = run(name, size, runner, ref, a.svi_steps)
            except Exception as e:  # a failing runner is a result, not the end of the benchmark
                print(f"| {name} | | {runner} | | | | | failed: {type(e).__name__}: {e} |", flush=True)
                continue
            notes = ", ".join(f"{k} {r[k]}" for k in ("method", "steps") if k in r)
            print(f"| {name} | {r['dim']} | {runner} | {r['wall_s']} | {r['max_err_sd']} | "
                  f"{r['sd_ratio_median']} / {r['sd_ratio_min']} | {r.get('verdict', '')} | {notes} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
