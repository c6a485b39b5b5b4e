"""Accuracy of variational's methods (and NumPyro's autoguides) on real posteriors with reference draws.

The posteriors are 16 of Stan's posteriordb (``benchmarks/posteriors/``: hand translations to
NumPyro, the data they need, and per parameter the mean and sd of posteriordb's published
reference draws, stored in ``benchmarks/data/posteriordb/``). For every posterior and every
runner, one fit, then 4000 draws, compared with the reference in the constrained space:

* ``max z``: the largest |mean - reference mean| / reference sd over all scalar parameters;
* the median and the smallest ``sd / reference sd``;
* the verdict (``fit.diagnose().status``) and k-hat where the runner has one;
* wall time (fit + 4000 draws; the diagnosis separately), gradient evaluations where the method
  can count them (the library's ``fit.grad_evals``: ``steps x num_particles`` for the
  stochastic-gradient families, the solver's own count for the direct methods; "-" otherwise).

A verdict *contradicts* the measured error when it is "good" while max z > 0.5 or the median
sd ratio is outside 0.7-1.3 (false good), "ok" while a mean is more than 1 reference sd off
(max z > 1: false ok), or "bad" on an accurate fit (max z <= 0.3 and every sd ratio in
0.8-1.25: false bad); contradictions are flagged and counted per runner.

Runners (``--runners``, comma-separated; default all):

* ``default``: ``vi.fit(model, data)`` with every default, and ``fit.diagnose()``;
* ``advi``, ``fullrank``: ``method="advi"`` / ``"fullrank_advi"`` with the library's defaults;
* ``advi_fixed``, ``fullrank_fixed``: the same at ``--steps`` steps (20,000), adam 1e-2;
* ``numpyro_normal``, ``numpyro_mvn``: NumPyro ``SVI`` with ``AutoNormal`` /
  ``AutoMultivariateNormal``, Adam 1e-2, ``--steps`` steps, their final iterate;
* one runner per name of ``EXTRA_METHODS`` (``pathfinder``, ``laplace``, ``dadvi``):
  ``vi.fit(model, data, method=name)`` with its defaults. A method the library does not know is
  reported "not available". Add a method by adding its name to ``EXTRA_METHODS``, or name it
  ad hoc as ``--runners vi:METHOD``.

Run it from the repository root (or against another source tree with
``PYTHONPATH=/path/to/src``)::

    python benchmarks/accuracy.py                                   # everything, seed 0
    python benchmarks/accuracy.py --quick                           # 3 posteriors, 2,000 steps
    python benchmarks/accuracy.py --posteriors kidiq-kidscore_momiq,sblri-blr --runners default,laplace
    python benchmarks/accuracy.py --seeds 0,1,2 --json out.json --md docs/accuracy.md
    python benchmarks/accuracy.py --validate [--nuts-draws 2000]    # NumPyro NUTS against the references
    python benchmarks/accuracy.py --from-json out.json --md docs/accuracy.md   # the page again, no fitting
    python benchmarks/accuracy.py --from-json a.json,b.json --md docs/accuracy.md   # two runs on one page

The full measurement (every posterior, every runner, seed 0; the page ``docs/accuracy.md``),
from the repository root on a quiet machine, then the same page again from the JSON if needed::

    PYTHONPATH=src python benchmarks/accuracy.py --seeds 0 --json /tmp/accuracy.json --md docs/accuracy.md
    PYTHONPATH=src python benchmarks/accuracy.py --from-json /tmp/accuracy.json --md docs/accuracy.md

(16 posteriors x 10 runners, 160 fits in one process: 1-7 s each at load 4 with 2,000 steps,
a median of 20-35 s at load 20 with 20,000, so from about 15 minutes on a quiet 2-core machine
to over an hour on a busy one; ``--seeds 0,1,2`` triples it.)

``--validate`` checks each translation: NumPyro NUTS (4 chains, 1000 warm-up + ``--nuts-draws``
draws each) against the posteriordb reference; its numbers are stored in
``benchmarks/data/posteriordb/validation.json`` and the ``--md`` page lists them.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import numpyro

import variational as vi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchinfo import load_average, source_commit, unknown_method  # noqa: E402
from posteriors import DATA_DIR, POSTERIORS, Posterior, load, read_reference, scalar_summaries  # noqa: E402

# vi.fit(model, data, method=name) runners with the method's defaults; add a name to add a runner
EXTRA_METHODS = ["pathfinder", "laplace", "dadvi"]
QUICK_POSTERIORS = ["kidiq-kidscore_momiq", "gp_pois_regr-gp_regr", "hmm_example-hmm_example"]
N_DRAWS = 4000
STOCHASTIC = {"advi", "fullrank_advi", "lowrank_advi", "flow"}   # grad evals = steps x num_particles


@dataclass
class Result:
    posterior: str
    runner: str
    seed: int
    status: str                      # "ok", "not available", "error"
    max_z: float = float("nan")
    worst: str = ""
    median_sd_ratio: float = float("nan")
    min_sd_ratio: float = float("nan")
    max_sd_ratio: float = float("nan")
    verdict: str = "-"
    khat: float = float("nan")
    wall: float = float("nan")       # fit + 4000 draws, seconds
    diagnose_wall: float = float("nan")
    grad_evals: int | None = None
    steps: int | None = None
    converged: bool | None = None
    message: str = ""
    flag: str = ""                   # "false good" / "false ok" / "false bad" / ""
    extra: dict = field(default_factory=dict)


# -- runners: each returns (draws, info) ----------------------------------------------------------------
def _vi_runner(label: str, diagnose: bool = True, **options: Any) -> Callable:
    def run(p: Posterior, seed: int, steps: int) -> tuple[dict, dict]:
        opts = {k: (steps if v == "STEPS" else v) for k, v in options.items()}
        t0 = time.perf_counter()
        fit = vi.fit(p.model, p.data, model_kwargs=p.kwargs, seed=seed, progress=False, **opts)
        draws = fit.sample(N_DRAWS, seed=seed + 1)
        info: dict[str, Any] = {"wall": time.perf_counter() - t0, "steps": int(fit.steps)}
        info["grad_evals"] = _grad_evals(fit)
        info["converged"] = getattr(fit, "converged", None)
        info["message"] = str(getattr(fit, "message", "") or "")
        if diagnose:
            t0 = time.perf_counter()
            d = fit.diagnose()
            info.update(diagnose_wall=time.perf_counter() - t0, verdict=d.status, khat=float(d.khat))
        return draws, info
    run.label = label
    return run


def _grad_evals(fit: Any) -> int | None:
    if isinstance(getattr(type(fit), "grad_evals", None), property):   # the library's own count
        return int(fit.grad_evals)
    timings = getattr(fit, "timings", None)
    if isinstance(timings, dict) and timings.get("grad_evals") is not None:
        return int(timings["grad_evals"])
    if getattr(fit, "method", fit.settings.get("method")) in STOCHASTIC:
        return int(fit.steps) * int(fit.settings.get("num_particles", 1))
    return None


def _numpyro_runner(label: str, guide_name: str) -> Callable:
    def run(p: Posterior, seed: int, steps: int) -> tuple[dict, dict]:
        from numpyro.infer import SVI, Trace_ELBO, autoguide

        t0 = time.perf_counter()
        guide = getattr(autoguide, guide_name)(p.model)
        svi = SVI(p.model, guide, numpyro.optim.Adam(1e-2), Trace_ELBO())
        res = svi.run(jax.random.PRNGKey(seed), steps, progress_bar=False, **p.data, **p.kwargs)
        draws = guide.sample_posterior(jax.random.PRNGKey(seed + 1), res.params, sample_shape=(N_DRAWS,))
        draws = {k: np.asarray(v) for k, v in draws.items()}
        return draws, {"wall": time.perf_counter() - t0, "steps": steps, "grad_evals": steps}
    run.label = label
    return run


def runners(steps: int) -> dict[str, Callable]:
    fixed = f"{steps:,} steps, adam 1e-2"
    out = {
        "default": _vi_runner("vi.fit(model, data) + diagnose()"),
        "advi": _vi_runner('method="advi", defaults', method="advi"),
        "fullrank": _vi_runner('method="fullrank_advi", defaults', method="fullrank_advi"),
        "advi_fixed": _vi_runner(f'method="advi", {fixed}', method="advi", steps="STEPS", optimizer="adam",
                                 learning_rate=1e-2),
        "fullrank_fixed": _vi_runner(f'method="fullrank_advi", {fixed}', method="fullrank_advi", steps="STEPS",
                                     optimizer="adam", learning_rate=1e-2),
        "numpyro_normal": _numpyro_runner(f"NumPyro SVI AutoNormal, {fixed}", "AutoNormal"),
        "numpyro_mvn": _numpyro_runner(f"NumPyro SVI AutoMultivariateNormal, {fixed}", "AutoMultivariateNormal"),
    }
    for m in EXTRA_METHODS:
        out[m] = _vi_runner(f'method="{m}", defaults', method=m)
    return out


def flag(r: Result) -> str:
    """'false good' / 'false ok' / 'false bad' when the verdict contradicts the measured error, else ''."""
    if r.verdict == "good" and (not np.isfinite(r.max_z) or r.max_z > 0.5
                                or not 0.7 <= r.median_sd_ratio <= 1.3):
        return "false good"
    if r.verdict == "ok" and not r.max_z <= 1.0:
        return "false ok"
    accurate = r.max_z <= 0.3 and 0.8 <= r.min_sd_ratio and r.max_sd_ratio <= 1.25
    if r.verdict == "bad" and accurate:
        return "false bad"
    return ""


def run_one(p: Posterior, name: str, fn: Callable, seed: int, steps: int) -> Result:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            draws, info = fn(p, seed, steps)
    except Exception as e:  # noqa: BLE001 - a benchmark reports every failure and goes on
        if unknown_method(e):
            return Result(p.name, name, seed, "not available", message=str(e).splitlines()[0][:200])
        return Result(p.name, name, seed, "error",
                      message=f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}",
                      extra={"traceback": traceback.format_exc(limit=3)})
    r = Result(p.name, name, seed, "ok", **scalar_summaries(draws, p.reference),
               **{k: v for k, v in info.items() if k in Result.__dataclass_fields__})
    r.flag = flag(r)
    return r


# -- the NUTS validation of the translations -----------------------------------------------------------
def validate(p: Posterior, draws: int, seed: int = 0) -> dict[str, Any]:
    from numpyro.diagnostics import summary
    from numpyro.infer import MCMC, NUTS

    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(p.model), num_warmup=1000, num_samples=draws, num_chains=4, chain_method="sequential",
                progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), **p.data, **p.kwargs)
    grouped = mcmc.get_samples(group_by_chain=True)
    flat = {k: np.asarray(v).reshape(-1, *np.shape(v)[2:]) for k, v in grouped.items() if k in
            {n.split("[", 1)[0] for n in p.reference}}
    acc = scalar_summaries(flat, p.reference)
    stats = summary({k: np.asarray(v) for k, v in grouped.items() if k in flat}, group_by_chain=True)
    rhat = max(float(np.max(s["r_hat"])) for s in stats.values())
    ess = min(float(np.min(s["n_eff"])) for s in stats.values())
    div = int(np.sum(mcmc.get_extra_fields()["diverging"]))
    return dict(acc, chains=4, draws=draws, max_rhat=rhat, min_ess=ess, divergences=div,
                wall=time.perf_counter() - t0)


def run_validation(names: list[str], draws: int) -> dict[str, Any]:
    out = {}
    for n in names:
        v = validate(load(n), draws)
        ok = v["max_z"] < 0.1 and 0.9 <= v["min_sd_ratio"] and v["max_sd_ratio"] <= 1.1
        v["verdict"] = "validated" if ok else "NOT validated"
        out[n] = v
        print(f"[validate] {n}: max z {v['max_z']:.3f} ({v['worst']}), sd ratio {v['min_sd_ratio']:.3f}-"
              f"{v['max_sd_ratio']:.3f}, r-hat {v['max_rhat']:.3f}, ess {v['min_ess']:.0f}, "
              f"divergences {v['divergences']}, {v['wall']:.0f} s: {v['verdict']}", flush=True)
    return out


# -- the run, the summaries and the page -------------------------------------------------------------------
def versions() -> dict[str, str]:
    import arviz
    import optax
    return {"variational": getattr(vi, "__version__", "?"), "jax": jax.__version__, "numpyro": numpyro.__version__,
            "optax": optax.__version__, "arviz": arviz.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def on_target(r: Result) -> bool:
    """The target on a near-Gaussian posterior: max z <= 0.3 and every sd ratio in 0.9-1.1."""
    return r.status == "ok" and r.max_z <= 0.3 and r.min_sd_ratio >= 0.9 and r.max_sd_ratio <= 1.1


def per_runner(results: list[Result], near_gaussian: set[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """Counts per runner: fits done, max z <= 0.3 / <= 0.5, on target where near-Gaussian, contradictions."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r.runner for r in results):
        rs = [r for r in results if r.runner == name]
        ok = [r for r in rs if r.status == "ok"]
        z = [r.max_z if np.isfinite(r.max_z) else np.inf for r in ok]
        ng = [r for r in ok if r.posterior in near_gaussian]
        out[name] = dict(
            fits=len(rs), ok=len(ok), not_available=sum(r.status == "not available" for r in rs),
            errors=sum(r.status == "error" for r in rs),
            z_le_0_3=sum(v <= 0.3 for v in z), z_le_0_5=sum(v <= 0.5 for v in z),
            near_gaussian_fits=len(ng), near_gaussian_on_target=sum(on_target(r) for r in ng),
            median_max_z=statistics.median(z) if z else float("nan"),
            false_good=sum(r.flag == "false good" for r in ok), false_ok=sum(r.flag == "false ok" for r in ok),
            false_bad=sum(r.flag == "false bad" for r in ok),
            median_wall=statistics.median([r.wall for r in ok]) if ok else float("nan"))
    return out


