"""Posterior layer: :class:`Fit` and everything it answers.

Owns: the result object (:mod:`.fit`), draws as dicts (:mod:`.draws`), predictions and
functions of draws (:mod:`.predictive`), diagnostics and PSIS (:mod:`.diagnostics`), ``vi.summary`` (:mod:`.table`), the
full-data ELBO (:mod:`.elbo`), comparison with reference draws (:mod:`.comparison`), plots
(:mod:`.plots`), ArviZ export and summaries (:mod:`.export`), reference MCMC and the MAP point
(:mod:`.mcmc`), and approximations made of given draws (:mod:`.empirical`).
May import: every layer below it (engine, families, objectives, data, model, errors).
Its functions take what they need (a LogDensity, a family, parameters, draws, or a fit
duck-typed); only :mod:`.empirical` imports :class:`Fit` (it is one).
"""

from . import plots
from .comparison import Comparison, compare
from .diagnostics import Diagnosis
from .empirical import Empirical
from .fit import Fit
from .mcmc import find_map, nuts
from .predictive import predictive
from .table import summary

__all__ = ["Fit", "Empirical", "Comparison", "compare", "Diagnosis", "summary", "find_map", "nuts",
           "predictive", "plots"]
