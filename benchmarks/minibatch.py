"""Minibatch ADVI speed: in memory on the radon model, and streaming from Parquet.

Part 1 (in memory): steady-state steps/s of ``vi.fit(radon_model, data, batch_size=100)``
next to, in the same process,
  * a hand-written mean-field ADVI loop of the same model with minibatch gathering (100 row
    indices drawn per step, rows gathered from device arrays), fused in one ``jax.lax.scan``;
  * NumPyro ``SVI.run`` with ``AutoNormal`` on the same model written with
    ``numpyro.plate(..., subsample_size=100)`` (default progress bar, and progress_bar=False).

Part 2 (streaming): a generated logistic regression (default 10 million rows, 10 features) is
written to a temporary Parquet folder; rows/s of one streamed epoch against the same data held in
memory (``vi.fit(..., batch_size=B)``), both measured in child processes that also report their
peak resident memory (``resource.getrusage``), so the streaming figure is the whole process's.

    python benchmarks/minibatch.py [--steps 20000] [--repeats 3] [--rows 10000000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import variational as vi
from variational.data.datasets import find_shared_data, load_radon, make_radon, radon_model

B = 100


def load():
    path = find_shared_data("radon.csv")
    return (load_radon(path), str(path)) if path is not None else (make_radon(), "generated radon-like data")


# ------------------------------------------------------------------------------------------------
# part 1: in memory
# ------------------------------------------------------------------------------------------------

def hand_minibatch_loop(d, steps: int, lr: float = 1e-2):
    """Mean-field ADVI of the radon model with minibatch gathering, fused in one lax.scan."""
    county, floor = jnp.asarray(d.county), jnp.asarray(d.floor, jnp.float32)
    y = jnp.asarray(d.log_radon, jnp.float32)
    n, k = len(d), d.n_counties
    dim = 5 + 2 * k

    def normal(x, m, s):
        return -0.5 * ((x - m) / s) ** 2 - jnp.log(s) - 0.9189385

    def unit100(u):  # Uniform(0, 100) through a logit transform, with its log-Jacobian
        return 100 * jax.nn.sigmoid(u), jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u) + jnp.log(100.0)

    def logp(z, idx):
        (sa, ja), (sb, jb), (eps, je) = unit100(z[1]), unit100(z[3]), unit100(z[-1])
        a, b = z[4:4 + k], z[4 + k:4 + 2 * k]
        prior = normal(z[0], 0.0, 100.0) + normal(z[2], 0.0, 100.0) + ja + jb + je
        prior += jnp.sum(normal(a, z[0], sa)) + jnp.sum(normal(b, z[2], sb))
        c = county[idx]
        return prior + (n / B) * jnp.sum(normal(y[idx], a[c] + b[c] * floor[idx], eps))

    def loss(p, key):
        k1, k2 = jax.random.split(key)
        s = jax.nn.softplus(p["rho"])
        z = p["loc"] + s * jax.random.normal(k1, (dim,))
        return -(logp(z, jax.random.randint(k2, (B,), 0, n)) + jnp.sum(jnp.log(s)))

    opt = optax.adam(lr)

    grad = jax.value_and_grad(loss)

    @jax.jit
    def run(p, key):
        def step(state, step_key):  # one ADVI step on a fresh minibatch
            params, opt_state = state
            value, g = grad(params, step_key)
            updates, opt_state = opt.update(g, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        return jax.lax.scan(step, (p, opt.init(p)), jax.random.split(key, steps))

    return run, {"loc": jnp.zeros(dim), "rho": jnp.full(dim, float(np.log(np.expm1(0.1))))}


def time_hand(d, steps: int) -> float:
    run, p0 = hand_minibatch_loop(d, steps)
    key = jax.random.PRNGKey(0)
    jax.block_until_ready(run(p0, key))  # compile and warm
    t0 = time.perf_counter()
    jax.block_until_ready(run(p0, key))
    return steps / (time.perf_counter() - t0)


def time_vi(d, steps: int, replace: bool = False) -> float:
    fit = vi.fit(radon_model, d.columns, model_kwargs={"n_counties": d.n_counties}, steps=steps,
                 batch_size=B, replace=replace, progress=False)
    return fit.timings["steps"] / fit.timings["run_s"]


def radon_subsampled(county, floor, log_radon, n_counties):
    """The radon model written for NumPyro with a subsampling plate of B homes."""
    import numpyro
    import numpyro.distributions as dist

    mu_a = numpyro.sample("mu_alpha", dist.Normal(0.0, 100.0))
    sigma_a = numpyro.sample("sigma_alpha", dist.Uniform(0.0, 100.0))
    mu_b = numpyro.sample("mu_beta", dist.Normal(0.0, 100.0))
    sigma_b = numpyro.sample("sigma_beta", dist.Uniform(0.0, 100.0))
    with numpyro.plate("counties", n_counties):
        a = numpyro.sample("alpha", dist.Normal(mu_a, sigma_a))
        b = numpyro.sample("beta", dist.Normal(mu_b, sigma_b))
    eps = numpyro.sample("eps", dist.Uniform(0.0, 100.0))
    with numpyro.plate("homes", log_radon.shape[0], subsample_size=B) as idx:
        c = county[idx]
        numpyro.sample("log_radon", dist.Normal(a[c] + b[c] * floor[idx], eps), obs=log_radon[idx])


def time_numpyro(d, steps: int, progress_bar: bool) -> float:
    """Steady-state steps/s of SVI.run: lengths n/10 and n, so that compilation cancels out."""
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.optim import Adam

    kw = dict(county=jnp.asarray(d.county), floor=jnp.asarray(d.floor, jnp.float32),
              log_radon=jnp.asarray(d.log_radon, jnp.float32), n_counties=d.n_counties)
    svi = SVI(radon_subsampled, AutoNormal(radon_subsampled), Adam(1e-2), Trace_ELBO())
    seconds = {}
    # a warm-up call first (in case the compiled loop is reused), then two lengths, differenced
    for n in (max(1, steps // 10), max(1, steps // 10), steps):
        t0 = time.perf_counter()
        jax.block_until_ready(svi.run(jax.random.PRNGKey(0), n, progress_bar=progress_bar, **kw).losses)
        seconds[n] = time.perf_counter() - t0
    (n1, t1), (n2, t2) = sorted(seconds.items())
    return (n2 - n1) / max(t2 - t1, 1e-9)


def part1(steps: int, repeats: int, np_bar_steps: int) -> None:
    d, source = load()
    print(f"part 1: {source} ({len(d)} rows), batch {B}, {steps} steps x {repeats} repeats")
    r = {k: [] for k in ("vi", "vi_replace", "hand", "np_bar", "np_nobar")}
    for i in range(repeats):
        r["vi"].append(time_vi(d, steps))
        r["vi_replace"].append(time_vi(d, steps, replace=True))
        r["hand"].append(time_hand(d, steps))
        r["np_nobar"].append(time_numpyro(d, 5 * steps, False))
        r["np_bar"].append(time_numpyro(d, np_bar_steps, True))
        print("  run", i + 1, {k: round(v[-1]) for k, v in r.items()})
    m = {k: statistics.median(v) for k, v in r.items()}
    print("\n| runner (radon, batch 100) | steps/s (median) | vi.fit / runner |")
    print("|---|---:|---:|")
    print(f"| vi.fit(batch_size=100) (fresh keyed order each epoch) | {m['vi']:,.0f} | 1.00 |")
    print(f"| vi.fit(batch_size=100, replace=True) | {m['vi_replace']:,.0f} | {m['vi'] / m['vi_replace']:.2f} |")
    print(f"| hand-written loop / vi.fit(replace=True) (same sampling of rows) | | "
          f"{m['vi_replace'] / m['hand']:.2f} (vi.fit(replace=True) / hand) |")
    print(f"| hand-written fused lax.scan with gathering | {m['hand']:,.0f} | {m['vi'] / m['hand']:.2f} |")
    print(f"| NumPyro SVI.run, subsample_size=100 (default progress bar) | {m['np_bar']:,.0f} | {m['vi'] / m['np_bar']:.1f} |")
    print(f"| NumPyro SVI.run, subsample_size=100 (progress_bar=False) | {m['np_nobar']:,.0f} | {m['vi'] / m['np_nobar']:.2f} |")


# ------------------------------------------------------------------------------------------------
# part 2: streaming from Parquet
# ------------------------------------------------------------------------------------------------

FEATURES = 10


def logistic(x, y):
    w = vi.Normal("w", 0.0, 1.0, shape=FEATURES)
    b0 = vi.Normal("b0", 0.0, 1.0)
    vi.Bernoulli("y", logit_p=x @ w + b0, observed=y)


def write_parquet(folder: str, rows: int, shard_rows: int = 1_000_000) -> None:
    """Generated logistic-regression data in shards (features as one fixed-size list column each)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    w = rng.normal(size=FEATURES)
    for s, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        x = rng.normal(size=(n, FEATURES)).astype(np.float32)
        y = (rng.random(n) < 1 / (1 + np.exp(-(x @ w + 0.3)))).astype(np.float32)
        cols = {f"x{j}": x[:, j] for j in range(FEATURES)}
        cols["y"] = y
        pq.write_table(pa.table(cols), os.path.join(folder, f"part{s:03d}.parquet"), row_group_size=100_000)


