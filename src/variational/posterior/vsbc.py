"""Variational simulation-based calibration (VSBC; Yao, Vehtari, Simpson and Gelman 2018).

Draw ``theta_m`` and data ``y_m`` from the model's prior predictive, fit the approximation to
each ``y_m`` and record ``p_m = Pr_q(theta < theta_m)`` for every scalar parameter. When the
approximation's marginal point estimates are unbiased on average the ``p_m`` are distributed
symmetrically about 1/2; each parameter's asymmetry is measured by the two-sample
Kolmogorov-Smirnov test of ``p`` against ``1 - p`` (as NumPyro's ``vsbc_diagnostic``). A small
p-value says the approximation is biased in that parameter (no multiple-comparison correction).

The fits reuse one compiled engine: the first simulation builds the fit, the others restart its
state on their own data (the model is compiled once). ``p_m`` is exact where the family's
marginals are Gaussian (see :mod:`.marginals`), else the share of ``n_draws`` draws below
``theta_m`` (of the particles, for a particle family).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from ..data import as_columns, to_device
from ..errors import DataError, ModelError
from .marginals import marginal_cdf

__all__ = ["VSBC", "simulate", "calibrate"]


@dataclass
class VSBC:
    """The result of :func:`variational.vsbc`.

    Attributes
    ----------
    probabilities : dict
        name -> ``(n_sims, *shape)``: ``Pr_q(theta < theta_m)`` for each simulation.
    ks_stat, pvalue : dict
        name -> KS statistic and p-value of ``p`` against ``1 - p`` (``shape``).
    truth : dict
        name -> ``(n_sims, *shape)``: the simulated parameter values.
    simulated : dict
        observed site -> ``(n_sims, *shape)``: the simulated observations.
    """

    probabilities: dict[str, np.ndarray]
    ks_stat: dict[str, Any]
    pvalue: dict[str, Any]
    truth: dict[str, np.ndarray]
    simulated: dict[str, np.ndarray] = field(default_factory=dict)
    method: str = ""
    steps: int = 0

    @property
    def n_sims(self) -> int:
        return int(next(iter(self.probabilities.values())).shape[0])

    def biased(self, level: float = 0.05) -> list[str]:
        """Scalar parameters (``name[i]``) whose symmetry test rejects at ``level``."""
        out = []
        for name, p in self.pvalue.items():
            arr = np.atleast_1d(np.asarray(p))
            for i, v in enumerate(arr.ravel()):
                if v < level:
                    out.append(name if np.ndim(p) == 0 else f"{name}[{np.unravel_index(i, np.shape(p))}]")
        return out

    def table(self) -> Any:
        """A pandas DataFrame: per scalar parameter, mean of p, KS statistic and p-value."""
        import pandas as pd

        rows = {}
        for name, probs in self.probabilities.items():
            flat = probs.reshape(probs.shape[0], -1)
            ks, pv = np.ravel(self.ks_stat[name]), np.ravel(self.pvalue[name])
            for i in range(flat.shape[1]):
                label = name if probs.ndim == 1 else f"{name}[{i}]"
                rows[label] = {"mean_p": flat[:, i].mean(), "ks_stat": ks[i], "pvalue": pv[i]}
        return pd.DataFrame(rows).T

    def __repr__(self) -> str:
        bad = self.biased()
        verdict = (f"asymmetric (biased) at the 5% level: {bad}" if bad
                   else "no parameter is asymmetric at the 5% level")
        return (f"VSBC(method={self.method!r}, n_sims={self.n_sims}, steps={self.steps}): {verdict}\n"
                f"{self.table().to_string(float_format=lambda v: f'{v:.3f}')}")


def _observed_names(model: Callable, cols: Mapping[str, Any], observed: Any,
                    model_kwargs: Mapping[str, Any], key: jax.Array) -> list[str]:
    from numpyro import handlers

    params = inspect.signature(model).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if observed is not None:
        names = [observed] if isinstance(observed, str) else list(observed)
    else:
        # observed with the data given, or sampled under the name of an argument left out
        tr = handlers.trace(handlers.seed(model, key)).get_trace(**model_kwargs, **cols)
        names = [n for n, s in tr.items() if s["type"] == "sample" and not n.startswith("_")
                 and (s.get("is_observed") or (n in params and n not in cols and n not in model_kwargs))]
        if not names:
            raise ModelError("vsbc found no observed site: none is observed with the data given and "
                             "none is named like an argument of the model; name the sites to "
                             "simulate with observed=[...]")
    missing = [n for n in names if n not in params and not takes_all]
    if missing:
        raise ModelError(f"vsbc passes simulated values of observed site(s) {missing} to the model as "
                         f"the argument of the same name, but the model has no such argument; name "
                         f"the argument like the site (as NumPyro's vsbc_diagnostic requires)")
    return names


def simulate(model: Callable, data: Any, observed: Any, n_sims: int, key: jax.Array,
             model_kwargs: Mapping[str, Any] | None = None) -> tuple[dict, dict, dict]:
    """``n_sims`` draws of the prior predictive: ``(truth, simulated observations, covariates)``.

    The model is called with the covariates (``data`` without the observed columns) and the
    observed arguments set to None, so it must sample its observed sites when they are None.
    """
    kw = dict(model_kwargs or {})
    cols = as_columns(data) if data is not None else {}
    names = _observed_names(model, cols, observed, kw, key)
    covariates = {k: v for k, v in cols.items() if k not in names}
    from numpyro import handlers

    def one(k: jax.Array) -> dict:
        tr = handlers.trace(handlers.seed(model, k)).get_trace(**kw, **covariates, **{n: None for n in names})
        return {n: s["value"] for n, s in tr.items() if s["type"] == "sample" and not s.get("is_observed")}

    draws = jax.jit(jax.vmap(one))(jax.random.split(jax.random.fold_in(key, 1), int(n_sims)))
    absent = [n for n in names if n not in draws]
    if absent:
        raise ModelError(f"the model does not sample site(s) {absent} when their values are None; "
                         f"write it so that, e.g. Normal('y', mu, sigma, observed=y) with y=None")
    sims = {n: np.asarray(draws[n]) for n in names}
    for n, v in sims.items():
        if not np.all(np.isfinite(v)):
            raise DataError(f"simulated values of '{n}' are not all finite; check the model's priors")
    return {k: np.asarray(v) for k, v in draws.items() if k not in names}, sims, covariates


def _symmetry(p: np.ndarray) -> tuple[Any, Any]:
    from scipy.stats import ks_2samp

    flat = p.reshape(p.shape[0], -1)
    stats = np.empty(flat.shape[1])
    pvals = np.empty(flat.shape[1])
    for i in range(flat.shape[1]):
        r = ks_2samp(flat[:, i], 1.0 - flat[:, i], method="asymp")
        stats[i], pvals[i] = r.statistic, r.pvalue
    if p.ndim == 1:
        return float(stats[0]), float(pvals[0])
    return stats.reshape(p.shape[1:]), pvals.reshape(p.shape[1:])


def _rerun(template: Any, sim_data: dict, key: jax.Array, steps: int) -> Any:
    """The template fit's engine run afresh on ``sim_data``: the final parameters."""
    fam, ld, engine = template.family, template.logdensity, template.engine
    k0 = jax.random.fold_in(key, 0)
    if fam.init_with_logp is not None:
        params = fam.init_with_logp(k0, ld.init, lambda z: ld.logp(z, sim_data))
    else:
        params = fam.init(k0, ld.init)
    state, _ = engine.run(engine.init_state(params, key), sim_data, key, int(steps))
    return state.params