def _near_gaussian_names() -> set[str]:
    return {n for n, ref in read_reference().items() if ref.get("near_gaussian")}


def merge(docs: list[dict]) -> tuple[dict, list[Result]]:
    """The runs of several ``--json`` files as one: a later file's fit of the same (posterior,
    runner, seed) replaces an earlier one; the meta is the last file's, with every runner and
    posterior, and a note that names each run (command, date, commit)."""
    fields = Result.__dataclass_fields__
    by_key: dict[tuple, Result] = {}
    for doc in docs:
        for r in doc["results"]:
            res = Result(**{k: v for k, v in r.items() if k in fields})
            by_key[(res.posterior, res.runner, res.seed)] = res
    meta = dict(docs[-1]["meta"])
    if len(docs) > 1:
        from benchinfo import shown_command
        runners_, posteriors = {}, []
        for doc in docs:
            runners_.update(doc["meta"]["runners"])
            posteriors += [p for p in doc["meta"]["posteriors"] if p not in posteriors]
        meta.update(runners=runners_, posteriors=posteriors, seeds=sorted({r.seed for r in by_key.values()}))
        parts = "; ".join(f"`{shown_command(d['meta']['command'])}` on {d['meta']['date']} at commit "
                          f"{d['meta']['commit']} (load {d['meta']['load_average_at_start']})" for d in docs)
        meta["note"] = " ".join(filter(None, [meta.get("note", ""), f"The table joins {len(docs)} runs: {parts}."]))
    order = {p: i for i, p in enumerate(meta["posteriors"])}
    rank = {k: i for i, k in enumerate(meta["runners"])}
    results = sorted(by_key.values(), key=lambda r: (order.get(r.posterior, 99), r.seed, rank.get(r.runner, 99)))
    for r in results:
        r.flag = flag(r) if r.status == "ok" else ""
    return meta, results


