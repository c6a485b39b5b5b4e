"""variational: fast, trustworthy variational inference for Bayesian models, on JAX.

>>> import variational as vi
"""

from . import callbacks
from .api import fit
from .checkpoint import load
from .data import as_columns
from .errors import CheckpointError, DataError, ModelError, VariationalError
from .families import Family, full_rank, mean_field, register_family
from .model import (
    Bernoulli, Beta, Binomial, Categorical, Cauchy, Deterministic, Dirichlet, Exponential, Flat,
    Gamma, HalfCauchy, HalfFlat, HalfNormal, Laplace, LogDensity, LogNormal, MvNormal, Normal,
    NormalMixture, Poisson, Potential, Site, StudentT, Uniform,
)
from .objectives import elbo
from .optim import make_optimizer
from .result import Fit
from . import plots
from .compare import Comparison, compare
from .diagnostics import Diagnosis, summary
from .mcmc import find_map, nuts
from .plots import model_graph
from .predictive import predictive
from .empirical import Empirical
from .flows import flow
from .guides import guide_family
from .lowrank import low_rank
from .svgd import svgd

__version__ = "0.1.0"

__all__ = [
    "fit", "load", "callbacks", "Fit", "LogDensity", "Family", "mean_field", "full_rank", "register_family", "elbo",
    "make_optimizer", "as_columns", "VariationalError", "ModelError", "DataError",
    "CheckpointError", "Site", "Normal", "HalfNormal", "Uniform", "Flat", "HalfFlat", "Beta",
    "Gamma", "Exponential", "Cauchy", "HalfCauchy", "StudentT", "LogNormal", "Laplace",
    "Bernoulli", "Binomial", "Poisson", "Categorical", "Dirichlet", "MvNormal", "NormalMixture",
    "Deterministic", "Potential", "Empirical", "svgd", "low_rank", "flow", "guide_family",
]
__all__ += ["predictive", "compare", "Comparison", "Diagnosis", "summary", "nuts", "find_map",
            "model_graph", "plots"]
