"""The time a user waits for ``vi.fit(model, data)`` + ``diagnose()`` + 4000 draws, and where it goes.

    PYTHONPATH=src python benchmarks/fixed_costs.py [--repeats 3] [--steps N] [--no-pymc]

The radon survey (919 homes, 85 counties; generated radon-like data when ``../shared/data`` is
absent) and the seeds' hierarchical model. Every run is a fresh Python process and the clock
starts after the imports, as a user's script or notebook cell would see it:

- ``cold``: an empty persistent compilation cache (a new directory);
- ``warm``: the same directory, in the next process (every program loaded, none compiled);
- ``off``: ``VARIATIONAL_COMPILE_CACHE=off`` (compiled in every session, as before the cache);
- ``same process``: a second fit of the same model in the process of a first one;
- PyMC's ``pm.fit`` ADVI 10,000 steps + 4000 draws (``/work/benchvenv``; its C compile cache
  warm, as after a first run), in the same run, as the reference of the ratios.

The fixed cost of a run is its wall time less the time of the optimisation steps
(``fit.timings["run_s"]``); the steps are the default run's (their number is the fit's
choice). Each configuration is repeated ``--repeats`` times, interleaved; medians are reported
with the range, and the process's CPU time (less sensitive than wall time to other processes on a
shared machine). A JSON line per run is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PYMC_PYTHON = os.environ.get("PYMC_PYTHON", "/work/benchvenv/bin/python")

VI_RUN = r"""
import json, sys, time
import variational as vi
from variational.compilation import stats
from variational.data.datasets import find_shared_data, load_radon, make_radon, radon_model
path = find_shared_data("radon.csv")
d = load_radon(path) if path else make_radon(seed=0)
steps = json.loads(sys.argv[1])
kw = {} if steps is None else {"steps": steps}
def one():
    t0, s0, c0 = time.perf_counter(), stats(), time.process_time()
    fit = vi.fit(radon_model, d.columns, model_kwargs={"n_counties": d.n_counties}, progress=False, **kw)
    t_fit = time.perf_counter()
    diag = fit.diagnose()
    t_diag = time.perf_counter()
    draws = fit.sample(4000)
    t_end = time.perf_counter()
    s = stats() - s0
    tm = fit.timings
    return dict(wall=t_end - t0, cpu=time.process_time() - c0, fit=t_fit - t0, diagnose=t_diag - t_fit, draws=t_end - t_diag,
                steps=int(tm["steps"]), run_s=tm["run_s"], fixed=t_end - t0 - tm["run_s"],
                setup_s=tm["setup_s"], compile_s=tm["compile_s"], compilations=s.compilations,
                cache_hits=s.cache_hits, xla_s=s.compile_s, trace_s=s.trace_s, lower_s=s.lower_s,
                khat=diag.khat, status=diag.status, cache=str(vi.compile_cache().source))
first = one()
print("RESULT", json.dumps(first))
if "--twice" in sys.argv:
    print("RESULT", json.dumps(one()))
"""

PYMC_RUN = r"""
import json, sys, time
import numpy as np
import pymc as pm
sys.path.insert(0, sys.argv[2])
from tta_runners import _pymc_model   # the same PyMC model as benchmarks/time_to_answer.py
z = np.load(sys.argv[1])
d = {"columns": {"county": z["county"], "floor": z["floor"], "log_radon": z["log_radon"]},
     "n_counties": int(z["county"].max()) + 1}
t0, c0 = time.perf_counter(), time.process_time()
with _pymc_model(d):
    approx = pm.fit(10_000, method="advi", progressbar=False)   # PyMC's default optimiser
    idata = approx.sample(4000)
print("RESULT", json.dumps(dict(wall=time.perf_counter() - t0, cpu=time.process_time() - c0)))
"""


def _run(cmd: list[str], env: dict) -> list[dict]:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=HERE.parent)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[:2]} failed:\n{out.stderr[-3000:]}")
    return [json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("RESULT ")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="steps of the fit (default: the fit's default)")
    ap.add_argument("--no-pymc", action="store_true")
    args = ap.parse_args()

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    env.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    steps = json.dumps(args.steps)
    load0 = os.getloadavg()
    rows: dict[str, list[dict]] = {}
    sys.path.insert(0, str(HERE.parent / "src"))
    from variational.data.datasets import find_shared_data, load_radon, make_radon

    path = find_shared_data("radon.csv")
    d = load_radon(path) if path else make_radon(seed=0)
    columns = Path(tempfile.mkdtemp(prefix="vi-radon-")) / "radon.npz"
    np.savez(columns, **d.columns)
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="vi-cache-") as cache:
            cold_env = {**env, "VARIATIONAL_COMPILE_CACHE": cache}
            rows.setdefault("cold cache", []).extend(_run([sys.executable, "-c", VI_RUN, steps], cold_env))
            both = _run([sys.executable, "-c", VI_RUN, steps, "--twice"], cold_env)
            rows.setdefault("warm cache", []).append(both[0])
            rows.setdefault("same process, second fit", []).append(both[1])
        off_env = {**env, "VARIATIONAL_COMPILE_CACHE": "off"}
        rows.setdefault("cache off", []).extend(_run([sys.executable, "-c", VI_RUN, steps], off_env))
        if not args.no_pymc and os.path.exists(PYMC_PYTHON):
            pymc = [PYMC_PYTHON, "-c", PYMC_RUN, str(columns), str(HERE)]
            if r == 0:  # a first run fills PyMC's own compile cache
                _run(pymc, env)
            rows.setdefault("PyMC pm.fit ADVI 10k + 4000 draws", []).extend(_run(pymc, env))
        for name, rs in rows.items():
            print(name, json.dumps(rs[-1]), flush=True)

    pymc = rows.get("PyMC pm.fit ADVI 10k + 4000 draws")
    ref = statistics.median(r["wall"] for r in pymc) if pymc else None
    ref_cpu = statistics.median(r["cpu"] for r in pymc) if pymc else None
    print("\n| run | wall (s) | fixed costs (s) | CPU (s) | steps | XLA compilations | wall / PyMC | CPU / PyMC |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rs in rows.items():
        wall = [r["wall"] for r in rs]
        med, cpu = statistics.median(wall), statistics.median(r["cpu"] for r in rs)
        fixed = f"{statistics.median(r['fixed'] for r in rs):.2f}" if "fixed" in rs[0] else "-"
        comp = statistics.median(r["compilations"] for r in rs) if "compilations" in rs[0] else "-"
        ratio = f"{med / ref:.2f}" if ref else "-"
        cratio = f"{cpu / ref_cpu:.2f}" if ref_cpu else "-"
        print(f"| {name} | {med:.2f} ({min(wall):.2f}-{max(wall):.2f}) | {fixed} | {cpu:.2f} | "
              f"{rs[0].get('steps', 10_000)} | {comp} | {ratio} | {cratio} |")
    print(f"\nload average before and after: {load0} / {os.getloadavg()}")


if __name__ == "__main__":
    main()
