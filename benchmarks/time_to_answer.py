"""Time to an answer on the radon survey, as the user waits: every runner in a fresh Python process.

The workload is the seeds' hierarchical radon regression (``variational.data.datasets.radon_model``:
county intercepts and floor slopes, Normal(0, 100) / Uniform(0, 100) priors, 175 parameters) on
the Minnesota survey (``shared/data/radon.csv``, 919 homes, 85 counties; generated radon-like data
when the file is absent, and the page says so). Each runner runs in its own fresh process
(``benchmarks/tta_runners.py``), as a user calls it (defaults, progress bars as by default, their
output discarded); the clock starts after the imports and stops after the fit and 4000 draws
(and ``fit.diagnose()`` where the runner's name says so). Accuracy is measured against a 4-chain
NumPyro NUTS reference of the same model stored in ``benchmarks/data/``: the largest
|mean - NUTS mean| / NUTS sd over all 175 parameters (max z) and the median sd / NUTS sd.

Runners (``--runners``; default all): ``vi_default`` (``vi.fit(model, data)`` + diagnose,
compilation cache cold), ``vi_default_warm`` (the same again with the cache the cold run left),
``vi_10k`` (``steps=10_000``, no diagnose), ``vi_auto`` (``steps=None, learning_rate="auto"`` +
diagnose), ``vi_pathfinder`` / ``vi_dadvi`` / ``vi_laplace`` (``method=...``; "not available"
until the library has them), ``pymc_cold`` / ``pymc_warm`` (``pm.fit()`` ADVI 10k with a fresh /
a warmed PyTensor compile directory; Adam 1e-2, as the NumPyro runner and variational's default),
``vi_edit`` / ``pymc_edit`` (the fit after a user edits the model: ``mu_alpha``'s prior sd 100 -> 50,
with the caches the original model left; accuracy is still measured against the original model's
reference, which the edit moves by far less than a posterior sd), ``nutpie`` (exact NUTS on the PyMC
model, 2 chains x (1000 tune + 2000 draws), warm PyTensor cache), ``pmx_pathfinder`` / ``pmx_dadvi`` / ``pmx_laplace``
(pymc-extras, defaults, 4000 draws, warm PyTensor directory), ``numpyro_svi`` (``SVI.run``
AutoNormal 10k, Adam 1e-2, with its default progress bar, which steps from Python one compiled
call at a time), ``numpyro_svi_nobar`` (the same with ``progress_bar=False``: one compiled loop)
and ``numpyro_nuts`` (1 chain, 1000 warm-up + 1000 draws).

Compilation caches: each variational run gets a fresh cache folder through the environment
(``VARIATIONAL_COMPILE_CACHE``, ``VARIATIONAL_CACHE_DIR`` and ``XDG_CACHE_HOME``; with
``--jax-cache`` also ``JAX_COMPILATION_CACHE_DIR``), so "cold" is cold whatever the library's
default folder;
``vi_default_warm`` reuses the folder of the repeat's cold run. PyMC's runners get
``PYTENSOR_FLAGS=base_compiledir=...``: a fresh one for ``pymc_cold``, and one shared folder,
warmed by an untimed pass before the first repeat, for the others.

Run from the repository root (PyMC from its own environment, ``--pymc-python``)::

    python benchmarks/time_to_answer.py [--repeats 3] [--runners vi_default,vi_10k,pymc_warm] \\
        [--pymc-python /work/benchvenv/bin/python] [--md docs/benchmarks.md] [--json out.json]
    python benchmarks/time_to_answer.py --profile            # where vi.fit's wall goes, by phase
    python benchmarks/time_to_answer.py --make-reference     # the NUTS reference (once; stored)
    python benchmarks/time_to_answer.py --from-json out.json --md docs/benchmarks.md [--profile]  # page again

Against another source tree: ``PYTHONPATH=/path/to/src python benchmarks/time_to_answer.py``.
The full measurement (every runner, 3 repeats, the profile; the section of ``docs/benchmarks.md``)::

    PYTHONPATH=src python benchmarks/time_to_answer.py --repeats 3 --runners all --profile \
        --pymc-python /work/benchvenv/bin/python --json /tmp/time_to_answer.json --md docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from benchinfo import load_average, package_versions, shown_command, source_commit  # noqa: E402
from tta_runners import RUNNERS  # noqa: E402

DEFAULT_PYMC_PYTHON = "/work/benchvenv/bin/python"
MARK_START, MARK_END = "<!-- time_to_answer:start -->", "<!-- time_to_answer:end -->"


def reference_path(generated: bool) -> Path:
    return HERE / "data" / ("radon_generated_nuts_reference.json" if generated else "radon_nuts_reference.json")


def load_data(path: str | None) -> tuple[Any, str, bool]:
    from variational.data.datasets import find_shared_data, load_radon, make_radon

    found = Path(path) if path else (find_shared_data("radon.csv") or _near_repo("radon.csv"))
    if found is not None and found.exists():
        return load_radon(found), f"the radon survey ({found})", False
    return make_radon(seed=0), "GENERATED radon-like data (make_radon(seed=0); radon.csv not found)", True


def _near_repo(name: str) -> Path | None:
    for base in [HERE.parent, *HERE.parent.parents]:
        cand = base.parent / "shared" / "data" / name
        if cand.exists():
            return cand
    return None


def make_reference(d: Any, generated: bool, draws: int) -> None:
    import jax
    from numpyro.diagnostics import summary
    from numpyro.infer import MCMC, NUTS

    from tta_runners import SITES, flatten
    from variational.data.datasets import radon_model

    from numpyro import handlers
    from numpyro.infer.reparam import LocScaleReparam

    # the same posterior, written for NUTS: county effects non-centred (alpha = mu + sigma * alpha_decentered),
    # which removes the funnel that gives the centred model's NUTS divergences and a low ESS
    model = handlers.reparam(radon_model, config={"alpha": LocScaleReparam(0), "beta": LocScaleReparam(0)})
    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(model, target_accept_prob=0.95), num_warmup=1000, num_samples=draws, num_chains=4,
                chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), **d.columns, n_counties=d.n_counties, extra_fields=("diverging",))
    grouped = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items() if k in SITES}
    st = summary(grouped, group_by_chain=True)
    cols = flatten({k: v.reshape(-1, *v.shape[2:]) for k, v in grouped.items()}, SITES)
    out = {"made_by": f"python benchmarks/time_to_answer.py --make-reference{' --generated' if generated else ''} "
                      f"--nuts-draws {draws}",
           "what": f"NumPyro NUTS (target_accept_prob=0.95), 4 chains x (1000 warm-up + {draws}) draws, seed 0, "
                   "on radon_model with alpha and beta non-centred (LocScaleReparam(0): the same posterior), "
                   "data " + ("make_radon(seed=0)" if generated else "shared/data/radon.csv"),
           "date": time.strftime("%Y-%m-%d"), "wall_s": round(time.perf_counter() - t0, 1),
           "max_rhat": max(float(np.max(s["r_hat"])) for s in st.values()),
           "min_ess": min(float(np.min(s["n_eff"])) for s in st.values()),
           "divergences": int(np.sum(mcmc.get_extra_fields()["diverging"])),
           "mean": {k: float(v.mean()) for k, v in cols.items()},
           "sd": {k: float(v.std(ddof=1)) for k, v in cols.items()}}
    reference_path(generated).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {reference_path(generated)}: r-hat <= {out['max_rhat']:.3f}, ESS >= {out['min_ess']:.0f}, "
          f"{out['divergences']} divergences, {out['wall_s']} s")


def accuracy(res: dict, ref: dict | None) -> tuple[float, float, str]:
    if ref is None or res.get("status") != "ok":
        return float("nan"), float("nan"), ""
    z = {k: abs(res["mean"][k] - ref["mean"][k]) / ref["sd"][k] for k in ref["mean"]}
    ratios = [res["sd"][k] / ref["sd"][k] for k in ref["sd"]]
    worst = max(z, key=z.get)
    return z[worst], float(np.median(ratios)), worst


def _env(runner: str, vi_dir: Path, pytensor_dir: Path, jax_cache: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", "")
    src = str(Path(__import__("variational").__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, str(HERE)] + ([env["PYTHONPATH"]] if env["PYTHONPATH"] else []))
    if RUNNERS[runner][0] == "pymc":
        env["PYTENSOR_FLAGS"] = f"base_compiledir={pytensor_dir}"
    env["VARIATIONAL_COMPILE_CACHE"] = str(vi_dir / "variational")   # the library's own variable
    env["VARIATIONAL_CACHE_DIR"] = str(vi_dir / "variational")
    env["XDG_CACHE_HOME"] = str(vi_dir / "xdg")
    if jax_cache:
        env["JAX_COMPILATION_CACHE_DIR"] = str(vi_dir / "jax")
    return env


def run_worker(runner: str, data: Path, work: Path, env: dict, python: str, timeout: float, seed: int) -> dict:
    out = work / f"{runner}-{time.monotonic_ns()}.json"
    cmd = [python, str(HERE / "tta_runners.py"), runner, str(data), str(out), "--seed", str(seed)]
    # its own process group, so that a timeout also ends the processes a runner forked (pathfinder's pool)
    err = work / f"{out.stem}.stderr"
    with err.open("w") as f:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return {"runner": runner, "status": "error", "message": f"timed out after {timeout:.0f} s"}
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)   # anything the runner left behind
    if not out.exists():
        tail = err.read_text(errors="replace").strip().splitlines()[-3:]
        return {"runner": runner, "status": "error", "message": f"exit {p.returncode}: {' | '.join(tail)}"[:400]}
    return json.loads(out.read_text())


def run_all(a: argparse.Namespace, names: list[str], data_npz: Path, work: Path) -> dict[str, list[dict]]:
    pymc_python = a.pymc_python if Path(a.pymc_python).exists() else None
    warm_pytensor = work / "pytensor-warm"
    results: dict[str, list[dict]] = {n: [] for n in names}

    def one(n: str, vi_dir: Path, pytensor_dir: Path) -> dict:
        env_kind = RUNNERS[n][0]
        if env_kind == "pymc" and pymc_python is None:
            return {"runner": n, "status": "not available", "message": f"no PyMC environment at {a.pymc_python}"}
        python = pymc_python if env_kind == "pymc" else sys.executable
        return run_worker(n, data_npz, work, _env(n, vi_dir, pytensor_dir, a.jax_cache), python, a.timeout, a.seed)

    original = work / "pytensor-original"   # warmed by the original model only: each edit run gets a copy
    if not a.no_warmup:  # one untimed pass of the runners that use the shared warm PyTensor folder
        for n in [n for n in names if RUNNERS[n][0] == "pymc" and n not in ("pymc_cold", "pymc_edit")]:
            r = one(n, Path(tempfile.mkdtemp(dir=work)), warm_pytensor)
            print(f"[warm-up] {n}: {r['status']} {r.get('wall', float('nan')):.1f} s", flush=True)
        if "pymc_edit" in names:
            r = one("pymc_warm", Path(tempfile.mkdtemp(dir=work)), original)
            print(f"[warm-up] pymc_warm (for the edit): {r['status']}", flush=True)
    for rep in range(a.repeats):
        vi_cold = Path(tempfile.mkdtemp(prefix="vi-cache-", dir=work))
        for n in names:
            # the cold run fills vi_cold; the warm run and the edit (another model) reuse it
            vi_dir = vi_cold if n in ("vi_default", "vi_default_warm", "vi_edit") else Path(tempfile.mkdtemp(dir=work))
            pt_dir = Path(tempfile.mkdtemp(prefix="pytensor-cold-", dir=work)) if n == "pymc_cold" else warm_pytensor
            if n == "pymc_edit":
                pt_dir = Path(tempfile.mkdtemp(prefix="pytensor-edit-", dir=work)) / "d"
                if original.exists():
                    shutil.copytree(original, pt_dir)
            r = one(n, vi_dir, pt_dir)
            results[n].append(r)
            extra = f"{r.get('wall', float('nan')):6.2f} s" if r["status"] == "ok" else r.get("message", "")
            print(f"[repeat {rep + 1}/{a.repeats}] {n:16s} {r['status']:13s} {extra}", flush=True)
            if n in ("pymc_cold", "pymc_edit"):
                shutil.rmtree(pt_dir, ignore_errors=True)
    return results


def summarize(results: dict[str, list[dict]], ref: dict | None) -> list[dict]:
    rows = []
    for n, rs in results.items():
        ok = [r for r in rs if r["status"] == "ok"]
        row: dict[str, Any] = {"runner": n, "label": RUNNERS[n][1], "runs": len(rs), "ok": len(ok)}
        if not ok:
            row["status"] = rs[0]["status"] if rs else "not run"
            row["message"] = rs[0].get("message", "") if rs else ""
            rows.append(row)
            continue
        walls = [r["wall"] for r in ok]
        acc = [accuracy(r, ref) for r in ok]
        mid = sorted(range(len(ok)), key=lambda i: walls[i])[len(ok) // 2]
        row.update(status="ok", wall=statistics.median(walls), wall_min=min(walls), wall_max=max(walls),
                   max_z=statistics.median(x[0] for x in acc), worst=acc[mid][2],
                   median_sd_ratio=statistics.median(x[1] for x in acc),
                   verdict=ok[mid].get("verdict", "-"), khat=ok[mid].get("khat"), steps=ok[mid].get("steps"),
                   grad_evals=ok[mid].get("grad_evals"), converged=ok[mid].get("converged"),
                   t_fit=ok[mid].get("t_fit"), t_draws=ok[mid].get("t_draws"), t_diagnose=ok[mid].get("t_diagnose"),
                   divergences=ok[mid].get("divergences"), note=ok[mid].get("note", ""))
        rows.append(row)
    base = next((r["wall"] for r in rows if r["runner"] == "pymc_warm" and r.get("status") == "ok"), None)
    for r in rows:
        r["vs_pymc"] = r["wall"] / base if base and r.get("status") == "ok" else None
    return rows


def _f(x: Any, fmt: str = "{:.2f}") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return fmt.format(x)


def table(rows: list[dict]) -> list[str]:
    lines = ["| runner | wall (s), median [min-max] | / `pm.fit` warm | max z (parameter) | median sd ratio | "
             "verdict (k-hat) | steps | grad evals | fit / draws / diagnose (s), notes |",
             "|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['label']} | {r.get('status', '-')} | | | | | | | {r.get('message', '')[:120]} |")
            continue
        verdict = "-" if r["verdict"] in (None, "-") else f"{r['verdict']} ({_f(r['khat'])})"
        parts = (r.get("note") or "-") if r.get("t_fit") is None else (
            f"{r['t_fit']:.2f} / {r['t_draws']:.2f} / {_f(r.get('t_diagnose'))}"
            + ("" if r["runner"] in ("vi_default", "vi_default_warm", "vi_edit", "vi_auto") else " (not in wall)"))
        lines.append(f"| {r['label']} | {r['wall']:.2f} [{r['wall_min']:.2f}-{r['wall_max']:.2f}] | "
                     f"{_f(r['vs_pymc'])} | {_f(r['max_z'])} ({r['worst']}) | {_f(r['median_sd_ratio'])} | "
                     f"{verdict} | {_f(r['steps'], '{:,}')} | {_f(r['grad_evals'], '{:,}')} | {parts} |")
    return lines


def profile_lines(prof: dict) -> list[str]:
    lines = ["| phase | wall (s) | JAX tracing (s) | lowering (s) | XLA compile (s) | compilations | "
             "persistent-cache hits |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, p in prof["phases"].items():
        lines.append(f"| {label} | {p['wall']:.2f} | {p['trace']:.2f} | {p['lower']:.2f} | {p['compile']:.2f} | "
                     f"{p['compilations']} | {p['cache_hits']} |")
    lines += ["", f"Steps of the fit: {prof['steps']:,}. Library functions by cumulative time (cProfile, all "
                  "phases together):", "", "```"]
    lines += [f"{c:8.3f} s  {n}" for c, n in prof["top"][:15]] + ["```"]
    return lines


def write_md(path: Path, meta: dict, rows: list[dict], prof: dict | None) -> None:
    v = meta["versions"]
    body = [MARK_START, "## Time to an answer: the radon survey, every runner in a fresh process", "",
            "Made by `benchmarks/time_to_answer.py` (its docstring says exactly what each runner does and how "
            "caches are set). Wall: from after the imports to the end of fit + 4000 draws (+ `fit.diagnose()` "
            "where the runner says so), median of the repeats, runners interleaved within each repeat. "
            "Accuracy against a 4-chain NumPyro NUTS reference (`benchmarks/data/"
            f"{meta['reference_file']}`): max z = the largest |mean - NUTS mean| / NUTS sd over the "
            "175 parameters; median sd ratio = median of sd / NUTS sd. Ratios are to PyMC's `pm.fit` "
            "(warm PyTensor cache) in the same run. Accuracy on 16 real posteriors with published reference "
            "draws is in [accuracy.md](accuracy.md).", "",
            f"Measured {meta['date']} with `{shown_command(meta['command'])}`: {meta['data']}; "
            f"variational {v.get('variational')} "
            f"at commit {meta['commit']}, jax {v.get('jax')}, numpyro {v.get('numpyro')}, pymc {v.get('pymc', '-')}, "
            f"pymc-extras {v.get('pymc-extras', '-')}, pytensor {v.get('pytensor', '-')}, Python {v.get('python')}; "
            f"{meta['repeats']} repeat{'s' if meta['repeats'] != 1 else ''}, seed {meta['seed']}. "
            f"Load average {meta['load_before']} before and "
            f"{meta['load_after']} after, on the 2-core machine{meta['load_note']}.",
            *(["", meta["note"]] if meta.get("note") else []), "", *table(rows), ""]
    if prof is not None:
        when = f", {prof['date']}, load average {prof['load_before']} before and {prof['load_after']} after" \
            if "date" in prof else ""
        body += ["Where `vi.fit(model, data)`'s wall goes (`python benchmarks/time_to_answer.py --profile`, one fresh "
                 f"process, cache cold{when}):", "", *profile_lines(prof), ""]
    body.append(MARK_END)
    text = "\n".join(body) + "\n"
    if path.exists() and MARK_START in path.read_text():
        old = path.read_text()
        head, rest = old.split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1] if MARK_END in rest else ""
        text = head + text.rstrip("\n") + tail
    elif path.exists():
        text = path.read_text().rstrip("\n") + "\n\n" + text
    path.write_text(text)


def run_profile(a: argparse.Namespace, data_npz: Path, work: Path) -> dict:
    out = work / "profile.json"
    load = load_average()
    subprocess.run([sys.executable, str(HERE / "tta_runners.py"), "profile", str(data_npz), str(out),
                    "--seed", str(a.seed)], env=_env("vi_default", work / "prof", work, a.jax_cache),
                   check=True, stdout=subprocess.DEVNULL)
    prof = json.loads(out.read_text())
    prof.update(date=time.strftime("%Y-%m-%d %H:%M"), load_before=load, load_after=load_average())
    print("\n".join(profile_lines(prof)), flush=True)
    return prof


def rerender(a: argparse.Namespace, d: Any) -> None:
    """``--from-json``: the page again from an earlier ``--json`` (its runs), with a fresh ``--profile``."""
    doc = json.loads(a.from_json.read_text())
    ref_file = HERE / "data" / doc["meta"]["reference_file"]
    rows = summarize(doc["raw"], json.loads(ref_file.read_text()) if ref_file.exists() else None)
    prof = doc.get("profile")
    if a.profile:
        with tempfile.TemporaryDirectory(prefix="time_to_answer-") as tmp:
            work = Path(tmp)
            np.savez(work / "radon.npz", county=d.county, floor=d.floor, log_radon=d.log_radon,
                     n_counties=d.n_counties)
            prof = run_profile(a, work / "radon.npz", work)
    print("\n".join(table(rows)))
    if a.json:
        a.json.write_text(json.dumps(dict(doc, rows=rows, profile=prof), indent=1, default=str) + "\n")
    if a.md:
        write_md(a.md, doc["meta"], rows, prof)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runners", default=None, help=f"comma-separated, from {', '.join(RUNNERS)}; or all "
                    "(the default, but with --profile only the profile runs unless --runners is given)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None, help="radon.csv (default: shared/data/radon.csv when found)")
    ap.add_argument("--pymc-python", default=DEFAULT_PYMC_PYTHON, help="Python of an environment with PyMC")
    ap.add_argument("--jax-cache", action="store_true", help="also point JAX_COMPILATION_CACHE_DIR at the run's folder")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up of the PyTensor folder")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds before a runner is stopped")
    ap.add_argument("--profile", action="store_true", help="where vi.fit's wall goes (one fresh process)")
    ap.add_argument("--make-reference", action="store_true", help="run NUTS and store the reference")
    ap.add_argument("--nuts-draws", type=int, default=2500, help="NUTS draws per chain for --make-reference")
    ap.add_argument("--md", type=Path, default=None, help="write (or update the section of) this markdown file")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--note", default="", help="a line for the page")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="no runs: write --md (and --json) from this earlier --json, with --profile run afresh")
    a = ap.parse_args(argv)

    d, data_label, generated = load_data(a.data)
    print(f"data: {data_label}", flush=True)
    if a.make_reference:
        make_reference(d, generated, a.nuts_draws)
        return
    if a.from_json is not None:
        rerender(a, d)
        return
    names = a.runners.split(",") if a.runners and a.runners != "all" else list(RUNNERS)
    bad = [n for n in names if n not in RUNNERS]
    if bad:
        ap.error(f"unknown runner(s) {bad}; choose from {list(RUNNERS)}")
    if "vi_default_warm" in names and "vi_default" not in names:
        names.insert(names.index("vi_default_warm"), "vi_default")
    ref_file = reference_path(generated)
    ref = json.loads(ref_file.read_text()) if ref_file.exists() else None
    if ref is None:
        print(f"no NUTS reference at {ref_file}: run --make-reference first; accuracy is left out", flush=True)
    load_before = load_average()
    started = time.strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory(prefix="time_to_answer-") as tmp:
        work = Path(tmp)
        data_npz = work / "radon.npz"
        np.savez(data_npz, county=d.county, floor=d.floor, log_radon=d.log_radon, n_counties=d.n_counties)
        prof = None
        if a.profile:
            prof = run_profile(a, data_npz, work)
            if a.runners is None:
                names = []
        results = run_all(a, names, data_npz, work) if names else {}
    rows = summarize(results, ref)
    load_after = load_average()
    busy = any(x != "?" and float(x.split()[0]) > 2.5 for x in (load_before, load_after))
    meta = dict(date=started, command="python benchmarks/time_to_answer.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), data=data_label, generated=generated, repeats=a.repeats,
        seed=a.seed, versions=package_versions(a.pymc_python if Path(a.pymc_python).exists() else None),
        commit=source_commit(__import__("variational").__file__), load_before=load_before, load_after=load_after,
        load_note=" (under load: other work was running, so every wall is inflated)" if busy else "",
        reference_file=ref_file.name, note=a.note, platform=platform.platform())
    if rows:
        print("\n".join(table(rows)))
    if a.json:
        a.json.write_text(json.dumps({"meta": meta, "rows": rows, "raw": results, "profile": prof}, indent=1,
                                     default=str) + "\n")
    if a.md:
        write_md(a.md, meta, rows, prof)


if __name__ == "__main__":
    main()
