"""Families layer: the :class:`Family` interface, the ``method=`` registry, and the families.

A family is a set of pure functions over a parameter pytree (``init``, ``sample_and_log_q``,
``log_q``, summaries); the ELBO is written once against it (:mod:`variational.objectives`).

Owns: the interface and registry (:mod:`.base`), the Gaussians (:mod:`.gaussian`: mean-field,
full-rank), :mod:`.lowrank`, :mod:`.structured` (Markov along the model's series), normalizing flows (:mod:`.flows`), SVGD particles (:mod:`.svgd`; kernels in
:mod:`.kernels`), NumPyro guides as a family (:mod:`.guides`); the direct methods, which solve for their
parameters instead of running the engine's loop: :mod:`.laplace`, :mod:`.dadvi`,
:mod:`.pathfinder` (with :mod:`._newton` and :mod:`._mixture`).
May import: :mod:`variational.model`, :mod:`variational.errors`, numpyro, jax.
"""

from .base import FAMILIES, Family, make_family, register_family, with_init_params
from .gaussian import full_rank, mean_field
from .lowrank import low_rank
from .structured import coupled_chains, find_chains, structured
from .choice import FULLRANK_MAX_DIM, default_family, default_method
from .flows import flow
from . import kernels
from .svgd import amortized_svgd, asvgd, particle_family, svgd
from .guides import guide_family
from .laplace import laplace
from .dadvi import dadvi
from .pathfinder import pathfinder

__all__ = ["Family", "FAMILIES", "make_family", "register_family", "default_method", "default_family", "FULLRANK_MAX_DIM", "mean_field", "full_rank",
           "low_rank", "structured", "find_chains", "coupled_chains", "flow", "svgd", "asvgd", "amortized_svgd", "kernels", "particle_family",
           "guide_family", "with_init_params", "laplace", "dadvi", "pathfinder"]
