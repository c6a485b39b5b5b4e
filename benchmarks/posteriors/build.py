"""Make ``benchmarks/data/posteriordb/`` from a copy of Stan's posteriordb (run once; the output is committed).

For every posterior of :data:`posteriors.POSTERIORS` it reads, from posteriordb,

* the data file (``posterior_database/data/data/DATA.json.zip``): the columns the translation
  uses are written to ``data/DATA.json``;
* the reference draws (``posterior_database/reference_posteriors/draws/draws/NAME.json.zip``,
  10 chains x 1,000 draws of Stan's NUTS): per scalar parameter the mean and sd (constrained
  space) go to ``reference.json``; the draws are then mapped into the model's unconstrained space
  (``vi.LogDensity(model, data).unconstrain``) and the skewness and excess kurtosis of each
  unconstrained coordinate are stored too (named ``site[j]``, j the 1-based position in the
  site's unconstrained vector). The draws themselves are not stored.

Run from the repository root, with posteriordb as a checkout or as a bare git mirror::

    python benchmarks/posteriors/build.py --posteriordb /path/to/posteriordb            # a checkout
    python benchmarks/posteriors/build.py --posteriordb /path/to/posteriordb.git --git  # a bare mirror
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from scipy import stats  # noqa: E402

import variational as vi  # noqa: E402
from posteriors import DATA_DIR, KURTOSIS_LIMIT, POSTERIORS, SKEW_LIMIT, load, near_gaussian  # noqa: E402

# columns of the posteriordb data files that no translation reads
UNUSED = {"N", "K", "D", "N_t", "year", "k", "mom_hs_new", "mom_iq_new"}
LICENSE = ("posteriordb (https://github.com/stan-dev/posteriordb), BSD 3-Clause License, "
           "Copyright (c) 2011-2024 Stan Developers and their Assignees; see LICENSE.posteriordb")


class Source:
    """Files of posteriordb, from a checkout or a bare git mirror."""

    def __init__(self, root: Path, git: bool) -> None:
        self.root, self.git = root, git
        self.commit = self._run("rev-parse", "HEAD").strip() if git else "checkout"

    def _run(self, *args: str) -> str:
        return subprocess.run(["git", "--git-dir", str(self.root), *args], check=True,
                              capture_output=True, text=True).stdout

    def read(self, path: str) -> bytes:
        if self.git:
            return subprocess.run(["git", "--git-dir", str(self.root), "show", f"HEAD:{path}"],
                                  check=True, capture_output=True).stdout
        return (self.root / path).read_bytes()

    def json_zip(self, path: str) -> Any:
        z = zipfile.ZipFile(io.BytesIO(self.read(path)))
        return json.loads(z.read(z.namelist()[0]))


def write_data(src: Source, data_name: str) -> None:
    raw = src.json_zip(f"posterior_database/data/data/{data_name}.json.zip")
    info = json.loads(src.read(f"posterior_database/data/info/{data_name}.info.json"))
    out = {"source": f"posteriordb data '{data_name}' (posterior_database/data/data/{data_name}.json.zip, "
                     f"commit {src.commit})",
           "title": info.get("title"), "origin": info.get("urls"), "license": LICENSE,
           "data": {k: v for k, v in raw.items() if k not in UNUSED}}
    path = DATA_DIR / "data" / f"{data_name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")


def _site_values(cols: dict[str, np.ndarray], shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """Scalar columns ``beta[1]``... -> site arrays ``(n, *shape)``."""
    out = {}
    for site, shape in shapes.items():
        if not shape:
            out[site] = cols[site]
            continue
        parts = [cols[f"{site}[{','.join(str(i + 1) for i in idx)}]"] for idx in np.ndindex(*shape)]
        out[site] = np.stack(parts, axis=-1).reshape(len(parts[0]), *shape)
    return out


def reference_summary(src: Source, name: str) -> dict[str, Any]:
    chains = src.json_zip(f"posterior_database/reference_posteriors/draws/draws/{name}.json.zip")
    info = json.loads(src.read(f"posterior_database/reference_posteriors/draws/info/{name}.info.json"))
    post = json.loads(src.read(f"posterior_database/posteriors/{name}.json"))
    cols = {k: np.concatenate([np.asarray(c[k], float) for c in chains]) for k in chains[0]}
    p = load(name, reference={})
    ld = vi.LogDensity(p.model, p.data, p.kwargs)
    sites = set(post["dimensions"])
    if sites != set(ld.names):
        raise ValueError(f"{name}: posteriordb's parameters {sorted(sites)} != the translation's {ld.names}")
    params = {k: {"mean": float(v.mean()), "sd": float(v.std(ddof=1))} for k, v in cols.items()
              if k.split("[", 1)[0] in sites}
    values = _site_values(cols, ld.shapes)
    z = np.asarray(jax.vmap(ld.unconstrain)({k: jnp.asarray(v) for k, v in values.items()}))
    moments = {}
    for s in ld.layout:
        for j in range(s.size):
            x = z[:, s.offset + j]
            moments[f"{s.name}[{j + 1}]" if s.size > 1 or s.shape else s.name] = {
                "skew": float(stats.skew(x)), "excess_kurtosis": float(stats.kurtosis(x))}
    args = info["inference"]["method_arguments"]
    return {"params": params, "unconstrained": moments, "near_gaussian": near_gaussian(moments),
            "reference_draws": f"{len(chains)} chains x {len(cols[next(iter(cols))]) // len(chains)} draws, "
                               f"{info['inference']['method']} (" + ", ".join(f"{k}={v}" for k, v in args.items()
                                                                           if k in ("chains", "iter", "warmup", "thin"))
                               + ")",
            "source": f"posteriordb posterior '{name}' (reference_posteriors/draws/draws/{name}.json.zip, "
                      f"models/stan/{post['model_name']}.stan, commit {src.commit})"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posteriordb", required=True, type=Path, help="posteriordb checkout or bare git mirror")
    ap.add_argument("--git", action="store_true", help="--posteriordb is a (bare) git directory")
    ap.add_argument("--posteriors", default=None, help="comma-separated subset (default: all)")
    a = ap.parse_args(argv)
    src = Source(a.posteriordb, a.git)
    names = a.posteriors.split(",") if a.posteriors else list(POSTERIORS)
    for data_name in sorted({POSTERIORS[n].data_name for n in names}):
        write_data(src, data_name)
    path = DATA_DIR / "reference.json"
    old = json.loads(path.read_text())["posteriors"] if path.exists() else {}
    for n in names:
        old[n] = reference_summary(src, n)
        flag = "near-Gaussian" if old[n]["near_gaussian"] else "not near-Gaussian"
        print(f"{n}: {len(old[n]['params'])} parameters, {flag}", flush=True)
    doc = {"made_by": "python benchmarks/posteriors/build.py --posteriordb <posteriordb> [--git]",
           "date": datetime.date.today().isoformat(), "license": LICENSE,
           "near_gaussian_rule": f"every unconstrained coordinate: |skewness| < {SKEW_LIMIT} and "
                                 f"|excess kurtosis| < {KURTOSIS_LIMIT} (reference draws mapped by "
                                 f"vi.LogDensity(model, data).unconstrain)",
           "posteriors": {k: old[k] for k in sorted(old)}}
    path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