def logistic_cols(**cols):
    """The same model, reading the features as separate columns (as stored in Parquet)."""
    x = jnp.stack([cols[f"x{j}"] for j in range(FEATURES)], axis=1)
    logistic(x, cols["y"])


def child(mode: str, folder: str, batch: int, steps: int) -> None:
    """Run in a subprocess: one fit; print rows/s and peak RSS as JSON."""
    import resource

    if mode == "stream":
        data = vi.data.parquet(folder)
    else:
        import pyarrow.parquet as pq

        t = pq.read_table(folder)
        data = {c: t.column(c).to_numpy() for c in t.column_names}
        del t
    fit = vi.fit(logistic_cols, data, batch_size=batch, steps=steps, progress=False, learning_rate=1e-2)
    rate = fit.timings["steps"] * batch / fit.timings["run_s"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB on Linux
    try:  # the high-water mark of this process's own memory (ru_maxrss can carry the parent's over exec)
        with open("/proc/self/status") as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        pass
    print(json.dumps({"rows_per_s": rate, "peak_mib": peak, "epochs": fit.epochs,
                      "w0": float(fit.mean["w"][0])}))


def part2(rows: int, batch: int, repeats: int) -> None:
    steps = rows // batch
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        write_parquet(folder, rows)
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / 2**20
        print(f"\npart 2: {rows:,} rows x {FEATURES} features written to Parquet ({size:,.0f} MiB) in "
              f"{time.perf_counter() - t0:.1f}s; batch {batch}, {steps} steps (one epoch) x {repeats} repeats")
        env = dict(os.environ, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false")
        res = {"stream": [], "memory": []}
        for i in range(repeats):
            for mode in res:
                out = subprocess.run([sys.executable, __file__, "--child", mode, folder, str(batch), str(steps)],
                                     capture_output=True, text=True, env=env)
                if out.returncode:
                    raise SystemExit(out.stderr[-3000:])
                res[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print("  run", i + 1, {m: (round(v[-1]["rows_per_s"]), round(v[-1]["peak_mib"])) for m, v in res.items()})
    med = {m: {k: statistics.median([r[k] for r in v]) for k in ("rows_per_s", "peak_mib")} for m, v in res.items()}
    print("\n| logistic regression, one epoch | rows/s (median) | stream / memory | peak RSS (MiB) |")
    print("|---|---:|---:|---:|")
    print(f"| in memory, vi.fit(dict, batch_size={batch}) | {med['memory']['rows_per_s']:,.0f} | 1.00 | "
          f"{med['memory']['peak_mib']:,.0f} |")
    print(f"| streamed, vi.fit(vi.data.parquet(folder), batch_size={batch}) | {med['stream']['rows_per_s']:,.0f} | "
          f"{med['stream']['rows_per_s'] / med['memory']['rows_per_s']:.2f} | {med['stream']['peak_mib']:,.0f} |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--numpyro-bar-steps", type=int, default=2_000)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--batch", type=int, default=10_000, help="rows per step of the streaming benchmark")
    ap.add_argument("--skip", choices=["memory", "stream"], help="skip part 1 (memory) or part 2 (stream)")
    a = ap.parse_args()
    print(f"jax {jax.__version__}, {os.cpu_count()} cores, backend {jax.default_backend()}")
    if a.skip != "memory":
        part1(a.steps, a.repeats, a.numpyro_bar_steps)
    if a.skip != "stream":
        part2(a.rows, a.batch, a.repeats)


if __name__ == "__main__":
    main()
