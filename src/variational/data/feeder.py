"""The row stream of a streaming source and the background thread that prefetches it.

A :class:`Source` is a dataset that is read piece by piece: the row groups of a Parquet file or
of a folder of Parquet shards (:func:`parquet`), blocks of rows of ``.npy`` files opened as
memory maps (:func:`npy`), or the chunks produced by any Python iterable or generator of dicts
of arrays (:func:`iterable`).

How rows are ordered (without replacement):

- each epoch reads every piece once, in a fresh random order of the pieces (row groups, shards,
  ``.npy`` blocks; an iterable's chunks keep the order the iterable gives them);
- the rows pass through a shuffle buffer: each piece is joined to the ``shuffle_buffer`` rows
  held back from earlier pieces, the union is permuted, and all but ``shuffle_buffer`` rows are
  emitted; at the end of the epoch the rest is emitted in random order. So a row can move
  anywhere within its own piece and up to about ``shuffle_buffer`` rows later, but rows of
  distant pieces are never mixed within a batch unless their pieces are read one after the
  other. Rows that sit in the same piece stay near each other in every epoch.
- the emitted rows form a continuous stream of epochs cut into batches (a batch may straddle
  two epochs); within an epoch no row is lost or read twice.

A background thread reads, checks (missing columns, NaN, lengths), shuffles and assembles the
next chunk of batches while the device computes the current one; memory stays
O(chunk + buffer + one piece), independent of N.
"""


from __future__ import annotations

import queue
import threading
from typing import Any, Iterator

import numpy as np

from ..errors import DataError
from .columns import as_columns, check_finite, num_rows
from .sources import Source

__all__ = ["row_stream", "batch_blocks", "Feeder", "iter_batches"]


def _take(cols: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {c: a[idx] for c, a in cols.items()}


def _cat(parts: list[dict[str, np.ndarray]], columns: list[str]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {c: np.concatenate([p[c] for p in parts]) for c in columns}


def row_stream(source: Source, seed: int, shuffle: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """The endless stream of shuffled rows, epoch after epoch (see the module documentation).

    Each item is a dict of columns with some rows. The first epoch's row count is checked
    against ``source.num_rows``.
    """
    cols, hold, epoch = source.columns, source.shuffle_buffer, 0
    while True:
        rng = np.random.default_rng([seed, epoch]) if shuffle else None
        buf: dict[str, np.ndarray] | None = None
        count = 0
        for chunk in source.checked_chunks(rng):
            rows = len(chunk[cols[0]])
            count += rows
            buf = chunk if buf is None else _cat([buf, chunk], cols)
            n = len(buf[cols[0]])
            if n > hold:
                perm = rng.permutation(n) if rng is not None else np.arange(n)
                yield _take(buf, perm[: n - hold])
                buf = _take(buf, perm[n - hold:])
        if epoch == 0 and count != source.num_rows:
            raise DataError(f"{source!r} gave {count} rows in its first epoch, but num_rows is "
                            f"{source.num_rows}; give the true number of rows")
        if count == 0:
            raise DataError(f"{source!r} is empty (0 rows)")
        if buf is not None and len(buf[cols[0]]):
            n = len(buf[cols[0]])
            yield _take(buf, rng.permutation(n)) if rng is not None else buf
        epoch += 1


def batch_blocks(rows: Iterator[dict[str, np.ndarray]], columns: list[str], batch_size: int,
                 batches: int) -> Iterator[dict[str, np.ndarray]]:
    """Cut a row stream into blocks of ``batches`` consecutive batches, shape ``(batches, B, ...)``."""
    need = batch_size * batches
    parts: list[dict[str, np.ndarray]] = []
    have = 0
    for r in rows:
        parts.append(r)
        have += len(r[columns[0]])
        while have >= need:
            allrows = _cat(parts, columns)
            block = {c: a[:need].reshape((batches, batch_size) + a.shape[1:]) for c, a in allrows.items()}
            rest = {c: a[need:] for c, a in allrows.items()}
            have -= need
            parts = [rest] if have else []
            yield block


class Feeder:
    """Prefetch blocks of batches in a background thread; ``feed(n)`` for the engine.

    ``feed(n)`` returns a dict of column -> array with leading dimension ``capacity`` whose first
    ``n`` entries are the next ``n`` batches (the rest is padding that the loop never reads).
    Errors raised while reading (NaN, missing column, wrong length) are raised by ``feed``.
    """

    def __init__(self, source: Source, batch_size: int, capacity: int, seed: int, depth: int = 2) -> None:
        self.source, self.batch_size, self.capacity = source, int(batch_size), int(capacity)
        self._gen = batch_blocks(row_stream(source, seed), source.columns, self.batch_size, self.capacity)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._block: dict[str, np.ndarray] | None = None
        self._offset = 0
        self._held: Any = None

    def _work(self) -> None:
        while not self._stop.is_set():
            if self._held is None:
                try:
                    self._held = next(self._gen)
                except BaseException as e:  # delivered to the consumer by feed()
                    self._held = e
            try:
                self._queue.put(self._held, timeout=0.1)
            except queue.Full:
                continue
            item, self._held = self._held, None
            if isinstance(item, BaseException):
                return

    def start(self) -> None:
        """Start (or resume) the background reader."""
        if self._thread is not None and self._thread.is_alive():
            if not self._stop.is_set():
                return
            self._thread.join()
        self._stop.clear()
        self._thread = threading.Thread(target=self._work, name="variational-prefetch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the background reader; the stream resumes where it was on the next ``feed``."""
        self._stop.set()

    def _next_block(self) -> dict[str, np.ndarray]:
        self.start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._queue.put(item)  # every later call fails the same way
            raise item
        return item

    def feed(self, n: int) -> dict[str, np.ndarray]:
        """The next ``n`` batches, padded to ``capacity``."""
        n = int(n)
        if self._block is None:
            self._block, self._offset = self._next_block(), 0
        if self._offset == 0 and n == self.capacity:
            out, self._block = self._block, None
            return out
        out = {c: np.zeros_like(a) for c, a in self._block.items()}
        filled = 0
        while filled < n:
            if self._block is None:
                self._block, self._offset = self._next_block(), 0
            k = min(n - filled, self.capacity - self._offset)
            for c in out:
                out[c][filled:filled + k] = self._block[c][self._offset:self._offset + k]
            filled += k
            self._offset += k
            if self._offset == self.capacity:
                self._block = None
        return out


def iter_batches(data: Any, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """All rows of ``data`` (columns or a source) in file order, ``batch_size`` rows at a time.

    The last batch holds the remaining rows (it may be shorter).
    """
    if not isinstance(data, Source):
        cols = as_columns(data)
        n = num_rows(cols)
        check_finite(cols)
        for start in range(0, n, batch_size):
            yield {k: v[start:start + batch_size] for k, v in cols.items()}
        return
    parts, have, cols = [], 0, data.columns
    for chunk in data.checked_chunks(None):
        parts.append(chunk)
        have += len(chunk[cols[0]])
        while have >= batch_size:
            allrows = {c: np.concatenate([p[c] for p in parts]) for c in cols}
            yield {c: a[:batch_size] for c, a in allrows.items()}
            parts = [{c: a[batch_size:] for c, a in allrows.items()}]
            have -= batch_size
    if have:
        yield {c: np.concatenate([p[c] for p in parts]) for c in cols}
