"""What a fit looks like outside: ArviZ's result object, a summary table, its ``repr``.

``to_inference_data`` (``fit.to_arviz()``) builds each group as an ``xarray.Dataset`` with
the dims and coords of :mod:`.labels` and hands them to :mod:`.arviz_compat`, which returns
an ``InferenceData`` on ArviZ 0.x and a ``DataTree`` on 1.x.

Functions of the approximation (:class:`.approximation.Approximation`) and of the run's public
record (history, settings, notes); they never import :class:`~variational.Fit`.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.util import log_likelihood as pointwise

from ..errors import user_stacklevel, whole_number
from . import arviz_compat
from .approximation import Approximation
from .diagnostics import log_joint_fn
from .draws import columns
from .labels import axis_coords, plate_coords, site_dims
from .predictive import latent_from_flat, observed_values, predict_from_flat, site_table

__all__ = ["to_inference_data", "summary_table", "describe", "MAX_PREDICTIVE_VALUES"]

#: default bound on the values of each per-draw data group of ``fit.to_arviz()`` (draws x observed
#: values): the posterior predictive and the pointwise log-likelihood
MAX_PREDICTIVE_VALUES = 20_000_000


def to_inference_data(q: Approximation, run: Any, n: int, key: jax.Array, posterior_predictive: bool | None,
                      coords: Mapping[str, Any] | None, dims: Mapping[str, Sequence[str]] | None,
                      log_likelihood: bool | None = None) -> Any:
    """``fit.to_arviz``: ArviZ's result object from ``n`` draws of ``q`` from ``key``, with the
    history of ``run`` (the fit's public record); see :meth:`Fit.to_arviz`."""
    data = None if q.streamed else q.training_data()
    table = site_table(q.model, data if data is not None else q.trace_data(), q.model_kwargs)
    site_d = {**site_dims(table), **{k: list(v) for k, v in (dims or {}).items()}}
    named = {**plate_coords(table, q.categories), **dict(coords or {})}
    z, log_q = q.draws_and_log_q(key, whole_number("n", n, 1))
    groups = {"posterior": _dataset({k: v[None] for k, v in q.constrain(z).items()}, site_d, named, sample=True)}
    if data is not None and q.logdensity.observed_names and (posterior_predictive is not False
                                                              or log_likelihood is not False):
        groups.update(_data_groups(q, z, key, data, site_d, named, posterior_predictive, log_likelihood))
    stats = {} if data is None else {"lp": _log_joint(q, z, data)}
    if log_q is not None:
        stats["log_q"] = np.asarray(log_q)
    if stats:
        groups["sample_stats"] = _dataset({k: v[None] for k, v in stats.items()}, {}, {}, sample=True)
    covariates = None if data is None else _covariates(data, groups.get("observed_data"), site_d, q.categories)
    if covariates is not None and covariates.data_vars:
        groups["constant_data"] = covariates
    groups["optimization"] = _optimization(run)
    attrs = {"inference_library": "variational", "inference_library_version": _version(),
             "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "method": run.method}
    return arviz_compat.new_tree(groups, attrs)


def _log_joint(q: Approximation, z: Any, data: Mapping[str, Any]) -> np.ndarray:
    """log p(x, z) of each draw on all rows (unconstrained space, as the ELBO sees it)."""
    return np.asarray(log_joint_fn(q.logdensity)(z, {k: jnp.asarray(v) for k, v in data.items()}))


def _data_groups(q: Approximation, z: Any, key: Any, data: Mapping[str, Any], site_d: Mapping, named: Mapping,
                 posterior_predictive: bool | None, log_likelihood: bool | None) -> dict:
    """observed_data, and posterior_predictive and log_likelihood of the draws ``z``.

    The predictive is left out (with a warning) when the model cannot be run forward, for
    example an observed distribution without a sampler. A group asked for with ``None`` (the
    default) is left out, with a warning, when it would hold more than
    :data:`MAX_PREDICTIVE_VALUES` numbers (``n`` draws of every observed value).
    """
    obs = observed_values(q.model, data, q.model_kwargs)
    groups = {"observed_data": _dataset(obs, site_d, named, sample=False)}
    posterior_predictive, log_likelihood = (_within_bound(g, ask, z.shape[0], obs) for g, ask in
                                            (("posterior_predictive", posterior_predictive),
                                             ("log_likelihood", log_likelihood)))
    if log_likelihood:
        ll = pointwise(q.model, latent_from_flat(q, z), parallel=True, **q.model_kwargs, **data)
        groups["log_likelihood"] = _dataset({k: np.asarray(ll[k])[None] for k in obs}, site_d, named, sample=True)
    if posterior_predictive:
        try:
            pred = predict_from_flat(q, z, jax.random.fold_in(key, 1), None, sites=list(obs))
        except Exception as e:  # the other groups are still useful without it
            warnings.warn(f"posterior_predictive left out of the ArviZ data: {e}", stacklevel=user_stacklevel())
        else:
            groups["posterior_predictive"] = _dataset({k: v[None] for k, v in pred.items()}, site_d, named,
                                                      sample=True)
    return groups


def _within_bound(group: str, ask: bool | None, n: int, obs: Mapping[str, Any]) -> bool:
    """Whether to compute ``group`` (``n`` draws of every observed value): ``ask``, or for ``None``
    whether it holds at most :data:`MAX_PREDICTIVE_VALUES` numbers (a warning says so otherwise)."""
    if ask is not None:
        return bool(ask)
    size = n * sum(int(np.size(v)) for v in obs.values())
    if size <= MAX_PREDICTIVE_VALUES:
        return True
    warnings.warn(f"{group} left out of the ArviZ data: {n} draws of the {size // n:,} observed values "
                  f"would hold {size:,} numbers (more than {MAX_PREDICTIVE_VALUES:,}); ask for it with "
                  f"to_arviz(n=..., {group}=True), or use fit.predict on the rows you need", stacklevel=user_stacklevel())
    return False


def _dataset(values: Mapping[str, Any], dims: Mapping[str, Sequence[str]], coords: Mapping[str, Any],
             sample: bool) -> Any:
    """An ``xarray.Dataset`` of ``values`` (with ``chain, draw`` axes first when ``sample``)."""
    import xarray as xr

    lead = ("chain", "draw") if sample else ()
    arrays = {k: np.asarray(v) for k, v in values.items()}
    names: dict[str, list[str]] = {}
    for k, v in arrays.items():
        own = list(dims.get(k, []))[: v.ndim - len(lead)]
        names[k] = own + [f"{k}_dim_{i}" for i in range(len(own), v.ndim - len(lead))]
    shapes = {k: v.shape[len(lead):] for k, v in arrays.items()}
    axis = axis_coords(names, shapes, coords)
    if sample and arrays:
        first = next(iter(arrays.values()))
        axis = {"chain": np.arange(first.shape[0]), "draw": np.arange(first.shape[1]), **axis}
    return xr.Dataset({k: (lead + tuple(names[k]), v) for k, v in arrays.items()}, coords=axis)


def _covariates(data: Mapping[str, Any], observed: Any, site_d: Mapping, categories: Mapping) -> Any:
    """constant_data: the data columns that are not an observed site's values.

    Their row axis takes the name of the observed sites' row plate; categorical columns keep
    their categories in the attribute ``categories``.
    """
    import xarray as xr

    obs = {} if observed is None else {k: np.asarray(v.values) for k, v in observed.data_vars.items()}
    cols = {k: np.asarray(v) for k, v in data.items()}
    covs = {k: v for k, v in cols.items() if not any(o.shape == v.shape and np.array_equal(o, v) for o in obs.values())}
    n = len(next(iter(cols.values()))) if cols else 0
    row = next((site_d[o][0] for o, v in obs.items() if v.ndim and len(v) == n and site_d.get(o)
                and not site_d[o][0].startswith(f"{o}_dim_")), None)
    out = xr.Dataset()
    for k, v in covs.items():
        names = [row or f"{k}_dim_0"] + [f"{k}_dim_{i}" for i in range(1, v.ndim)]
        attrs = {"categories": [str(c) for c in categories[k]]} if k in categories else {}
        out[k] = xr.DataArray(v, dims=names[: v.ndim], attrs=attrs)
    return out


def _optimization(fit: Any) -> Any:
    """The loss per step and what the run did, as attributes (a group of its own)."""
    import xarray as xr

    hist = np.asarray(fit.hist)
    facts = {"method": fit.method, "steps": fit.steps, "skipped_steps": fit.skipped_steps,
             "interrupted": int(bool(fit.interrupted)), "converged": str(fit.converged),
             "message": fit.message, "notes": "\n".join(fit.notes),
             "compile_s": float(fit.timings.get("compile_s", 0.0)), "run_s": float(fit.timings.get("run_s", 0.0))}
    for k in ("optimizer", "num_particles", "stl", "seed", "batch_size"):
        v = fit.settings.get(k)
        if v is not None:
            facts[k] = v if isinstance(v, (int, float, str)) and not isinstance(v, bool) else str(v)
    if fit.learning_rate is not None:
        facts["learning_rate"] = float(fit.learning_rate)
    return xr.Dataset({"loss": (("step",), hist)}, coords={"step": np.arange(1, len(hist) + 1)}, attrs=facts)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("variational")
    except PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


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