def calibrate(build: Callable[[dict], Any], model: Callable, data: Any = None, *,
              observed: str | Sequence[str] | None = None, n_sims: int = 100, steps: int = 1000,
              n_draws: int = 1000, seed: int = 0, model_kwargs: Mapping[str, Any] | None = None,
              rebuild: bool = False) -> VSBC:
    """VSBC with ``build(data) -> Fit`` making the fit of one simulated dataset (0 steps).

    ``rebuild``: build a new fit for every simulation (a guide whose q depends on the data, a
    step-size search) instead of restarting the first fit's engine. Reached through
    :func:`variational.vsbc`.
    """
    if isinstance(n_sims, bool) or int(n_sims) < 2:
        raise ValueError(f"n_sims={n_sims!r} must be at least 2 simulations")
    if steps is None or int(steps) < 0:
        raise ValueError(f"steps={steps!r} must be a non-negative number of steps per fit")
    if int(n_draws) < 2:
        raise ValueError(f"n_draws={n_draws!r} must be at least 2")
    key = jax.random.PRNGKey(seed)
    truth, sims, covariates = simulate(model, data, observed, int(n_sims), key, model_kwargs)
    first = None
    cache: dict = {}   # compiled marginals and constrain programs, kept across the simulations
    probs: dict[str, list] = {}
    for m in range(int(n_sims)):
        cols = {**covariates, **{n: v[m] for n, v in sims.items()}}
        fit = build(cols) if (first is None or rebuild) else first
        first = fit if first is None else first
        km = jax.random.fold_in(key, 2 + m)
        if rebuild:
            params = fit.refine(int(steps)).state.params if steps else fit.state.params
            dev = fit.data
        else:
            dev = to_device(as_columns(cols)) if cols else {}
            params = _rerun(fit, dev, km, steps)
        values = {n: truth[n][m] for n in fit.logdensity.names}
        cdf = marginal_cdf(fit.logdensity, fit.family, params, values,
                           lambda: _latent_draws(fit, params, dev, jax.random.fold_in(km, 1), int(n_draws), cache),
                           cache=cache)
        for n, v in cdf.items():
            probs.setdefault(n, []).append(np.asarray(v, np.float64))
    out = {n: np.stack(v) for n, v in probs.items()}
    tests = {n: _symmetry(p) for n, p in out.items()}
    return VSBC(out, {n: t[0] for n, t in tests.items()}, {n: t[1] for n, t in tests.items()},
                {n: truth[n] for n in out}, sims, method=first.method, steps=int(steps))


def _latent_draws(fit: Any, params: Any, data: Mapping[str, Any], key: jax.Array, n: int, cache: dict) -> dict:
    ld, fam = fit.logdensity, fit.family
    z = fam.particles(params) if fam.particles is not None else fam.draw(params, key, n)
    kept = cache.get(("vsbc_constrain", id(ld)))
    fn = kept[1] if kept is not None and kept[0] is ld else None
    if fn is None:
        fn = jax.jit(jax.vmap(lambda zz, d: ld.constrain(zz, d), in_axes=(0, None)))
        cache[("vsbc_constrain", id(ld))] = (ld, fn)
    return {k: np.asarray(v) for k, v in fn(z, dict(data)).items() if k in ld.names}