def render(json_paths: list[Path], md: Path, contradictions_note: str = "") -> None:
    """Write the page again from the ``--json`` files of earlier runs (no fitting); see :func:`merge`."""
    from accuracy_page import write_page

    meta, results = merge([json.loads(p.read_text()) for p in json_paths])
    if contradictions_note:
        meta["contradictions_note"] = contradictions_note
    write_page(md, meta, results, per_runner(results, _near_gaussian_names()))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posteriors", default=None, help="comma-separated posteriordb names (default: all 16)")
    ap.add_argument("--runners", default=None, help="comma-separated runner names (default: all)")
    ap.add_argument("--steps", type=int, default=20_000, help="steps of the fixed-budget runners")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--quick", action="store_true", help=f"{len(QUICK_POSTERIORS)} posteriors, 2,000 steps")
    ap.add_argument("--validate", action="store_true", help="re-run the NUTS validation of the translations")
    ap.add_argument("--nuts-draws", type=int, default=2000, help="NUTS draws per chain for --validate")
    ap.add_argument("--json", type=Path, default=None, help="write the raw numbers here")
    ap.add_argument("--md", type=Path, default=None, help="write the markdown page here (docs/accuracy.md)")
    ap.add_argument("--note", default="", help="a line for the page (machine load, what was measured)")
    ap.add_argument("--contradictions-note", default="",
                    help="a paragraph under the page's list of contradicting verdicts (their cause)")
    ap.add_argument("--from-json", default=None,
                    help="only write --md from these earlier --json files (comma-separated; a later file's "
                         "fit of the same posterior, runner and seed replaces an earlier one)")
    a = ap.parse_args(argv)
    if a.from_json is not None:
        if a.md is None:
            ap.error("--from-json needs --md, the page to write")
        render([Path(p) for p in a.from_json.split(",")], a.md, a.contradictions_note)
        return

    names = a.posteriors.split(",") if a.posteriors else (QUICK_POSTERIORS if a.quick else list(POSTERIORS))
    steps = 2000 if a.quick and a.steps == 20_000 else a.steps
    seeds = [int(s) for s in a.seeds.split(",")]
    table = runners(steps)
    chosen = a.runners.split(",") if a.runners else list(table)
    for name in chosen:  # "vi:METHOD": vi.fit(model, data, method=METHOD) with its defaults, ad hoc
        if name.startswith("vi:"):
            table[name] = _vi_runner(f'method="{name[3:]}", defaults', method=name[3:])
    unknown = sorted(set(chosen) - set(table))
    if unknown:
        ap.error(f"unknown runner(s) {unknown}; choose from {sorted(table)}")
    started = time.strftime("%Y-%m-%d %H:%M")
    load_avg = load_average()

    validation = None
    if a.validate:
        validation = run_validation(names, a.nuts_draws)
        path = DATA_DIR / "validation.json"
        old = json.loads(path.read_text())["posteriors"] if path.exists() else {}
        old.update(validation)
        path.write_text(json.dumps({"made_by": f"python benchmarks/accuracy.py --validate --nuts-draws {a.nuts_draws}",
                                    "date": started, "numpyro": numpyro.__version__,
                                    "posteriors": {k: old[k] for k in sorted(old)}}, indent=1) + "\n")

    results: list[Result] = []
    if not (a.validate and a.runners is None and a.md is None and a.json is None):
        for n in names:
            p = load(n)
            for seed in seeds:
                for name in chosen:
                    r = run_one(p, name, table[name], seed, steps)
                    results.append(r)
                    print(_line(r), flush=True)
    meta = dict(date=started, load_average_at_start=load_avg, steps=steps, seeds=seeds, posteriors=names,
                runners={k: table[k].label for k in chosen}, versions=versions(), commit=source_commit(vi.__file__),
                command="python benchmarks/accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                note=a.note, contradictions_note=a.contradictions_note)
    summary = per_runner(results, _near_gaussian_names())
    for k, v in summary.items():
        print(f"{k:16s} ok {v['ok']}/{v['fits']}  max z<=0.3: {v['z_le_0_3']}  <=0.5: {v['z_le_0_5']}  "
              f"false good {v['false_good']}  false ok {v['false_ok']}  false bad {v['false_bad']}  "
              f"median wall {v['median_wall']:.2f} s")
    if a.json:
        a.json.write_text(json.dumps({"meta": meta, "summary": summary, "results": [asdict(r) for r in results],
                                      "validation": validation}, indent=1, default=str) + "\n")
    if a.md:
        from accuracy_page import write_page
        write_page(a.md, meta, results, summary)


def _line(r: Result) -> str:
    if r.status != "ok":
        return f"{r.posterior:45s} {r.runner:15s} seed {r.seed}: {r.status} {r.message}"
    return (f"{r.posterior:45s} {r.runner:15s} seed {r.seed}: max z {r.max_z:7.3f} ({r.worst}) "
            f"sd ratio med {r.median_sd_ratio:.2f} min {r.min_sd_ratio:.2f}  {r.verdict:4s} k {r.khat:5.2f}  "
            f"{r.wall:6.2f} s  {r.flag}")


if __name__ == "__main__":
    main()
