"""Row numbers that travel with each batch (fits with local latent variables).

A fit with per-row variational parameters must know which rows a batch holds. In memory,
:class:`RowBatches` adds the rows' numbers to each batch under :data:`ROWS` (and, for a model
that subsamples itself, hands it all columns and only the numbers). A streaming source is
wrapped by :class:`RowNumbered`, which gives every row its number in the file's own order
(row groups, ``.npy`` blocks or chunks in order), so that a shuffled stream still says where
each of its rows came from.
"""

from __future__ import annotations

from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from ..model.local import ROWS
from .batching import EpochState, Minibatches, _advance
from .sources import Source

__all__ = ["ROWS", "RowBatches", "RowNumbered"]


class RowBatches(Minibatches):
    """Minibatches without replacement that carry their row numbers under :data:`ROWS`.

    ``gather=False`` (a model with ``numpyro.plate(..., subsample_size=)``): the batch holds
    every column whole plus the row numbers, and the model indexes its own columns.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> rb = RowBatches(6, 3)
    >>> step = jax.jit(rb.next)                      # as in the compiled loop: one program
    >>> b, ds = step(rb.init(jax.random.PRNGKey(0)), {"x": 10 * jnp.arange(6)}, 0, None, None)
    >>> bool(jnp.all(b["x"] == 10 * b[ROWS]))
    True
    """

    def __init__(self, num_rows: int, batch_size: int, gather: bool = True) -> None:
        super().__init__(num_rows, batch_size, replace=False, needs_key=False)
        self.gather = bool(gather)

    def next(self, data_state: EpochState, data: Any, step: jax.Array, key: jax.Array, x: Any) -> tuple[Any, EpochState]:
        idx = self.indices(data_state, key)
        batch = {k: jnp.take(v, idx, axis=0, mode="clip") for k, v in data.items()} if self.gather else dict(data)
        batch[ROWS] = idx
        return batch, _advance(data_state, self.batch_size)


class RowNumbered(Source):
    """``source`` with one more column, :data:`ROWS`: each row's number in file order.

    Examples
    --------
    >>> import numpy as np
    >>> from variational.data import iterable
    >>> src = RowNumbered(iterable(lambda: iter([{"y": np.zeros(2)}, {"y": np.ones(3)}]), num_rows=5))
    >>> src.head(5)[ROWS].tolist()
    [0, 1, 2, 3, 4]
    """

    def __init__(self, source: Source) -> None:
        self.inner = source
        self.columns = list(source.columns) + [ROWS]
        self.num_rows = source.num_rows
        self.shuffle_buffer = source.shuffle_buffer
        self._layout = None

    def fingerprint(self) -> dict:
        return self.inner.fingerprint()

    def epoch_chunks(self, rng: np.random.Generator | None) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        if type(self.inner).epoch_chunks is not Source.epoch_chunks:   # an iterable: its own order
            at = 0
            for label, cols in self.inner.epoch_chunks(rng):
                n = len(np.asarray(next(iter(cols.values()))))
                yield label, {**cols, ROWS: np.arange(at, at + n, dtype=np.int32)}
                at += n
            return
        pieces = self.inner.pieces()
        starts = self._starts(pieces)
        order = range(len(pieces)) if rng is None else rng.permutation(len(pieces))
        for i in order:   # (row numbers follow file order, whatever order the pieces are read in)
            label, cols = self.inner.read(pieces[int(i)])
            n = len(np.asarray(next(iter(cols.values()))))
            yield label, {**cols, ROWS: np.arange(starts[int(i)], starts[int(i)] + n, dtype=np.int32)}

    def _starts(self, pieces: list) -> list[int]:
        """First row number of each piece (file order)."""
        sizes = []
        for p in pieces:
            if hasattr(self.inner, "files") and isinstance(p, tuple):   # Parquet: (file, row group)
                sizes.append(self.inner.files[p[0]].metadata.row_group(p[1]).num_rows)
            else:                                                       # .npy: p is the first row
                sizes.append(min(getattr(self.inner, "chunk_rows", 0), self.num_rows - p))
        return [0] + list(np.cumsum(sizes)[:-1].astype(int))

    def __repr__(self) -> str:
        return repr(self.inner)
