"""Real posteriors with published reference draws (Stan's posteriordb), translated to NumPyro.

``POSTERIORS`` lists the posteriors the accuracy benchmark uses; :func:`load` returns one of them
ready to fit: the NumPyro model, its data columns and keyword arguments, and the reference
summaries stored in ``benchmarks/data/posteriordb/`` (per scalar parameter the mean and sd of
posteriordb's reference draws, in the constrained space; per unconstrained coordinate their
skewness and excess kurtosis). ``benchmarks/posteriors/build.py`` made those files from a
posteriordb checkout; the draws themselves are not stored.

>>> import posteriors                                  # doctest: +SKIP  (run from benchmarks/)
>>> p = posteriors.load("kidiq-kidscore_momiq")          # doctest: +SKIP
>>> p.reference["beta[2]"]["mean"]                       # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .models import MODELS, prepare

__all__ = ["POSTERIORS", "Posterior", "Spec", "load", "scalar_summaries", "flatten_draws", "DATA_DIR",
           "near_gaussian", "SKEW_LIMIT", "KURTOSIS_LIMIT"]

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "posteriordb"

# the near-Gaussian rule: every unconstrained coordinate of the reference posterior has
# |skewness| < SKEW_LIMIT and |excess kurtosis| < KURTOSIS_LIMIT
SKEW_LIMIT = 0.3
KURTOSIS_LIMIT = 0.5


@dataclass(frozen=True)
class Spec:
    """One posteriordb posterior: its name, the Stan model and data names, our NumPyro model."""

    name: str          # posteriordb posterior name, "<data>-<model>"
    family: str        # key of models.MODELS
    kind: str          # what makes it interesting, in a few words

    @property
    def data_name(self) -> str:
        return self.name.split("-", 1)[0]

    @property
    def model_name(self) -> str:
        return self.name.split("-", 1)[1]


POSTERIORS: dict[str, Spec] = {s.name: s for s in [
    Spec("sblri-blr", "blr", "linear regression, 5 coefficients, weak priors"),
    Spec("kidiq-kidscore_momiq", "cauchy_sigma_regression", "regression, uncentred predictor (corr. -0.99)"),
    Spec("kidiq-kidscore_momhsiq", "cauchy_sigma_regression", "regression, two uncentred predictors"),
    Spec("kidiq_with_mom_work-kidscore_interaction_c2", "flat_regression", "regression with interaction, centred"),
    Spec("kidiq_with_mom_work-kidscore_mom_work", "flat_regression", "regression on dummy variables"),
    Spec("earnings-earn_height", "flat_regression", "regression on the dollar scale (sds ~ 1e3-1e4)"),
    Spec("earnings-logearn_height_male", "flat_regression", "log-scale regression, uncentred height"),
    Spec("earnings-logearn_logheight_male", "flat_regression", "log-log regression (corr. -0.9999)"),
    Spec("earnings-logearn_interaction_z", "flat_regression", "regression with standardised interaction"),
    Spec("mesquite-mesquite", "flat_regression", "regression, 46 rows, 8 parameters"),
    Spec("mesquite-logmesquite_logvash", "flat_regression", "log regression, 46 rows, collinear logs"),
    Spec("nes2000-nes", "flat_regression", "regression, 10 parameters"),
    Spec("gp_pois_regr-gp_regr", "gp_regr", "GP hyperparameters, 11 points (skewed)"),
    Spec("hmm_example-hmm_example", "hmm_example", "2-state HMM, simplexes and ordered means"),
    Spec("bball_drive_event_0-hmm_drive_0", "hmm_drive_0", "2-state HMM, exponential emissions"),
    Spec("hudson_lynx_hare-lotka_volterra", "lotka_volterra", "Lotka-Volterra ODE, lognormal errors"),
]}


@dataclass
class Posterior:
    """A posterior ready to fit: ``model(**data, **kwargs)``, and its reference summaries."""

    spec: Spec
    model: Callable[..., None]
    data: dict[str, np.ndarray]
    kwargs: dict[str, Any]
    reference: dict[str, dict[str, float]]          # "beta[1]" -> {"mean": ..., "sd": ...}
    unconstrained: dict[str, dict[str, float]] = field(default_factory=dict)  # -> {"skew", "excess_kurtosis"}
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def near_gaussian(self) -> bool:
        return near_gaussian(self.unconstrained)


def near_gaussian(moments: Mapping[str, Mapping[str, float]]) -> bool:
    """The near-Gaussian rule on the reference draws' unconstrained moments (see module constants)."""
    return bool(moments) and all(abs(m["skew"]) < SKEW_LIMIT and abs(m["excess_kurtosis"]) < KURTOSIS_LIMIT
                                 for m in moments.values())


