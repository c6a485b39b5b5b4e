"""How far is the approximation from a reference (usually :func:`variational.nuts`)?

Per scalar parameter: the difference of means in reference sds, the ratio of sds, and the 1-D
Wasserstein distance (:func:`scipy.stats.wasserstein_distance`), as a table, with a plot of the
marginals overlaid (:func:`variational.posterior.plots.marginals`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .draws import as_draws, columns
from .plots import marginals

__all__ = ["compare", "Comparison"]


@dataclass
class Comparison:
    """The result of :func:`compare`: ``table`` (a DataFrame) and the draws behind it."""

    table: Any
    draws: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]
    labels: tuple[str, str] = ("VI", "reference")

    def plot(self, var_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """The marginals of both overlaid (see :func:`variational.posterior.plots.marginals`)."""
        return marginals(self.draws, self.reference, var_names=var_names or sorted(
            {n.split("[")[0] for n in self.table.index}), labels=self.labels, **kwargs)

    def worst(self, k: int = 5) -> Any:
        """The ``k`` rows with the largest absolute standardised mean difference."""
        return self.table.reindex(self.table["mean_diff_sd"].abs().sort_values(ascending=False).index[:k])

    def __repr__(self) -> str:
        return f"Comparison({self.labels[0]} vs {self.labels[1]})\n" + self.table.to_string(
            float_format=lambda x: f"{x: .3g}")

    def _repr_html_(self) -> str:
        return self.table._repr_html_()


def compare(
    approx: Any,
    reference: Any,
    *,
    var_names: Sequence[str] | None = None,
    n: int = 4000,
    seed: int = 0,
    labels: tuple[str, str] = ("VI", "reference"),
) -> Comparison:
    """Compare an approximation with reference draws, parameter by parameter.

    Parameters
    ----------
    approx : Fit, InferenceData or dict
        The approximation (``n`` draws of a fit are used) or any draws.
    reference : InferenceData, dict or Fit
        Reference draws, for example ``vi.nuts(...)``; chains are pooled.
    var_names : sequence of str, optional
        Parameters to compare (default: every name present in both).
    n : int
        Draws of a fit.
    seed : int
        Seed of a fit's draws.
    labels : (str, str)
        Names of the two in the table's repr and the plot's legend.

    Returns
    -------
    Comparison
        ``.table``: one row per scalar element with ``mean``, ``ref_mean``, ``sd``,
        ``ref_sd``, ``mean_diff_sd`` (difference of means in reference sds), ``sd_ratio``
        (sd / reference sd) and ``wasserstein`` (1-D Wasserstein distance, in the parameter's
        units); ``.plot()``: the marginals overlaid.

    Examples
    --------
    >>> import numpy as np
    >>> import variational as vi
    >>> rng = np.random.default_rng(0)
    >>> ref = {"x": rng.normal(0, 1, 4000)}
    >>> shifted = {"x": rng.normal(0.5, 1, 4000)}
    >>> row = vi.compare(shifted, ref).table.loc["x"]
    >>> round(float(row["mean_diff_sd"]), 1), round(float(row["sd_ratio"]), 1)
    (0.5, 1.0)
    """
    import pandas as pd
    from scipy.stats import wasserstein_distance

    a, r = as_draws(approx, n, seed), as_draws(reference, n, seed)
    common = [k for k in a if k in r]
    if var_names is not None:
        missing = [k for k in var_names if k not in common]
        if missing:
            raise KeyError(f"var_names {missing} are not in both sets of draws (common: {sorted(common)})")
        common = list(var_names)
    if not common:
        raise ValueError(f"the two sets of draws share no parameter names ({sorted(a)} vs {sorted(r)})")
    rows = []
    for name in common:
        va, vr = np.asarray(a[name], dtype=float), np.asarray(r[name], dtype=float)
        if va.shape[1:] != vr.shape[1:]:
            raise ValueError(f"'{name}' has shape {va.shape[1:]} in the approximation but "
                             f"{vr.shape[1:]} in the reference")
        for (label, ca), (_, cr) in zip(columns(name, va), columns(name, vr)):
            m, s, mr, sr = ca.mean(), ca.std(), cr.mean(), cr.std()
            rows.append((label, m, mr, s, sr, (m - mr) / sr if sr > 0 else np.nan,
                         s / sr if sr > 0 else np.nan, wasserstein_distance(ca, cr)))
    table = pd.DataFrame(rows, columns=["name", "mean", "ref_mean", "sd", "ref_sd", "mean_diff_sd",
                                        "sd_ratio", "wasserstein"]).set_index("name")
    return Comparison(table, {k: a[k] for k in common}, {k: r[k] for k in common}, tuple(labels))
