"""Families layer: the :class:`Family` interface, the ``method=`` registry, and the families.

A family is a set of pure functions over a parameter pytree (``init``, ``sample_and_log_q``,
``log_q``, summaries); the ELBO is written once against it (:mod:`variational.objectives`).

Owns: the interface and registry (:mod:`.base`), the Gaussians (:mod:`.gaussian`: mean-field,
full-rank), :mod:`.lowrank`, normalizing flows (:mod:`.flows`), SVGD particles (:mod:`.svgd`),
NumPyro guides as a family (:mod:`.guides`).
May import: :mod:`variational.model`, :mod:`variational.errors`, numpyro, jax.
"""

from .base import FAMILIES, FULLRANK_MAX_DIM, Family, default_method, make_family, register_family
from .gaussian import full_rank, mean_field
from .lowrank import low_rank
from .flows import flow
from .svgd import particle_family, svgd
from .guides import guide_family

__all__ = ["Family", "FAMILIES", "make_family", "register_family", "default_method", "FULLRANK_MAX_DIM", "mean_field", "full_rank",
           "low_rank", "flow", "svgd", "particle_family", "guide_family"]
