"""What a fit looks like outside: an ArviZ object, a summary table, its ``repr``.

Functions of a fit's draws and history; they take the fit duck-typed and never import it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .draws import columns

__all__ = ["to_inference_data", "summary_table", "describe"]


def to_inference_data(fit: Any, n: int, seed: int | None, posterior_predictive: bool,
                      coords: Mapping[str, Any] | None, dims: Mapping[str, Sequence[str]] | None) -> Any:
    """``fit.to_arviz``: posterior (and predictive) groups of ``n`` draws, the loss history."""
    import arviz as az
    import xarray as xr

    from .predictive import arviz_groups

    groups = arviz_groups(fit, n, seed, posterior_predictive)
    idata = az.from_dict(**groups, coords=dict(coords or {}), dims={k: list(v) for k, v in (dims or {}).items()})
    stats = xr.Dataset({"loss": (("step",), fit.hist), "skipped_steps": ((), fit.skipped_steps)},
                       attrs={"method": fit.method})
    idata.add_groups({"sample_stats": stats})
    return idata


def summary_table(draws: Mapping[str, np.ndarray]) -> Any:
    """A pandas DataFrame of mean, sd and 3%/97% quantiles per scalar element of ``draws``."""
    import pandas as pd

    rows = []
    for name, v in draws.items():
        for label, col in columns(name, np.asarray(v)):
            rows.append((label, col.mean(), col.std(), *np.quantile(col, [0.03, 0.97])))
    return pd.DataFrame(rows, columns=["name", "mean", "sd", "q3%", "q97%"]).set_index("name")


def describe(fit: Any, max_rows: int = 12) -> str:
    """``repr(fit)``: method, steps, final average loss, the diagnosis and the summary's first rows."""
    hist = fit.hist
    tail = hist[-max(1, len(hist) // 10):] if len(hist) else hist
    tail = tail[np.isfinite(tail)]
    avg = f"{tail.mean():.6g}" if tail.size else "n/a"
    head = (f"Fit(method={fit.method!r}, steps={fit.steps}, final average loss={avg}, "
            f"skipped_steps={fit.skipped_steps}" + (f", {fit.message}" if fit.message else "") + ")")
    try:
        head += "\n  " + repr(fit.diagnose())
    except Exception as e:  # the repr must never fail
        head += f"\n  (diagnosis unavailable: {e})"
    try:
        table = fit.summary()
    except Exception as e:  # the repr must never fail
        return head + f"\n  (summary unavailable: {e})"
    more = "\n  ..." if len(table) > max_rows else ""
    body = table.iloc[:max_rows].to_string(float_format=lambda x: f"{x: .4g}")
    return head + "\n" + "\n".join("  " + line for line in body.splitlines()) + more
