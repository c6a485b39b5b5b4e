"""variational: fast, trustworthy variational inference for Bayesian models, on JAX.

The package is layered (see ``docs/architecture.md``); imports only go down:
``cli`` > ``api`` (and ``calibration``) > ``posterior`` > ``engine`` > ``objectives`` > ``families`` > ``data`` >
``model`` > ``errors``. This module gathers the public names.

>>> import variational as vi
"""

from . import callbacks, data
from .api import fit, load
from .calibration import VSBC, vsbc
from .compilation import CompileCache, compile_cache, set_compile_cache
from .data import as_columns
from .engine import adagrad_window, make_optimizer
from .engine.options import Amortised, Batches, Checkpoint, Objective, Start, StepSize, Stop
from .errors import CheckpointError, DataError, ModelError, VariationalError
from .families import (
    Family, amortized_svgd, asvgd, flow, full_rank, guide_family, kernels, low_rank, mean_field,
    register_family, svgd,
)
from .model import (
    Bernoulli, Beta, Binomial, Categorical, Cauchy, Deterministic, Dirichlet, Exponential, Flat,
    Gamma, HalfCauchy, HalfFlat, HalfNormal, Laplace, LogDensity, LogNormal, MvNormal, Normal,
    NormalMixture, Poisson, Potential, Site, StudentT, Uniform,
)
from .objectives import elbo, make_objective
from .posterior import (
    Comparison, Diagnosis, Empirical, Fit, compare, find_map, nuts, plots, predictive, summary,
)
from .posterior.plots import model_graph


from ._version import __version__

__all__ = [
    "fit", "load", "callbacks", "data", "Fit", "LogDensity", "Family", "mean_field", "full_rank",
    "register_family", "elbo", "make_optimizer", "as_columns", "VariationalError", "ModelError",
    "DataError", "CheckpointError", "Site", "Normal", "HalfNormal", "Uniform", "Flat", "HalfFlat",
    "Beta", "Gamma", "Exponential", "Cauchy", "HalfCauchy", "StudentT", "LogNormal", "Laplace",
    "Bernoulli", "Binomial", "Poisson", "Categorical", "Dirichlet", "MvNormal", "NormalMixture",
    "Deterministic", "Potential", "Empirical", "svgd", "low_rank", "flow", "guide_family",
    "predictive", "compare", "Comparison", "Diagnosis", "summary", "nuts", "find_map",
    "model_graph", "plots", "vsbc", "VSBC", "asvgd", "amortized_svgd", "kernels", "adagrad_window",
    "make_objective", "__version__", "compile_cache", "set_compile_cache", "CompileCache",
    "Objective", "StepSize", "Batches", "Stop", "Checkpoint", "Start", "Amortised",
]