def read_data(data_name: str) -> dict[str, Any]:
    """The stored posteriordb data file (the columns the translations use)."""
    with (DATA_DIR / "data" / f"{data_name}.json").open() as f:
        return json.load(f)["data"]


def read_reference() -> dict[str, Any]:
    """All stored reference summaries, by posterior name."""
    with (DATA_DIR / "reference.json").open() as f:
        return json.load(f)["posteriors"]


def load(name: str, reference: Mapping[str, Any] | None = None) -> Posterior:
    """One posterior of :data:`POSTERIORS`, with its stored data and reference summaries."""
    if name not in POSTERIORS:
        raise KeyError(f"unknown posterior {name!r}; choose from {sorted(POSTERIORS)}")
    spec = POSTERIORS[name]
    data, kwargs = prepare(spec.model_name, read_data(spec.data_name))
    ref = (reference if reference is not None else read_reference()).get(name, {})
    return Posterior(spec, MODELS[spec.family], data, kwargs, ref.get("params", {}),
                     ref.get("unconstrained", {}), {k: v for k, v in ref.items()
                                                    if k not in ("params", "unconstrained")})


def flatten_draws(draws: Mapping[str, Any], names: Any = None) -> dict[str, np.ndarray]:
    """Named draws ``{site: (n, *shape)}`` -> scalar columns named as Stan does (``beta[1]``).

    Only the sites in ``names`` (site names, or Stan scalar names whose site part is taken) are
    kept when given.
    """
    keep = None if names is None else {str(n).split("[", 1)[0] for n in names}
    out: dict[str, np.ndarray] = {}
    for site, value in draws.items():
        if keep is not None and site not in keep:
            continue
        a = np.asarray(value)
        a = a.reshape(a.shape[0], -1) if a.ndim > 1 else a[:, None]
        shape = np.shape(value)[1:]
        if not shape:
            out[site] = a[:, 0]
            continue
        for j, idx in enumerate(np.ndindex(*shape)):
            out[f"{site}[{','.join(str(i + 1) for i in idx)}]"] = a[:, j]
    return out


def scalar_summaries(draws: Mapping[str, Any], reference: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Accuracy of ``draws`` against a reference: max |mean error| / ref sd and the sd ratios.

    Returns ``max_z`` (largest |mean - ref mean| / ref sd over the reference's scalar
    parameters), ``worst`` (that parameter), ``median_sd_ratio``, ``min_sd_ratio`` and
    ``max_sd_ratio`` (sd / ref sd); every number NaN when a draw is not finite.
    """
    cols = flatten_draws(draws, reference)
    missing = sorted(set(reference) - set(cols))
    if missing:
        raise KeyError(f"the draws have no {missing[:3]} (have {sorted(cols)[:6]}...)")
    z, r = {}, {}
    for n, ref in reference.items():
        x = cols[n]
        if not np.all(np.isfinite(x)):
            z[n], r[n] = np.nan, np.nan
            continue
        z[n] = abs(float(np.mean(x)) - ref["mean"]) / ref["sd"]
        r[n] = float(np.std(x, ddof=1)) / ref["sd"]
    zs, rs = np.array(list(z.values())), np.array(list(r.values()))
    if not np.all(np.isfinite(zs)):
        nan = float("nan")
        return dict(max_z=nan, worst="non-finite draws", median_sd_ratio=nan, min_sd_ratio=nan, max_sd_ratio=nan)
    worst = max(z, key=z.get)
    return dict(max_z=float(zs.max()), worst=worst, median_sd_ratio=float(np.median(rs)),
                min_sd_ratio=float(rs.min()), max_sd_ratio=float(rs.max()))
