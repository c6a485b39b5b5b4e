"""The markdown page of ``benchmarks/accuracy.py`` (``--md docs/accuracy.md``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchinfo import shown_command
from posteriors import DATA_DIR, KURTOSIS_LIMIT, POSTERIORS, SKEW_LIMIT, read_reference

INTRO = """\
# Accuracy on real posteriors (posteriordb)

`benchmarks/accuracy.py` fits {n_post} posteriors of Stan's
[posteriordb](https://github.com/stan-dev/posteriordb) that have published reference draws (10
chains x 1,000 draws of Stan's NUTS each), translated by hand to NumPyro models
(`benchmarks/posteriors/models.py`: the same priors, constraints, parameter names and shapes), and
compares each fit's 4,000 draws with the reference, parameter by parameter, in the constrained
space:

- **max z**: the largest |mean - reference mean| / reference sd over all scalar parameters
  (the parameter is named);
- **sd ratio**: sd / reference sd, its median and its smallest value over the parameters;
- **verdict**: `fit.diagnose().status` and its k-hat, where the runner has one;
- **wall**: fit + 4,000 draws in seconds, in one process (compilation included), and the
  diagnosis separately; **grad evals**: the gradient evaluations of the fit where the method
  counts them (`fit.grad_evals`: steps x particles for the stochastic families, the solver's own
  count for Laplace, DADVI and Pathfinder, a Hessian-vector product counting as two).

A verdict **contradicts** the measured error when it is "good" while max z > 0.5 or the median sd
ratio is outside 0.7-1.3 (**false good**), "ok" while a mean is more than 1 reference sd off, max
z > 1 (**false ok**), or "bad" on an accurate fit, max z <= 0.3 and every sd ratio in 0.8-1.25
(**false bad**).

Only what the benchmark needs is stored, in `benchmarks/data/posteriordb/`: the data columns the
translations read, and per posterior the reference means and sds (the draws themselves are not
stored), made by `python benchmarks/posteriors/build.py --posteriordb <posteriordb>` from
posteriordb (BSD 3-Clause, (c) Stan Developers; see that folder's README and LICENSE).
"""


def _f(x: Any, fmt: str = "{:.2f}") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not np.isfinite(x):
        return "nan"
    return fmt.format(x)


def _posterior_table(reference: dict) -> list[str]:
    lines = ["| posterior | what it is | parameters | max abs(skew) | max abs(excess kurtosis) | near-Gaussian |",
             "|---|---|---:|---:|---:|---|"]
    for name, spec in POSTERIORS.items():
        ref = reference.get(name)
        if ref is None:
            continue
        m = ref["unconstrained"].values()
        lines.append(f"| {name} | {spec.kind} | {len(ref['params'])} | {max(abs(v['skew']) for v in m):.2f} | "
                     f"{max(abs(v['excess_kurtosis']) for v in m):.2f} | {'yes' if ref['near_gaussian'] else 'no'} |")
    return lines


def _validation_table() -> list[str]:
    path = DATA_DIR / "validation.json"
    if not path.exists():
        return ["(no validation run stored yet: `python benchmarks/accuracy.py --validate`)"]
    doc = json.loads(path.read_text())
    lines = [f"NumPyro NUTS on each translation against the posteriordb reference (`{doc['made_by']}`, "
             f"{doc['date']}, numpyro {doc['numpyro']}): 4 chains, 1,000 warm-up and the draws below each. "
             "A translation is *validated* when max z < 0.1 and every sd ratio is in 0.9-1.1 (the reference's "
             "own Monte Carlo error in a mean is about 0.01 sd, NUTS's here about 0.02).", "",
             "| posterior | draws/chain | max z (parameter) | sd ratio min - max | max r-hat | min ESS | divergences | "
             "wall (s) | |", "|---|---:|---:|---|---:|---:|---:|---:|---|"]
    for name, v in doc["posteriors"].items():
        lines.append(f"| {name} | {v['draws']} | {v['max_z']:.3f} ({v['worst']}) | {v['min_sd_ratio']:.3f} - "
                     f"{v['max_sd_ratio']:.3f} | {v['max_rhat']:.3f} | {v['min_ess']:.0f} | {v['divergences']} | "
                     f"{v['wall']:.0f} | {v['verdict']} |")
    return lines


def _summary_table(meta: dict, summary: dict) -> list[str]:
    lines = ["Fits counts every (posterior, seed); *on target*: max z <= 0.3 and every sd ratio in 0.9-1.1, "
             "counted on the near-Gaussian posteriors.", "",
             "| runner | what it runs | fits | max z <= 0.3 | max z <= 0.5 | near-Gaussian on target | median max z | "
             "false good | false ok | false bad | median wall (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, v in summary.items():
        fits = f"{v['ok']}/{v['fits']}" + (" (not available)" if v["not_available"] == v["fits"] else "") + (
            f", {v['errors']} errors" if v["errors"] else "")
        target = f"{v['near_gaussian_on_target']}/{v['near_gaussian_fits']}" if "near_gaussian_fits" in v else "-"
        lines.append(f"| {k} | {meta['runners'][k]} | {fits} | {v['z_le_0_3']} | {v['z_le_0_5']} | {target} | "
                     f"{_f(v['median_max_z'])} | {v['false_good']} | {v.get('false_ok', 0)} | {v['false_bad']} | "
                     f"{_f(v['median_wall'])} |")
    return lines


# (variational runner, NumPyro runner with the same family and budget)
PAIRS = [("advi_fixed", "numpyro_normal"), ("fullrank_fixed", "numpyro_mvn")]


def _versus_numpyro(results: list) -> list[str]:
    """Posteriors where a variational runner ends further from the reference than NumPyro's matching guide."""
    lines = []
    for ours, theirs in PAIRS:
        z = {}
        for r in results:
            if r.runner in (ours, theirs) and r.status == "ok":
                z.setdefault((r.posterior, r.seed), {})[r.runner] = r.max_z
        both = {k: v for k, v in z.items() if len(v) == 2}
        if not both:
            continue
        worse = [f"{p} (seed {s}: {v[ours]:.2f} vs {v[theirs]:.2f})" for (p, s), v in both.items()
                 if not v[ours] <= 1.1 * v[theirs] + 0.05]
        lines.append(f"- `{ours}` vs `{theirs}`: worse (max z above NumPyro's by more than 10% + 0.05) on "
                     f"{len(worse)} of {len(both)}" + (": " + "; ".join(worse) if worse else "") + ".")
    return lines


def _matrix(results: list, reference: dict) -> list[str]:
    runs = list(dict.fromkeys(r.runner for r in results))
    runs = [k for k in runs if any(r.status == "ok" for r in results if r.runner == k)]
    lines = ["| posterior | near-Gaussian | " + " | ".join(runs) + " |", "|---|---|" + "---:|" * len(runs)]
    for name in dict.fromkeys(r.posterior for r in results):
        cells = []
        for k in runs:
            zs = [r.max_z for r in results if r.posterior == name and r.runner == k and r.status == "ok"]
            flagged = any(r.flag for r in results if r.posterior == name and r.runner == k)
            cell = "-" if not zs else _f(max(zs))
            cells.append(f"**{cell}** !" if flagged else cell)
        ng = "yes" if reference.get(name, {}).get("near_gaussian") else "no"
        lines.append(f"| {name} | {ng} | " + " | ".join(cells) + " |")
    return lines


def _full_table(results: list) -> list[str]:
    lines = ["| posterior | runner | seed | max z (parameter) | sd ratio median | sd ratio min | verdict | k-hat | "
             "wall (s) | diagnose (s) | grad evals | steps | contradiction |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        if r.status != "ok":
            continue
        lines.append(f"| {r.posterior} | {r.runner} | {r.seed} | {_f(r.max_z)} ({r.worst}) | {_f(r.median_sd_ratio)} | "
                     f"{_f(r.min_sd_ratio)} | {r.verdict} | {_f(r.khat)} | {_f(r.wall, '{:.1f}')} | "
                     f"{_f(r.diagnose_wall, '{:.1f}')} | {_f(r.grad_evals, '{:,}')} | {_f(r.steps, '{:,}')} | "
                     f"{r.flag} |")
    bad = [r for r in results if r.status == "error"]
    if bad:
        lines += ["", "Errors:", ""] + [f"- {r.posterior}, {r.runner}, seed {r.seed}: `{r.message}`" for r in bad]
    return lines


def _contradictions(results: list) -> list[str]:
    """Every fit whose verdict contradicts the measured error, with its numbers."""
    flagged = [r for r in results if r.flag]
    if not flagged:
        return ["None: no verdict contradicts the measured error."]
    lines = ["| posterior | runner | seed | verdict | k-hat | max z (parameter) | sd ratio median | sd ratio min | "
             "contradiction |", "|---|---|---:|---|---:|---:|---:|---:|---|"]
    for r in flagged:
        lines.append(f"| {r.posterior} | {r.runner} | {r.seed} | {r.verdict} | {_f(r.khat)} | {_f(r.max_z)} ({r.worst}) | "
                     f"{_f(r.median_sd_ratio)} | {_f(r.min_sd_ratio)} | {r.flag} |")
    return lines


def write_page(path: Path, meta: dict, results: list, summary: dict) -> None:
    reference = read_reference()
    v = meta["versions"]
    out = [INTRO.format(n_post=len(meta["posteriors"])), "## How it was run", "",
           f"`{shown_command(meta['command'])}` on {meta['date']}, variational {v['variational']} at commit "
           f"{meta['commit']}, "
           f"jax {v['jax']}, numpyro {v['numpyro']}, optax {v['optax']}, Python {v['python']}; seeds "
           f"{', '.join(map(str, meta['seeds']))}; fixed-budget runners {meta['steps']:,} steps. Load average at the "
           f"start: {meta['load_average_at_start']} (2-core machine).",
           *([meta["note"]] if meta.get("note") else []), "",
           "## The posteriors and the near-Gaussian rule", "",
           f"A posterior is **near-Gaussian** when every coordinate of the reference draws mapped into the "
           f"model's unconstrained space (`vi.LogDensity(model, data).unconstrain`) has |skewness| < {SKEW_LIMIT} "
           f"and |excess kurtosis| < {KURTOSIS_LIMIT}. On these, a Gaussian family can be exact up to "
           f"the reference's own error, so the targets (max z <= 0.3, sd ratio 0.9-1.1) apply.", "",
           *_posterior_table(reference), "", "## The translations, checked by NUTS", "", *_validation_table(), "",
           "## Results per runner", "", *_summary_table(meta, summary), "",
           *(["Against NumPyro's matching autoguide at the same budget:", "", *_versus_numpyro(results), ""]
             if _versus_numpyro(results) else []),
           "## Verdicts that contradict the error", "", *_contradictions(results), "",
           *([meta["contradictions_note"], ""] if meta.get("contradictions_note") else []),
           "## max z per posterior and runner", "",
           "The largest max z over the seeds; **bold with !**: a verdict that contradicts the error.", "",
           *_matrix(results, reference), "", "## Every fit", "", *_full_table(results), ""]
    path.write_text("\n".join(out))
