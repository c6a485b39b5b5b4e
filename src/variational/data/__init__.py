"""Data layer: user data -> columns (checked once) -> plan (rows, scaling, batcher) -> engine.

Owns: columns and their checks (:mod:`.columns`), the batchers the compiled loop calls
(:mod:`.batching`: full data, in-memory minibatches with the on-device shuffle, streamed
batches), streaming sources (:mod:`.sources`) and their prefetching row stream
(:mod:`.feeder`), minibatch planning and N/B scaling (:mod:`.plan`), and the bundled datasets
(:mod:`.datasets`).
May import: :mod:`variational.model`, :mod:`variational.errors`, numpyro, jax, pyarrow.

The public names are ``vi.data.parquet``, ``vi.data.npy``, ``vi.data.iterable`` (streaming
sources) and ``vi.as_columns``.
"""

from .batching import EpochState, FullBatch, KeyedFullBatch, Minibatches, Streamed, shuffled_index
from .columns import as_columns, check_finite, num_rows, read_columns, to_device
from .sources import Source, iterable, npy, parquet

__all__ = ["as_columns", "read_columns", "num_rows", "to_device", "check_finite", "Source", "parquet", "npy",
           "iterable", "Minibatches", "Streamed", "FullBatch", "KeyedFullBatch", "EpochState",
           "shuffled_index"]
