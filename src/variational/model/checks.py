"""Checks of a traced model against its data and arguments, with errors that name what is wrong.

- :func:`refuse_delta`: a latent ``Delta`` site has no density to fit;
- :class:`DiscreteObserved`: the values a discrete observed site may take (whole numbers in
  its support), checked on every row a fit reads;
- :func:`check_finite_observed`: NaN or inf among observed values;
- :func:`argument_hint`: "did you mean" for data columns and model arguments that do not match.

Imports: numpyro, numpy, :mod:`variational.errors`.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from typing import Any, Callable, Mapping

import jax
import numpy as np
from numpyro import distributions as dist
from numpyro import handlers
from numpyro.infer.util import constrain_fn

from ..errors import DataError, ModelError, user_stacklevel

__all__ = ["base_distribution", "refuse_delta", "DiscreteObserved", "check_finite_observed", "refuse_nonfinite",
           "argument_hint", "closest", "warn_missing_observed"]


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def base_distribution(fn: Any) -> Any:
    """The distribution under expand / to_event / mask wrappers.

    Examples
    --------
    >>> import numpyro.distributions as dist
    >>> type(base_distribution(dist.Poisson(1.0).expand([3]).to_event(1))).__name__
    'Poisson'
    """
    while isinstance(fn, (dist.ExpandedDistribution, dist.Independent, dist.MaskedDistribution)):
        fn = fn.base_dist
    return fn


def refuse_delta(latent: Mapping[str, dict]) -> None:
    """A clear error for a latent ``Delta`` site among ``latent`` (trace sites by name)."""
    for n, s in latent.items():
        if isinstance(base_distribution(s["fn"]), dist.Delta):
            raise ModelError(
                f"site '{n}' is a latent Delta (a point mass): it has no density to fit, so every "
                f"step would be skipped; make it a vi.Deterministic, or pass its value as observed=")


def _integer_bounds(fn: Any) -> tuple[Any, Any] | None:
    """(lowest, highest) whole number a discrete distribution's support allows (None: unknown)."""
    support = fn.support
    if not getattr(support, "is_discrete", False):
        return None
    if getattr(support, "event_dim", 0):  # one-hot, multinomial counts...: integrality only
        return (None, None)
    lo = getattr(support, "lower_bound", 0 if support is dist.constraints.boolean else None)
    hi = getattr(support, "upper_bound", 1 if support is dist.constraints.boolean else None)
    scalar = lambda b: float(b) if b is not None and _is_concrete(b) and np.ndim(b) == 0 else None  # noqa: E731
    return scalar(lo), scalar(hi)


class DiscreteObserved:
    """The discrete observed sites that read a data column, and the whole numbers each takes.

    A discrete distribution's log-probability of 2.5 counts is a number, not an error, so a
    fit on such data would be silently wrong: :meth:`check` refuses it, naming the site and column.
    """

    def __init__(self, trace: Mapping[str, dict], data_of_site: Mapping[str, str], observed: list[str]) -> None:
        self.sites = {n: (data_of_site[n], *b) for n in observed if n in data_of_site
                      for b in [_integer_bounds(trace[n]["fn"])] if b is not None}
        self.kind = {n: type(base_distribution(trace[n]["fn"])).__name__.replace("Probs", "").replace("Logits", "")
                     for n in self.sites}

    def check(self, cols: Mapping[str, Any], where: str = "") -> None:
        """Refuse values the sites cannot take among ``cols`` (data columns, any rows)."""
        for site, (col, lo, hi) in self.sites.items():
            if col not in cols:
                continue
            v = np.asarray(cols[col])
            bad = np.zeros(v.shape, bool)
            if v.dtype.kind == "f":
                bad |= v != np.floor(v)
            if lo is not None:
                bad |= v < lo
            if hi is not None:
                bad |= v > hi
            if bad.any():
                i = int(np.argmax(bad.reshape(-1)))
                row = i // max(1, int(np.prod(v.shape[1:])))
                rng = f"from {lo:g}" if lo is not None else ""
                rng += f" to {hi:g}" if hi is not None else ""
                raise DataError(
                    f"site '{site}' ({self.kind[site]}) observes data column '{col}'{where}, "
                    f"which holds {v.reshape(-1)[i].item()!r} at row {row}; it takes whole numbers {rng}".rstrip()
                    + ". Convert or round the column, or use a continuous likelihood")


