"""Which family ``method="auto"`` fits: chosen from the model's dimension and its series.

May import: numpy, :mod:`.structured`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .structured import coupled_chains, find_chains

__all__ = ["FULLRANK_MAX_DIM", "LOWRANK_AUTO_RANK", "default_family", "default_method"]

FULLRANK_MAX_DIM = 64
"""``method="auto"`` fits a full-rank Gaussian up to this many latent dimensions."""

LOWRANK_AUTO_RANK = 8
"""The rank of the low-rank Gaussian ``method="auto"`` fits to a model without a series above
``FULLRANK_MAX_DIM`` dimensions."""


def default_family(dim: int, layout: Any = None, logp: Any = None, at: Any = None, data: Any = None
                   ) -> tuple[str, dict]:
    """The family ``method="auto"`` chooses, and its options, for a model's flat ``layout``.

    Full-rank while it is affordable (``dim <= FULLRANK_MAX_DIM``): it is exact on a Gaussian
    posterior whatever its correlations. Above, a model with series (long vector sites along
    which the log density ``logp(z, data)`` couples neighbouring coordinates at the point
    ``at``: :func:`~variational.families.coupled_chains`; without ``logp`` every long site
    counts) and at most ``FULLRANK_MAX_DIM`` other
    dimensions gets ``"structured"`` (full-rank over the others, Markov along each series,
    every series step regressed on the others: linear cost in the length of the series);
    any other model a low-rank plus diagonal Gaussian of rank ``LOWRANK_AUTO_RANK``.
    See ``docs/families.md`` for the measurements behind the choice.

    Examples
    --------
    >>> from variational.model.handlers import SiteLayout
    >>> series = [SiteLayout("s", (), (), 0, 1), SiteLayout("x", (500,), (500,), 1, 500)]
    >>> default_family(5)[0], default_family(501, series)[0], default_family(501)[0]
    ('fullrank_advi', 'structured', 'lowrank_advi')
    """
    dim = int(dim)
    if dim <= FULLRANK_MAX_DIM:
        return "fullrank_advi", {}
    chains = find_chains(layout or ())
    if chains and logp is not None:   # exchangeable group effects are no series
        chains = coupled_chains(chains, logp, at, data)
    if chains and dim - sum(int(np.prod(s)) for _, s in chains) <= FULLRANK_MAX_DIM:
        return "structured", {"chains": chains}
    return "lowrank_advi", {"rank": min(LOWRANK_AUTO_RANK, dim)}


def default_method(dim: int, layout: Any = None) -> str:
    """The name of the family ``method="auto"`` chooses (see :func:`default_family`).

    Examples
    --------
    >>> default_method(5), default_method(175)
    ('fullrank_advi', 'lowrank_advi')
    """
    return default_family(dim, layout)[0]
