"""What compiling a fit's chunk of steps costs next to the model's bare loss-and-gradient program.

For three sizes of the radon-like hierarchical regression (``make_radon``: counties x homes),
the default fit's engine is built (``vi.fit(..., steps=0)``, the adaptive schedule on) and two
programs are lowered and compiled with every cache off (JAX's in-memory and persistent caches,
the library's programs):

* ``bare``: ``loss_and_grad(params, key, batch)``, the model's objective and its gradient;
* ``chunk``: the compiled loop of steps the fit runs (the optimiser, the guard, the schedule's
  windows, the loss buffer around the same loss and gradient).

Printed per size: XLA compile seconds (median of ``--repeats``), instructions of the optimised
program, and the chunk's compile time over the bare one's (target <= 1.5).

``--key-impl rbg`` (or ``unsafe_rbg``, ``threefry2x32``) gives both programs a typed key of that
random-number generator instead of the fit's own (threefry) key, to measure what the generator
costs the compiler.

Run: ``python benchmarks/compile_cost.py [--repeats 3] [--key-impl rbg]``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("VARIATIONAL_COMPILE_CACHE", "off")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import variational as vi  # noqa: E402
from variational.data.datasets import make_radon, radon_model  # noqa: E402

SIZES = ((20, 200), (85, 919), (400, 4000))   # (counties, homes)


def _instructions(compiled: object) -> int:
    return sum(1 for line in compiled.as_text().splitlines() if " = " in line)


def _compile_s(lower: object, repeats: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeats):
        jax.clear_caches()
        lowered = lower()
        t0 = time.perf_counter()
        compiled = lowered.compile()
        times.append(time.perf_counter() - t0)
        size = _instructions(compiled)
    return float(np.median(times)), size


def measure(counties: int, homes: int, repeats: int, key_impl: str | None = None) -> dict:
    d = make_radon(n_counties=counties, n_rows=homes, seed=0)
    fit = vi.fit(radon_model, d.columns, model_kwargs={"n_counties": d.n_counties}, steps=0, progress=False)
    engine, state, data, key = fit.engine, fit.state, fit.data, fit.key
    if key_impl is not None:
        key = jax.random.key(0, impl=key_impl)
    batch = engine.batcher.next(state.data_state, data, state.step, key, None)[0]
    bare = lambda: jax.jit(engine.loss_and_grad).lower(state.params, key, batch)  # noqa: E731
    chunk = lambda: jax.jit(engine._chunk).lower(state, data, key, np.int32(1), None)  # noqa: E731
    (tb, nb), (tc, nc) = _compile_s(bare, repeats), _compile_s(chunk, repeats)
    return {"dim": fit.logdensity.dim, "bare_s": tb, "bare_n": nb, "chunk_s": tc, "chunk_n": nc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--key-impl", default=None, help="rbg, unsafe_rbg or threefry2x32 (default: the fit's key)")
    args = parser.parse_args()
    print(f"{'counties x homes':>17} {'dim':>5} {'bare s':>7} {'bare ins':>8} {'chunk s':>8} {'chunk ins':>9} {'ratio':>6}")
    for counties, homes in SIZES:
        r = measure(counties, homes, args.repeats, args.key_impl)
        print(f"{counties:>8} x {homes:<6} {r['dim']:>5} {r['bare_s']:>7.3f} {r['bare_n']:>8} {r['chunk_s']:>8.3f} "
              f"{r['chunk_n']:>9} {r['chunk_s'] / r['bare_s']:>6.2f}")


if __name__ == "__main__":
    main()
