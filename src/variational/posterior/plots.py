"""Plots of a fit: loss history, marginals against reference draws, Tracker traces, predictive checks.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (no global
state, no display needed: it works headless). In a notebook the figure displays itself; in a
script save it with ``fig.savefig("name.png")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from .. import data as _data
from .draws import as_draws, columns, is_fit
from .predictive import observed_values

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["elbo", "marginals", "tracker", "predictive", "model_graph", "smooth"]


def _figure(n_panels: int, ncols: int = 1, width: float = 6.0, height: float = 2.6) -> tuple["Figure", np.ndarray]:
    from matplotlib.figure import Figure

    nrows = int(np.ceil(n_panels / ncols))
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (non-finite values ignored); same length as ``values``.

    Examples
    --------
    >>> smooth([1.0, 3.0, 5.0, 7.0], 2).tolist()
    [1.0, 2.0, 4.0, 6.0]
    """
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, v, 0.0))])
    k = np.concatenate([[0], np.cumsum(ok)])
    i = np.arange(1, len(v) + 1)
    lo = np.maximum(i - int(window), 0)
    cnt = k[i] - k[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, (c[i] - c[lo]) / np.maximum(cnt, 1), np.nan)


def elbo(fit_or_losses: Any, *, window: int | None = None, skip: int = 0) -> "Figure":
    """Loss (negative ELBO) per step, raw and smoothed.

    Parameters
    ----------
    fit_or_losses : Fit or array_like
        A fit (its ``hist``) or the losses themselves.
    window : int, optional
        Moving-average window (default: 1/50 of the steps, at least 1).
    skip : int
        Leave out the first ``skip`` steps (the initial drop hides the tail's scale).

    Examples
    --------
    >>> import numpy as np
    >>> fig = elbo(np.linspace(10, 1, 500) + np.random.default_rng(0).normal(0, 0.5, 500))
    >>> [line.get_label() for line in fig.axes[0].lines]
    ['raw', 'smoothed']
    """
    hist = np.asarray(getattr(fit_or_losses, "hist", fit_or_losses), dtype=float)
    w = int(window) if window else max(1, len(hist) // 50)
    steps = np.arange(len(hist))[skip:]
    fig, (ax,) = _figure(1, height=3.2)
    ax.plot(steps, hist[skip:], lw=0.6, alpha=0.35, color="C0", label="raw")
    ax.plot(steps, smooth(hist, w)[skip:], lw=1.6, color="C1", label="smoothed")
    finite = hist[skip:][np.isfinite(hist[skip:])]
    if finite.size > 20:  # a robust y-range: the early drop does not flatten the tail
        lo, hi = np.quantile(finite, [0.005, 0.99])
        pad = 0.05 * (hi - lo + 1e-12)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (-ELBO)")
    ax.set_title(f"loss history (moving average over {w} steps)")
    ax.legend(loc="upper right")
    return fig


def marginals(
    approx: Any,
    reference: Any = None,
    *,
    var_names: Sequence[str] | None = None,
    labels: tuple[str, str] = ("VI", "reference"),
    max_elements: int = 12,
    bins: int = 40,
    n: int = 4000,
) -> "Figure":
    """Posterior marginals of the approximation, overlaid on reference draws.

    One panel per parameter. Scalars and vectors of up to three elements are histograms (the
    approximation as lines, the reference filled, one colour and legend entry per element);
    longer vectors are a forest: one row per element (the first ``max_elements``), each with
    its median and central 94% interval.

    Parameters
    ----------
    approx : Fit, InferenceData or dict
        The approximation (``n`` draws of a fit) or any draws.
    reference : InferenceData, dict or Fit, optional
        Reference draws (for example ``vi.nuts(...)``).
    var_names : sequence of str, optional
        Parameters to show (default: all of the approximation's, or those in both).
    labels : (str, str)
        Legend names.
    max_elements : int
        Elements shown per vector parameter.
    bins : int
        Histogram bins.
    n : int
        Draws of a fit.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> fig = marginals({"x": rng.normal(size=(500, 2))}, {"x": rng.normal(size=(500, 2))})
    >>> fig.axes[0].get_title()
    'x'
    >>> forest = marginals({"alpha": rng.normal(size=(500, 30))}, max_elements=30)
    >>> len(forest.axes[0].get_yticklabels())                  # a row per group
    30
    """
    a = as_draws(approx, n)
    r = as_draws(reference, n) if reference is not None else {}
    names = list(var_names) if var_names is not None else [k for k in a if (not r or k in r)]
    unknown = [k for k in names if k not in a]
    if unknown:
        raise KeyError(f"var_names {unknown} are not in the draws (available: {sorted(a)})")
    fig, axes = _figure(len(names), ncols=2 if len(names) > 3 else 1)
    for ax, name in zip(axes, names):
        cols_a = columns(name, np.asarray(a[name], dtype=float))
        cols_r = columns(name, np.asarray(r[name], dtype=float)) if name in r else []
        if len(cols_a) > OVERLAID:
            _forest(ax, cols_a[:max_elements], cols_r[:max_elements], labels)
        else:
            _histograms(ax, cols_a, cols_r, labels, bins)
        ax.set_title(name)
        ax.legend(loc="upper right", fontsize="small")
    return fig


#: vector sites with more elements than this are drawn as a forest (one row per element)
OVERLAID = 3


def _histograms(ax: Any, cols_a: list, cols_r: list, labels: tuple[str, str], bins: int) -> None:
    for j, (label, ca) in enumerate(cols_a):
        color = f"C{j % 10}"
        both = np.concatenate([ca] + ([cols_r[j][1]] if cols_r else []))
        edges = np.histogram_bin_edges(both[np.isfinite(both)], bins=bins)
        suffix = f" {label}" if len(cols_a) > 1 else ""
        if cols_r:
            ax.hist(cols_r[j][1], bins=edges, density=True, color=color, alpha=0.25, label=labels[1] + suffix)
        ax.hist(ca, bins=edges, density=True, histtype="step", lw=1.4, color=color, label=labels[0] + suffix)
    ax.set_yticks([])


def _forest(ax: Any, cols_a: list, cols_r: list, labels: tuple[str, str]) -> None:
    """One row per element: the mean and the central 94% interval of each set of draws."""
    rows = np.arange(len(cols_a))[::-1]
    for k, (cols, offset, color) in enumerate(((cols_a, 0.15, "C0"), (cols_r, -0.15, "C1"))):
        if not cols:
            continue
        shift = offset if cols_r else 0.0
        lo, mid, hi = np.array([np.nanquantile(c, [0.03, 0.5, 0.97]) for _, c in cols]).T
        ax.hlines(rows + shift, lo, hi, color=color, lw=1.4)
        ax.plot(mid, rows + shift, "o", color=color, ms=3, label=labels[k])
    ax.set_yticks(rows)
    ax.set_yticklabels([label for label, _ in cols_a], fontsize="small")


def tracker(values: Mapping[str, Sequence[Any]], names: Sequence[str] | None = None, *,
            max_elements: int = 12) -> "Figure":
    """Traces of tracked quantities, one panel each (``vi.callbacks.Tracker`` or any mapping).

    Parameters
    ----------
    values : mapping
        name -> sequence of recorded values (scalars or arrays, one per call).
    names : sequence of str, optional
        Which to show (default: all).
    max_elements : int
        Elements shown per array-valued quantity.

    Examples
    --------
    >>> fig = tracker({"mean": [[0.0, 1.0], [0.5, 1.5]], "std": [1.0, 0.8]})
    >>> [ax.get_title() for ax in fig.axes]
    ['mean', 'std']
    """
    keys = list(names) if names is not None else list(values.keys())
    missing = [k for k in keys if k not in values]
    if missing:
        raise KeyError(f"{missing} not tracked (tracked: {sorted(values.keys())})")
    fig, axes = _figure(len(keys))
    steps = getattr(values, "steps", None)  # a vi.callbacks.Tracker knows the step of each record
    for ax, k in zip(axes, keys):
        v = np.asarray([np.asarray(x, dtype=float) for x in values[k]])
        flat = v.reshape(len(v), -1)[:, :max_elements] if len(v) else np.empty((0, 1))
        x = np.asarray(steps) if steps is not None and len(steps) == len(flat) else np.arange(len(flat))
        ax.plot(x, flat, lw=1.0)
        ax.set_title(k)
        ax.set_xlabel("step" if steps is not None and len(steps) == len(flat) else "record")
    return fig


def predictive(
    source: Any,
    *,
    sites: Sequence[str] | None = None,
    n: int = 500,
    n_lines: int = 40,
    bins: int = 40,
    seed: int = 0,
) -> "Figure":
    """Posterior predictive check: the observed data against replicated data sets.

    Parameters
    ----------
    source : Fit or InferenceData
        A fit (``n`` predictive draws on its training data) or an ``InferenceData`` with
        ``posterior_predictive`` and ``observed_data`` groups.
    sites : sequence of str, optional
        Observed sites to show (default: all).
    n : int
        Predictive draws of a fit.
    n_lines : int
        Replicated data sets drawn as thin lines.
    bins : int
        Histogram bins.
    seed : int
        Seed of a fit's draws.

    Examples
    --------
    >>> import numpy as np
    >>> import variational as vi
    >>> def model(y=None):
    ...     mu = vi.Normal("mu", 0, 10)
    ...     vi.Normal("y", mu, 1, observed=y)
    >>> fit = vi.fit(model, {"y": np.random.default_rng(0).normal(size=50)}, steps=500, learning_rate=0.05,
    ...              progress=False)
    >>> predictive(fit).axes[0].get_title()
    'y'
    >>> idata = type("Draws", (), {})()                  # 0/1 outcomes: proportions, not a line
    >>> import xarray as xr
    >>> idata.observed_data = xr.Dataset({"y": ("n", np.array([0, 1, 1, 0]))})
    >>> idata.posterior_predictive = xr.Dataset({"y": (("chain", "draw", "n"), np.ones((1, 10, 4)))})
    >>> [t.get_text() for t in predictive(idata).axes[0].get_xticklabels()]
    ['0', '1']
    """
    if is_fit(source):
        obs = observed_values(source.model, source.approximation.training_data(), source.model_kwargs)
        pred = source.predict(n=n, seed=seed, sites=list(obs))
    elif hasattr(source, "posterior_predictive") and hasattr(source, "observed_data"):
        obs = {str(k): np.asarray(v.values) for k, v in source.observed_data.data_vars.items()}
        pred = {str(k): np.asarray(v.values).reshape((-1,) + v.shape[2:])
                for k, v in source.posterior_predictive.data_vars.items()}
    else:
        raise TypeError("predictive() takes a Fit or an InferenceData with posterior_predictive "
                        f"and observed_data groups, got {type(source).__name__}")
    keys = list(sites) if sites is not None else [k for k in obs if k in pred]
    if not keys:
        raise ValueError("the model has no observed sites to check")
    fig, axes = _figure(len(keys))
    rng = np.random.default_rng(seed)
    for ax, k in zip(axes, keys):
        y = np.asarray(obs[k], dtype=float).ravel()
        rep = np.asarray(pred[k], dtype=float).reshape(len(pred[k]), -1)
        ax.set_title(k)
        values = np.unique(np.concatenate([y, rep[: min(len(rep), 50)].ravel()]))
        if len(values) <= MAX_DISCRETE and np.all(values == np.round(values)):
            _discrete(ax, y, rep, values)
            continue
        edges = np.histogram_bin_edges(np.concatenate([y, rep[: min(len(rep), 50)].ravel()]), bins=bins)
        centres = 0.5 * (edges[1:] + edges[:-1])
        for i, row in enumerate(rng.choice(len(rep), min(n_lines, len(rep)), replace=False)):
            h, _ = np.histogram(rep[row], bins=edges, density=True)
            ax.plot(centres, h, color="C0", alpha=0.15, lw=0.8, label="replicated" if i == 0 else None)
        h, _ = np.histogram(rep.ravel(), bins=edges, density=True)
        ax.plot(centres, h, color="C0", lw=1.6, label="predictive (pooled)")
        ax.hist(y, bins=edges, density=True, color="k", alpha=0.3, label="observed")
        ax.set_yticks([])
        ax.legend(loc="upper right", fontsize="small")
    return fig


#: outcomes with at most this many whole-number values are drawn as proportions per value
MAX_DISCRETE = 20


def _discrete(ax: Any, y: np.ndarray, rep: np.ndarray, values: np.ndarray) -> None:
    """Observed proportion of each value (bars) against the replicated data sets' proportions
    (median and central 94% interval)."""
    observed = np.array([np.mean(y == v) for v in values])
    replicated = np.stack([np.mean(rep == v, axis=1) for v in values], axis=1)
    lo, mid, hi = np.quantile(replicated, [0.03, 0.5, 0.97], axis=0)
    ax.bar(values, observed, width=0.6, color="k", alpha=0.3, label="observed")
    ax.errorbar(values, mid, yerr=[mid - lo, hi - mid], fmt="o", color="C0", ms=4, capsize=3,
                label="predictive (94%)")
    ax.set_xticks(values)
    ax.set_ylabel("proportion")
    ax.legend(loc="upper right", fontsize="small")


def model_graph(model: Callable, data: Any = None, *, model_kwargs: Mapping[str, Any] | None = None,
                filename: str | None = None) -> Any:
    """The model's structure as a graph (NumPyro's ``render_model``); needs ``graphviz``.

    Parameters
    ----------
    model : callable
        The model.
    data : mapping or DataFrame, optional
        Data columns the model is called with.
    model_kwargs : mapping, optional
        Other keyword arguments.
    filename : str, optional
        Also write the rendering to this file (needs the Graphviz ``dot`` program).

    Returns
    -------
    graphviz.Digraph

    Raises
    ------
    ImportError
        When the ``graphviz`` Python package is not installed, saying how to install it.

    Examples
    --------
    >>> import variational as vi
    >>> def model():
    ...     vi.Normal("x", 0, 1)
    >>> try:
    ...     graph = model_graph(model)
    ... except ImportError as e:
    ...     print("graphviz" in str(e))
    ... else:
    ...     print("x" in graph.source)
    True
    """
    try:
        import graphviz  # noqa: F401
    except ImportError:
        raise ImportError(
            "vi.model_graph needs the 'graphviz' Python package and the Graphviz programs: "
            "pip install graphviz, and install Graphviz itself (apt install graphviz, "
            "brew install graphviz or conda install graphviz)") from None
    import numpyro

    cols = {k: np.asarray(v) for k, v in _data.as_columns(data).items()}
    return numpyro.render_model(model, model_kwargs={**dict(model_kwargs or {}), **cols},
                                filename=filename, render_distributions=True)
