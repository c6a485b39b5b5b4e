"""The ELBO of an approximation on all rows of a dataset, accumulated batch by batch.

Memory is O(draws x batch), whatever N, so it works for streamed data too.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from ..data.feeder import iter_batches
from ..errors import DataError, ModelError
from ..model import LogDensity

__all__ = ["full_data_elbo"]


def full_data_elbo(ld: LogDensity, family: Any, params: Any, data: Any, key: jax.Array,
                   num_draws: int = 100, batch_size: int | None = None) -> tuple[float, float]:
    """ELBO on all rows of ``data``, accumulated batch by batch; returns (estimate, std. error).

    For each of ``num_draws`` draws z of q, ``log p(data, z) = sum_b log p(batch_b, z) -
    (K - 1) log p(z)`` over the K batches (each batch's log joint counts the prior once), with no
    N/B scaling and ``total_size`` ignored, so that every row counts once. Memory is
    O(num_draws x batch_size).
    """
    if ld.needs_key:
        raise ModelError("the model subsamples with numpyro.plate(subsample_size=...); a full-data "
                         "ELBO needs a model that reads every row it is given")
    z, log_q = family.sample_and_log_q(params, key, int(num_draws))
    likelihood = ld.observed_names + ld.enumerated  # (a per-row discrete site is likelihood)
    one = {n: 1.0 for n in likelihood}
    zero = {n: 0.0 for n in likelihood}

    def joint(rule: dict) -> Callable:
        f = lambda zz, batch: ld.log_joint(zz, batch, rule)  # noqa: E731
        return jax.jit(jax.vmap(f, in_axes=(0, None)))

    lp_one, lp_prior = joint(one), joint(zero)
    bs = int(batch_size) if batch_size is not None else max(1, (1 << 20) // int(num_draws))
    total = np.zeros(z.shape[0])
    first, k = None, 0
    if isinstance(data, dict) and not data:  # a model without data columns: one evaluation
        data = None
        total, first, k = np.asarray(lp_one(z, {}), dtype=np.float64), {}, 1
    for batch in (iter_batches(data, bs) if data is not None else ()):
        total = total + np.asarray(lp_one(z, batch), dtype=np.float64)
        first = batch if first is None else first
        k += 1
    if first is None:
        raise DataError("fit.elbo(data) got no rows")
    vals = total - (k - 1) * np.asarray(lp_prior(z, first), np.float64) - np.asarray(log_q, np.float64)
    return float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else float("nan")
