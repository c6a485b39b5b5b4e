"""The two ArviZ generations behind one small interface; the only place that asks which one.

ArviZ 0.x keeps results in ``arviz.InferenceData`` and has ``az.psislw`` and
``az.summary(hdi_prob=)``. ArviZ 1.x (``arviz-base``, ``arviz-stats``, ``arviz-plots``) keeps
them in an ``xarray.DataTree``; its PSIS (``arviz_stats``' ``psislw``) follows the LOO
convention, smoothing the weights ``exp(-x)`` of the log-likelihoods ``x`` it is given, so
log importance ratios go in negated; and its summary takes ``ci_prob=``/``ci_kind=`` and
names the interval columns ``hdi94_lb``/``hdi94_ub``. The rest of the library calls the
functions below and never looks at ArviZ's version.

The two generations differ in one detail of PSIS: the tail length. 0.x fits the generalised
Pareto to the largest ``ceil(min(S / 5, 3 sqrt(S)))`` weights, 1.x to the largest
``floor(3 sqrt(S))`` (``S / 5`` up to 225 draws); k-hat agrees to a few hundredths on the
same weights (tested with stored 0.x values).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..families._psis import ARVIZ_1, psislw  # noqa: F401  (PSIS of both generations lives below this layer)

__all__ = ["ARVIZ_1", "arviz_version", "new_tree", "group_names", "psislw", "summary", "from_numpyro",
           "from_draws"]


def arviz_version() -> tuple[int, int]:
    """(major, minor) of the installed ArviZ (read from its metadata: ArviZ is imported only by
    the functions that use it)."""
    import importlib.metadata

    major, minor = (int(p) for p in importlib.metadata.version("arviz").split(".")[:2])
    return major, minor


def new_tree(groups: Mapping[str, Any], attrs: Mapping[str, Any] | None = None) -> Any:
    """The ecosystem's result object from named ``xarray.Dataset`` groups.

    An ``arviz.InferenceData`` on ArviZ 0.x, an ``xarray.DataTree`` on 1.x; both give
    ``obj.posterior``, ``obj["posterior"]`` and are accepted by every ArviZ function.
    """
    if ARVIZ_1:
        import xarray as xr

        tree = xr.DataTree.from_dict(dict(groups))
        tree.attrs = dict(attrs or {})
        return tree
    import arviz as az

    return az.InferenceData(attrs=dict(attrs or {}), **dict(groups))


def group_names(obj: Any) -> list[str]:
    """Names of the groups of an InferenceData or a DataTree."""
    if hasattr(obj, "groups") and callable(obj.groups) and not ARVIZ_1:
        return list(obj.groups())
    return [str(name) for name in getattr(obj, "children", {})]


_ORDER_0X = ["mean", "sd", "hdi_lo", "hdi_hi", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"]


def summary(obj: Any, var_names: Sequence[str] | None, kind: str, hdi_prob: float) -> Any:
    """ArviZ's summary table with the same columns on both generations.

    ``kind`` is ``"stats"`` (mean, sd, HDI) or ``"all"`` (and MCSE, ESS, R-hat). The interval
    columns are named as ArviZ 0.x names them: ``hdi_3%`` and ``hdi_97%`` for ``hdi_prob=0.94``.
    """
    import arviz as az

    lo, hi = f"hdi_{100 * (1 - hdi_prob) / 2:g}%", f"hdi_{100 * (1 + hdi_prob) / 2:g}%"
    names = list(var_names) if var_names else None
    if not ARVIZ_1:
        return az.summary(obj, var_names=names, kind=kind, hdi_prob=hdi_prob)
    table = az.summary(obj, var_names=names, kind=kind, ci_prob=hdi_prob, ci_kind="hdi", round_to="none")
    tag = f"hdi{100 * hdi_prob:g}"
    table = table.rename(columns={f"{tag}_lb": "hdi_lo", f"{tag}_ub": "hdi_hi"})
    table = table[[c for c in _ORDER_0X if c in table.columns]]
    return table.rename(columns={"hdi_lo": lo, "hdi_hi": hi})


def from_numpyro(mcmc: Any, coords: Mapping[str, Any] | None, dims: Mapping[str, Sequence[str]] | None,
                 log_likelihood: bool) -> Any:
    """ArviZ's converter of a NumPyro MCMC run (without ``dims``, inferred from the model's plates)."""
    import arviz as az

    return az.from_numpyro(mcmc, log_likelihood=log_likelihood, coords=dict(coords or {}),
                           dims={k: list(v) for k, v in dims.items()} if dims else None)


def from_draws(draws: Mapping[str, np.ndarray]) -> Any:
    """A result object with one posterior chain from a dict name -> draws ``(S, ...)``."""
    import arviz as az

    posterior = {k: np.asarray(v)[None] for k, v in draws.items()}
    if ARVIZ_1:
        return az.from_dict({"posterior": posterior})
    return az.from_dict(posterior=posterior)
