"""Import time of ``variational`` against ``numpyro`` (the library it builds on).

Each import runs in a fresh Python process (``python -c "import X"``), alternating the two
modules, ``--repeats`` times each (default 7); the medians of the wall times of the import
statement alone (measured inside the process, the interpreter's start-up excluded) are printed
with their ratio, and the heavy modules ``import variational`` loads (ArviZ, matplotlib,
pandas, xarray, SciPy: SciPy comes with NumPyro itself).

Run: ``python benchmarks/import_time.py [--repeats 7]``. The target is a ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

HEAVY = ("arviz", "matplotlib", "pandas", "xarray", "scipy", "pyarrow")
PROBE = ("import sys, time, json; t = time.perf_counter(); import {module}; "
         "print(json.dumps([time.perf_counter() - t, [m for m in {heavy!r} if m in sys.modules]]))")


def once(module: str) -> tuple[float, list[str]]:
    """Seconds ``import module`` takes in a new process, and the heavy modules it loaded."""
    done = subprocess.run([sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)],
                          capture_output=True, text=True, check=True)
    seconds, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return float(seconds), loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"numpyro": [], "variational": []}
    loaded: list[str] = []
    for _ in range(args.repeats):
        for module in times:
            seconds, heavy = once(module)
            times[module].append(seconds)
            if module == "variational":
                loaded = heavy
    median = {m: sorted(t)[len(t) // 2] for m, t in times.items()}
    for m, t in times.items():
        print(f"import {m:12s} median {median[m]:.3f} s  (runs: {', '.join(f'{x:.2f}' for x in t)})")
    print(f"ratio variational / numpyro: {median['variational'] / median['numpyro']:.2f} (target <= 1.2)")
    print(f"heavy modules loaded by import variational: {', '.join(loaded) or 'none'}")


if __name__ == "__main__":
    main()
