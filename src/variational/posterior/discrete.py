"""Draws in the model's own space, and the posterior of the enumerated discrete sites.

Draws of q in the model's space, with each enumerated discrete site drawn from its exact
conditional posterior given the draw, are :meth:`.approximation.Approximation.constrain`'s.

- :func:`discrete_probs`: the posterior probabilities of each enumerated site's values,
  ``E_q[p(z_i = k | x, theta)]``, the exact conditional probabilities averaged over draws of
  q (Rao-Blackwellised: no sampling noise from the discrete draws themselves).

A function of the approximation (:class:`.approximation.Approximation`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from .. import data as _data
from ..errors import ModelError, whole_number
from .approximation import Approximation

__all__ = ["discrete_probs"]


def discrete_probs(q: Approximation, n: int, key: jax.Array, data: Any = None) -> dict[str, np.ndarray]:
    """``fit.discrete_probs``: name -> (*site_shape, K) posterior probabilities of the values."""
    ld = q.raw_logdensity
    if not ld.enumerated:
        raise ModelError("the model has no enumerated discrete sites (infer={'enumerate': 'parallel'})")
    n = whole_number("n", n, 1)
    if data is None and q.streamed:
        raise ModelError("a streamed fit has no rows in memory: pass the rows as discrete_probs(data=...)")
    z = q.family.draw(q.params, key, n)
    if data is None and q.plan is not None:   # all rows, not the batch the model was traced with
        data = {k: np.asarray(v) for k, v in q.data.items()}
    batch = q.model_batch(None if data is None else dict(_data.to_device(_data.as_columns(data))))
    mean = jax.jit(lambda zs, b: jax.tree_util.tree_map(
        lambda p: p.mean(0), jax.lax.map(lambda zz: ld.discrete_probs(zz, b), zs, batch_size=64)))
    return {k: np.asarray(v) for k, v in mean(z, batch).items()}