def check_finite_observed(trace: Mapping[str, dict], data: Mapping[str, Any], data_of_site: Mapping[str, str],
                          observed: list[str]) -> None:
    """Refuse NaN or inf among the values of observed sites, naming the site (and column)."""
    for n in observed:
        v = trace[n]["value"]
        col = data_of_site.get(n)
        if col is not None:
            v, where = data[col], f" (data column '{col}')"
        elif not _is_concrete(v):
            continue  # computed inside the model from the data; checked at the initial point
        else:
            where = ""
        refuse_nonfinite(v, f"site '{n}'{where}")


def refuse_nonfinite(values: Any, label: str) -> None:
    """A :class:`ModelError` (starting with ``label``) when observed ``values`` hold NaN or inf."""
    a = np.asarray(values)
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[:3].tolist()
        raise ModelError(f"{label}: observed values contain NaN or inf (first at index {bad}); drop or "
                         f"impute those rows before fitting")


def closest(word: str, options: Any, cutoff: float = 0.5) -> str | None:
    """The option closest to ``word``, ignoring case (``"x"`` finds ``"X"``), or None.

    Examples
    --------
    >>> closest("Y", ["y", "x_train"]), closest("alhpa", ["alpha", "beta"]), closest("q", ["alpha"])
    ('y', 'alpha', None)
    """
    options = [str(o) for o in options]
    lower = {o.lower(): o for o in reversed(options)}
    if word.lower() in lower:
        return lower[word.lower()]
    close = difflib.get_close_matches(word.lower(), list(lower), n=1, cutoff=cutoff)
    return lower[close[0]] if close else None


def warn_missing_observed(model: Callable, given: Any, latent: Mapping[str, dict]) -> None:
    """Warn when a latent site has the name of a model argument that was not given: data meant as
    observed values that, left out, made the site latent (``vi.fit(linreg, {"X": X})`` with
    ``linreg(X, y=None)``).

    Examples
    --------
    >>> import warnings
    >>> def model(X, y=None):
    ...     pass
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     warn_missing_observed(model, ["X"], {"y": {"value": np.zeros(200)}})
    >>> print(str(w[0].message)[:60])
    the model's argument 'y' was not given, so site 'y' is laten
    """
    try:
        params = inspect.signature(model).parameters
    except (TypeError, ValueError):
        return
    for name in (n for n in params if n in latent and n not in given):
        size = int(np.size(latent[name]["value"]))
        warnings.warn(f"the model's argument '{name}' was not given, so site '{name}' is latent "
                      f"({size} value(s) to infer) instead of observed; if it is data, pass it: "
                      f"vi.fit(model, {{..., '{name}': values}})", UserWarning, stacklevel=user_stacklevel())


def argument_hint(model: Callable, given: list[str]) -> str:
    """'did you mean' hints for keyword arguments the model does not take or misses.

    Examples
    --------
    >>> def model(y):
    ...     pass
    >>> argument_hint(model, ["yy"])
    "; 'yy' is not an argument of the model (did you mean 'y'?); the model's argument 'y' is not given (is it the column 'yy'?)"
    """
    try:
        params = inspect.signature(model).parameters
    except (TypeError, ValueError):
        return ""
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return ""
    names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = [n for n in names if params[n].default is inspect.Parameter.empty and n not in given]
    hints = []
    for g in (g for g in given if g not in names):
        close = closest(g, required or names)
        hints.append(f"'{g}' is not an argument of the model" + (f" (did you mean '{close}'?)" if close else ""))
    for r in required:
        close = closest(r, [g for g in given if g not in names])
        hints.append(f"the model's argument '{r}' is not given" + (f" (is it the column '{close}'?)" if close else ""))
    return ("; " + "; ".join(hints)) if hints else ""


def explain_invalid_init(model: Callable, kwargs: dict, z: dict) -> str:
    """Why the log density of ``model`` (seeded, parameters substituted) is not finite at the
    unconstrained point ``z``: the sites whose log-probability is -inf or NaN there."""
    constrained = constrain_fn(model, (), kwargs, z)
    tr = handlers.trace(handlers.substitute(model, constrained)).get_trace(**kwargs)
    bad = [f"'{n}' ({'observed' if s['is_observed'] else 'latent'})" for n, s in tr.items()
           if s["type"] == "sample" and not np.all(np.isfinite(np.asarray(s["fn"].log_prob(s["value"]))))]
    if bad:
        return (f"the log density is not finite at the initial point: site(s) {', '.join(bad)} "
                f"have log-probability -inf or NaN, i.e. a value outside the support of the "
                f"distribution or a parameter outside its allowed range. Check the data and "
                f"parameters of those sites")
    return ("the log density is not finite at the initial point; a Potential term or a "
            "parameter is outside its allowed range. Check the model's parameters")
