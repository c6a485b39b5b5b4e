"""What a fit looks like outside: an ArviZ object, a summary table, its ``repr``.

Functions of a fit's draws and history; they take the fit duck-typed and never import it.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from .draws import columns

__all__ = ["to_inference_data", "summary_table", "describe", "arviz_groups", "MAX_PREDICTIVE_VALUES"]


def to_inference_data(fit: Any, n: int, seed: int | None, posterior_predictive: bool | None,
                      coords: Mapping[str, Any] | None, dims: Mapping[str, Sequence[str]] | None) -> Any:
    """``fit.to_arviz``: posterior (and predictive) groups of ``n`` draws, the loss history."""
    import arviz as az
    import xarray as xr

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


#: default bound on the posterior predictive values ``fit.to_arviz()`` computes (draws x values)
MAX_PREDICTIVE_VALUES = 20_000_000


def arviz_groups(fit: Any, n: int, seed: int | None, posterior_predictive: bool | None = None) -> dict[str, dict]:
    """posterior, posterior_predictive and observed_data groups from the same ``n`` draws.

    The posterior predictive is left out (with a warning) when the model cannot be run
    forward, for example an observed distribution without a sampler, and, unless
    ``posterior_predictive=True``, when it would hold more than :data:`MAX_PREDICTIVE_VALUES`
    values (``n`` draws of every observed value: a million rows make 4 GB at 1000 draws).
    """
    from .predictive import _check_n, observed_values, predict_from_flat, training_data

    n = _check_n(n)
    key = fit._next_key(seed)
    z = fit._draw_flat(n, key)
    groups: dict[str, dict] = {"posterior": {k: v[None] for k, v in fit._constrain_draws(z).items()}}
    if posterior_predictive is not False and fit.logdensity.observed_names:
        try:
            obs = observed_values(fit.model, training_data(fit), fit.model_kwargs)
            size = n * sum(int(np.size(v)) for v in obs.values())
            if posterior_predictive is None and size > MAX_PREDICTIVE_VALUES:
                warnings.warn(f"posterior_predictive left out of the InferenceData: {n} draws of the "
                              f"{size // n:,} observed values would hold {size:,} numbers (more than "
                              f"{MAX_PREDICTIVE_VALUES:,}); ask for it with to_arviz(n=..., "
                              f"posterior_predictive=True), or use fit.predict on the rows you need",
                              stacklevel=3)
                return {**groups, "observed_data": obs}
            pred = predict_from_flat(fit, z, jax.random.fold_in(key, 1), None, sites=list(obs))
        except Exception as e:  # the posterior group is still useful without it
            warnings.warn(f"posterior_predictive left out of the InferenceData: {e}", stacklevel=3)
        else:
            groups["posterior_predictive"] = {k: v[None] for k, v in pred.items()}
            groups["observed_data"] = obs
    return groups
