"""Draws in the model's own space, and the posterior of the enumerated discrete sites.

- :func:`constrain_draws`: draws of q (flat, unconstrained) -> named constrained values, with the
  model's parameters at their fitted values and each enumerated discrete site drawn from its
  exact conditional posterior given the draw (``infer_discrete``);
- :func:`discrete_probs`: the posterior probabilities of each enumerated site's values,
  ``E_q[p(z_i = k | x, theta)]``, the exact conditional probabilities averaged over draws of
  q (Rao-Blackwellised: no sampling noise from the discrete draws themselves).

Functions of a fit (duck-typed, never imported).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from .. import data as _data
from ..compilation import run_traced
from ..engine.model_params import MODEL
from ..errors import ModelError
from ..model import RNG_KEY
from ..model.params import PARAMS

__all__ = ["constrain_draws", "constrain_program", "discrete_probs"]


def _batch(fit: Any, data: Any = None) -> dict:
    """The data the model sees (training rows, or ``data``), with the fitted parameters."""
    if data is not None:
        batch = dict(_data.to_device(_data.as_columns(data)))
    else:
        batch = dict(fit.data if fit._plan is None else fit._plan.trace_data)
    if fit._logdensity.params:
        batch[PARAMS] = fit._answer_params[MODEL]
    return batch


def constrain_program(fit: Any, z: Any, key: jax.Array | None = None) -> tuple[Any, ...]:
    """The program of :func:`constrain_draws` for draws like ``z``: its name, its function and
    its arguments (for :func:`variational.compilation.run_traced`)."""
    ld = fit._logdensity
    one = lambda zz, kk, batch: ld.constrain(zz, batch if kk is None else {**batch, RNG_KEY: kk})  # noqa: E731
    keys = None
    if ld.enumerated:
        key = jax.random.fold_in(fit.key, 2**23) if key is None else key
        keys = jax.random.split(key, z.shape[0])
    return "constrain", jax.vmap(one, in_axes=(0, 0, None)), z, keys, _batch(fit)


def constrain_draws(fit: Any, z: jax.Array, key: jax.Array | None = None) -> dict[str, np.ndarray]:
    """Draws ``z`` (n, D) -> name -> constrained values (n, ...); see the module's docstring."""
    drop = () if fit._plan is None else fit._plan.per_row
    return {k: np.asarray(v) for k, v in run_traced(*constrain_program(fit, z, key)).items() if k not in drop}


def discrete_probs(fit: Any, n: int, key: jax.Array, data: Any = None) -> dict[str, np.ndarray]:
    """``fit.discrete_probs``: name -> (*site_shape, K) posterior probabilities of the values."""
    ld = fit._logdensity
    if not ld.enumerated:
        raise ModelError("the model has no enumerated discrete sites (infer={'enumerate': 'parallel'})")
    if int(n) < 1:
        raise ValueError(f"n={n!r} must be a positive number of draws")
    if data is None and fit._plan is not None and fit._plan.feeder is not None:
        raise ModelError("a streamed fit has no rows in memory: pass the rows as discrete_probs(data=...)")
    z = fit.family.draw(fit._answer_params, key, int(n))
    batch = _batch(fit, data if data is not None or fit._plan is None else
                   {k: np.asarray(v) for k, v in fit.data.items()})
    mean = jax.jit(lambda zs, b: jax.tree_util.tree_map(
        lambda p: p.mean(0), jax.lax.map(lambda zz: ld.discrete_probs(zz, b), zs, batch_size=64)))
    return {k: np.asarray(v) for k, v in mean(z, batch).items()}
