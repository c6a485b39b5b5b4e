"""Helpers shared by the example scripts: command line, output folder, claims, summary.md.

Every example parses ``--quick`` and ``--out DIR``, writes PNG figures and a ``summary.md`` into
the output folder, and checks the quantitative claim of the notebook it reproduces: a failed
claim makes ``main`` raise ``SystemExit(1)`` after the summary is written.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402,F401  (re-exported for the examples)
import numpy as np  # noqa: E402


# --smoke: every fit and every reference run is cut to this many steps (draws); the script runs
# end to end and writes its summary, and its claims are reported but not enforced
SMOKE_STEPS = 200
SMOKE = False


def parse_args(name: str, doc: str | None, argv: Sequence[str] | None,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """``--quick``, ``--smoke`` and ``--out DIR`` (default ``out/<name>``), added to ``parser``'s own."""
    global SMOKE
    p = parser or argparse.ArgumentParser(prog=f"variational examples {name}", description=doc,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_flags(p, name)
    a = p.parse_args(argv)
    SMOKE = a.smoke
    a.quick = a.quick or a.smoke
    return a


def _add_flags(p: argparse.ArgumentParser, name: str) -> None:
    """The flags every example takes: ``--quick``, ``--smoke``, ``--out``."""
    p.add_argument("--quick", action="store_true", help="few steps: a smoke test that still checks the claim")
    p.add_argument("--smoke", action="store_true",
                   help=f"at most {SMOKE_STEPS} steps per fit: runs end to end, claims reported, not enforced")
    p.add_argument("--out", default=f"out/{name}", help=f"output folder (default out/{name})")


def budget(n: int) -> int:
    """``n`` steps (or draws), or at most ``SMOKE_STEPS`` of them with ``--smoke``."""
    return min(int(n), SMOKE_STEPS) if SMOKE else int(n)


@dataclass
class Report:
    """Collects figures, free text and checked claims; writes ``summary.md``."""

    name: str
    title: str
    out: Path
    quick: bool = False
    lines: list[str] = field(default_factory=list)
    claims: list[tuple[str, str, bool]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def say(self, text: str = "") -> None:
        """Print a line and keep it for the summary."""
        print(text)
        self.lines.append(text)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "{:.3f}") -> None:
        """A markdown table (printed and kept)."""
        def cell(v: Any) -> str:
            return fmt.format(v) if isinstance(v, (float, np.floating)) else str(v)

        self.say("| " + " | ".join(header) + " |")
        self.say("|" + "---|" * len(header))
        for r in rows:
            self.say("| " + " | ".join(cell(v) for v in r) + " |")
        self.say()

    def check(self, claim: str, value: float | bool, ok: bool) -> bool:
        """Record a claim of the notebook with the measured value and whether it holds."""
        shown = value if isinstance(value, (bool, np.bool_)) else f"{float(value):.4g}"
        self.claims.append((claim, str(shown), bool(ok)))
        print(f"[{'ok' if ok else 'FAILED'}] {claim}: {shown}")
        return bool(ok)

    def savefig(self, fig: Any, filename: str) -> Path:
        path = self.out / filename
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        self.figures.append(filename)
        return path

    def finish(self) -> int:
        """Write ``summary.md``; raise ``SystemExit(1)`` when a claim failed, else return 0."""
        wall = time.perf_counter() - self.t0
        mode = "--smoke" if SMOKE else "--quick" if self.quick else "full"
        md = [f"# {self.title}", "", f"mode: {mode}; wall time {wall:.1f} s", ""]
        md += self.lines + ["", "## Claims", "", "| claim | measured | holds |", "|---|---|---|"]
        md += [f"| {c} | {v} | {'yes' if ok else '**no**'} |" for c, v, ok in self.claims]
        md += ["", "## Figures", ""] + [f"![{f}]({f})" for f in self.figures]
        (self.out / "summary.md").write_text("\n".join(md) + "\n", encoding="utf-8")
        failed = [c for c, _, ok in self.claims if not ok]
        print(f"\nwrote {self.out / 'summary.md'} and {len(self.figures)} figure(s); wall {wall:.1f} s")
        if failed and SMOKE:
            print(f"{self.name}: --smoke runs too few steps to hold: not enforced: {'; '.join(failed)}")
        elif failed:
            raise SystemExit(f"{self.name}: claim(s) failed: {'; '.join(failed)}")
        return 0


def nuts(model: Any, *, seed: int = 0, warmup: int = 1000, samples: int = 2000, chains: int = 1,
         init_values: dict | None = None, **kwargs: Any) -> dict[str, np.ndarray]:
    """Reference posterior draws from NumPyro's NUTS (used as the ground truth of comparisons).

    ``init_values`` (constrained values per site, e.g. a MAP point) start the chain there.
    """
    import jax
    from numpyro.infer import MCMC, NUTS, init_to_median, init_to_value

    strategy = init_to_value(values=init_values) if init_values else init_to_median
    warmup, samples = budget(warmup), budget(samples)
    mcmc = MCMC(NUTS(model, init_strategy=strategy), num_warmup=warmup, num_samples=samples,
                num_chains=chains, progress_bar=False, chain_method="vectorized" if chains > 1 else "sequential")
    mcmc.run(jax.random.PRNGKey(seed), **kwargs)
    return {k: np.asarray(v) for k, v in mcmc.get_samples().items()}


def shared_data(name: str) -> Path | None:
    """A public dataset in a ``shared/data`` folder near the working directory or this checkout."""
    from variational.data.datasets import find_shared_data

    found = find_shared_data(name)
    if found is not None:
        return found
    for base in Path(__file__).resolve().parents:
        for cand in (base / "shared" / "data" / name, base.parent / "shared" / "data" / name):
            if cand.exists():
                return cand
    return None


def moments(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """(mean, sd) over the first axis of draws, or a (mean, sd) pair given as is."""
    if isinstance(x, tuple):
        return np.asarray(x[0]), np.asarray(x[1])
    x = np.asarray(x)
    return x.mean(0), x.std(0)


def z_diff(approx: Any, ref: Any) -> np.ndarray:
    """|mean difference| in reference posterior sds, elementwise (draws or (mean, sd) pairs)."""
    (m, _), (rm, rs) = moments(approx), moments(ref)
    return np.abs(m - rm) / rs


def sd_ratio(approx: Any, ref: Any) -> np.ndarray:
    """Ratio of posterior sds (approximation / reference), elementwise."""
    return moments(approx)[1] / moments(ref)[1]
