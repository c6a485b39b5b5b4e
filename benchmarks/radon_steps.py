"""Steps per second of ``vi.fit`` on the hierarchical radon regression (full data or minibatch).

Compared, in one process, with
  * a hand-written mean-field ADVI loop of the same model fused in one ``jax.lax.scan``
    (the speed ceiling: no engine, no NaN guard, no progress), and
  * NumPyro's ``SVI.run`` with ``AutoNormal`` (with its default progress bar, and without it;
    full data only).

Reports the median of several runs of steady-state steps/s (compilation excluded) and the
compile times separately. Run:

    python benchmarks/radon_steps.py [--steps 20000] [--repeats 5] [--batch-size 100]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import variational as vi
from variational.data.datasets import find_shared_data, load_radon, make_radon, radon_model


def load() -> tuple[vi.datasets.RadonData, str]:
    path = find_shared_data("radon.csv")
    if path is not None:
        return load_radon(path), str(path)
    return make_radon(), "generated radon-like data"


def hand_written_loop(d, steps: int, lr: float = 1e-2, batch_size: int | None = None):
    """Mean-field ADVI of the radon model, written directly in JAX, fused in one scan.

    With ``batch_size`` each step reads the next ``batch_size`` rows of one fixed permutation
    (a slice: the cheapest minibatch there is) and scales their log-likelihood by N/B.
    """
    n = len(d)
    perm = jnp.asarray(np.random.default_rng(0).permutation(n).astype(np.int32))
    bsz = n if batch_size is None else int(batch_size)
    county = jnp.asarray(d.county)
    floor = jnp.asarray(d.floor, jnp.float32)
    y = jnp.asarray(d.log_radon, jnp.float32)
    k = d.n_counties
    dim = 4 + 2 * k + 1

    def norm_lp(x, m, s):
        return -0.5 * ((x - m) / s) ** 2 - jnp.log(s) - 0.5 * jnp.log(2 * jnp.pi)

    def bounded(u):  # Uniform(0, 100) through a logit transform, with its Jacobian
        return 100 * jax.nn.sigmoid(u), jnp.log(100.0) + jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u) - jnp.log(100.0)

    def logp(z, start):
        mu_a, mu_b = z[0], z[2]
        sa, la = bounded(z[1])
        sb, lb = bounded(z[3])
        a, b = z[4:4 + k], z[4 + k:4 + 2 * k]
        eps, le = bounded(z[-1])
        lp = norm_lp(mu_a, 0.0, 100.0) + norm_lp(mu_b, 0.0, 100.0) + la + lb + le
        lp += jnp.sum(norm_lp(a, mu_a, sa)) + jnp.sum(norm_lp(b, mu_b, sb))
        if batch_size is None:
            return lp + jnp.sum(norm_lp(y, a[county] + b[county] * floor, eps))
        idx = jax.lax.dynamic_slice(perm, (start,), (bsz,))
        c = county[idx]
        return lp + (n / bsz) * jnp.sum(norm_lp(y[idx], a[c] + b[c] * floor[idx], eps))

    def loss(p, key, start):
        s = jax.nn.softplus(p["rho"])
        e = jax.random.normal(key, (dim,))
        z = p["loc"] + s * e
        return -(logp(z, start) + jnp.sum(jnp.log(s)))  # entropy up to a constant

    opt = optax.adam(lr)

    @jax.jit
    def run(p, key):
        def body(carry, i):
            p, o = carry
            start = (i * bsz) % (n - n % bsz)
            l, g = jax.value_and_grad(loss)(p, jax.random.fold_in(key, i), start)
            u, o = opt.update(g, o, p)
            return (optax.apply_updates(p, u), o), l

        (p, _), losses = jax.lax.scan(body, (p, opt.init(p)), jnp.arange(steps))
        return p, losses

    p0 = {"loc": jnp.zeros(dim).at[jnp.array([1, 3, dim - 1])].set(0.0),
          "rho": jnp.full(dim, float(np.log(np.expm1(0.1))))}
    return run, p0


def time_hand(d, steps: int, batch_size: int | None = None) -> tuple[float, float]:
    run, p0 = hand_written_loop(d, steps, batch_size=batch_size)
    key = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    run.lower(p0, key).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(run(p0, key))  # warm
    t0 = time.perf_counter()
    jax.block_until_ready(run(p0, key))
    return steps / (time.perf_counter() - t0), compile_s


def time_vi(d, steps: int, batch_size: int | None = None) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    fit = vi.fit(radon_model, d.columns, model_kwargs={"n_counties": d.n_counties}, steps=steps,
                 progress=False, batch_size=batch_size)
    wall = time.perf_counter() - t0
    return fit.timings["steps"] / fit.timings["run_s"], fit.timings["compile_s"], wall


def time_numpyro(d, steps: int, progress_bar: bool) -> float:
    """Steady-state steps/s of NumPyro's SVI on the same model (AutoNormal, Adam 1e-2).

    With its progress bar, ``SVI.run`` steps from Python and compiles its update on every call,
    so the rate is taken from two runs of different lengths:
    (steps - steps/10) / (t(steps) - t(steps/10)). Without the bar, ``SVI.run`` runs
    ``svi.update`` in a compiled ``fori_loop``; that loop is compiled once here and timed alone.
    """
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.optim import Adam

    kw = dict(d.columns, n_counties=d.n_counties)
    svi = SVI(radon_model, AutoNormal(radon_model), Adam(1e-2), Trace_ELBO())
    if not progress_bar:
        state0 = svi.init(jax.random.PRNGKey(0), **kw)
        loop = jax.jit(lambda st: jax.lax.fori_loop(0, steps, lambda i, s: svi.update(s, **kw)[0], st))
        loop = loop.lower(state0).compile()
        jax.block_until_ready(loop(state0))
        t0 = time.perf_counter()
        jax.block_until_ready(loop(state0))
        return steps / (time.perf_counter() - t0)

    def timed(n: int) -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(svi.run(jax.random.PRNGKey(0), n, progress_bar=True, **kw).losses)
        return time.perf_counter() - t0

    short = max(1, steps // 10)
    t_short, t_long = timed(short), timed(steps)
    return (steps - short) / max(t_long - t_short, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--numpyro-steps", type=int, default=2_000,
                    help="steps for NumPyro SVI.run with its progress bar (slow)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="minibatch rows per step (vi.fit and the hand-written loop only; NumPyro's "
                         "minibatch runs are in compare.py)")
    a = ap.parse_args()
    d, source = load()
    what = "full data" if a.batch_size is None else f"minibatch {a.batch_size}"
    print(f"data: {source} ({len(d)} rows, {d.n_counties} counties, {what}); {a.steps} steps x {a.repeats} repeats")
    print(f"jax {jax.__version__}, numpyro {__import__('numpyro').__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, backend {jax.default_backend()}")
    r = {k: [] for k in ("vi", "hand", "np_bar", "np_nobar", "vi_compile", "hand_compile", "vi_wall")}
    for i in range(a.repeats):
        sps, comp, wall = time_vi(d, a.steps, a.batch_size)
        r["vi"].append(sps), r["vi_compile"].append(comp), r["vi_wall"].append(wall)
        sps, comp = time_hand(d, a.steps, a.batch_size)
        r["hand"].append(sps), r["hand_compile"].append(comp)
        if a.batch_size is None:
            r["np_nobar"].append(time_numpyro(d, a.steps, progress_bar=False))
            r["np_bar"].append(time_numpyro(d, a.numpyro_steps, progress_bar=True))
        else:
            r["np_nobar"].append(float("nan")), r["np_bar"].append(float("nan"))
        print(f"  run {i + 1}: vi {r['vi'][-1]:,.0f}  hand {r['hand'][-1]:,.0f}  "
              f"numpyro(bar) {r['np_bar'][-1]:,.0f}  numpyro(no bar) {r['np_nobar'][-1]:,.0f} steps/s")
    med = {k: statistics.median(v) for k, v in r.items()}
    print("\n| runner | steps/s (median) | ratio vi.fit / runner | compile (s) |")
    print("|---|---:|---:|---:|")
    print(f"| vi.fit (advi) | {med['vi']:,.0f} | 1.00 | {med['vi_compile']:.2f} |")
    print(f"| hand-written fused lax.scan | {med['hand']:,.0f} | {med['vi'] / med['hand']:.2f} | {med['hand_compile']:.2f} |")
    if a.batch_size is None:
        print(f"| NumPyro SVI.run + AutoNormal (default progress bar) | {med['np_bar']:,.0f} | {med['vi'] / med['np_bar']:.1f} | - |")
        print(f"| NumPyro compiled svi.update loop (what SVI.run runs with progress_bar=False) | {med['np_nobar']:,.0f} | {med['vi'] / med['np_nobar']:.2f} | - |")
    print(f"\nvi.fit wall time per {a.steps}-step fit, model tracing and compilation included: "
          f"{med['vi_wall']:.2f}s (median)")


if __name__ == "__main__":
    main()
