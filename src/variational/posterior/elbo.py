"""The ELBO of an approximation on all rows of a dataset, accumulated batch by batch.

Memory is O(draws x batch), whatever N, so it works for streamed data too.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from ..data import Source, as_columns, num_rows
from ..data.feeder import iter_batches
from ..errors import DataError, ModelError
from ..model import LogDensity
from ..model.handlers import total_size_factor

__all__ = ["full_data_elbo"]


def _declared_factor(site: dict, n_rows: int) -> float:
    """The factor a site declared with ``total_size=`` gets on all ``n_rows`` rows (else 1)."""
    total = (site.get("infer") or {}).get("total_size")
    if total is None or not n_rows:
        return 1.0
    shape = tuple(np.shape(site["value"]))
    return total_size_factor(total, (n_rows, *shape[1:]) if shape else ())


def full_data_elbo(ld: LogDensity, family: Any, params: Any, data: Any, key: jax.Array,
                   num_draws: int = 100, batch_size: int | None = None) -> tuple[float, float]:
    """ELBO on all rows of ``data``, accumulated batch by batch; returns (estimate, std. error).

    For each of ``num_draws`` draws z of q, ``log p(data, z) = sum_b log p(batch_b, z) -
    (K - 1) log p(z)`` over the K batches (each batch's log joint counts the prior once), with no
    N/B scaling, so that every row counts once; a site declared with ``total_size=`` is scaled
    by ``total_size / N`` (N the rows of ``data``), the posterior it declares. A model without
    data columns is evaluated once. Memory is O(num_draws x batch_size).
    """
    if ld.needs_key:
        raise ModelError("the model subsamples with numpyro.plate(subsample_size=...); a full-data "
                         "ELBO needs a model that reads every row it is given")
    z, log_q = family.sample_and_log_q(params, key, int(num_draws))
    if isinstance(data, Source):
        n_rows = int(data.num_rows or 0)
    else:
        data = as_columns(data)
        n_rows = num_rows(data) if data else 0
    one = {n: _declared_factor(ld.trace_sites[n], n_rows) for n in ld.observed_names}
    one.update({n: 1.0 for n in ld.enumerated})  # (a per-row discrete site is likelihood)
    zero = {n: 0.0 for n in one}

    def joint(rule: dict) -> Callable:
        f = lambda zz, batch: ld.log_joint(zz, batch, rule)  # noqa: E731
        return jax.jit(jax.vmap(f, in_axes=(0, None)))

    lp_one, lp_prior = joint(one), joint(zero)
    bs = int(batch_size) if batch_size is not None else max(1, (1 << 20) // int(num_draws))
    total = np.zeros(z.shape[0])
    first, k = None, 0
    if not isinstance(data, Source) and not data:  # a model without data columns: one evaluation
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
