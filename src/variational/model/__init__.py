"""Model layer: site constructors and :class:`LogDensity`.

A model is a plain Python function; any NumPyro model works unchanged. This layer turns a model
plus data into a log density over a flat unconstrained vector.

Owns: site constructors (:mod:`.sites`), effect handlers and the initial-point rule
(:mod:`.handlers`), :class:`LogDensity` (:mod:`.logdensity`).
May import: numpyro, jax, :mod:`variational.errors`. Nothing else of the library.
"""

from .handlers import RNG_KEY, SiteLayout
from .logdensity import LogDensity
from .sites import (
    Bernoulli, Beta, Binomial, Categorical, Cauchy, Deterministic, Dirichlet, Exponential, Flat,
    Gamma, HalfCauchy, HalfFlat, HalfNormal, Laplace, LogNormal, MvNormal, Normal, NormalMixture,
    Poisson, Potential, Site, StudentT, Uniform,
)

__all__ = [
    "Site", "Normal", "HalfNormal", "Uniform", "Flat", "HalfFlat", "Beta", "Gamma", "Exponential",
    "Cauchy", "HalfCauchy", "StudentT", "LogNormal", "Laplace", "Bernoulli", "Binomial",
    "Poisson", "Categorical", "Dirichlet", "MvNormal", "NormalMixture", "Deterministic",
    "Potential", "LogDensity", "SiteLayout", "RNG_KEY",
]
