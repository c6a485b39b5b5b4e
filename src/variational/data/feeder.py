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
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import DataError
from .columns import as_columns, check_finite, num_rows
from .sources import Source

__all__ = ["row_stream", "BatchCutter", "Feeder", "iter_batches"]


def _take(cols: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {c: a[idx] for c, a in cols.items()}


def _cat(parts: list[dict[str, np.ndarray]], columns: list[str]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {c: np.concatenate([p[c] for p in parts]) for c in columns}


def row_stream(source: Source, seed: int, shuffle: bool = True, start_row: int = 0,
               check: Callable[[dict, str], None] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The endless stream of shuffled rows, epoch after epoch (see the module documentation).

    Each item is a dict of columns with some rows. Every epoch's row count is checked against
    ``source.num_rows``. ``start_row`` starts the stream that many rows in (``epoch =
    start_row // N``, then ``start_row % N`` rows of that epoch are read and dropped), so that
    a resumed fit reads exactly the rows the uninterrupted one reads. ``check(chunk, where)``
    is called on every chunk read (the model's checks of its observed values).
    """
    cols, hold = source.columns, source.shuffle_buffer
    n_rows = int(source.num_rows or 0)
    epoch, skip = (divmod(int(start_row), n_rows) if n_rows else (0, 0))
    while True:
        rng = np.random.default_rng([seed, epoch]) if shuffle else None
        buf: dict[str, np.ndarray] | None = None
        count = 0
        for chunk in source.checked_chunks(rng, check):
            rows = len(chunk[cols[0]])
            count += rows
            buf = chunk if buf is None else _cat([buf, chunk], cols)
            n = len(buf[cols[0]])
            if n > hold:
                perm = rng.permutation(n) if rng is not None else np.arange(n)
                out, buf = _take(buf, perm[: n - hold]), _take(buf, perm[n - hold:])
                out, skip = _drop(out, skip, cols)
                if out is not None:
                    yield out
        if count != source.num_rows:
            which = "its first epoch" if epoch == 0 else f"epoch {epoch} (a later pass)"
            raise DataError(f"{source!r} gave {count} rows in {which}, but num_rows is "
                            f"{source.num_rows}; every pass over the data must give the same rows "
                            f"(for an iterable, give the true number of rows)")
        if buf is not None and len(buf[cols[0]]):
            n = len(buf[cols[0]])
            out, skip = _drop(_take(buf, rng.permutation(n)) if rng is not None else buf, skip, cols)
            if out is not None:
                yield out
        epoch += 1


def _drop(rows: dict[str, np.ndarray], skip: int, cols: list[str]) -> tuple[dict | None, int]:
    """Drop the first ``skip`` rows; returns the rest (None when nothing is left) and rows still to drop."""
    if not skip:
        return rows, 0
    n = len(rows[cols[0]])
    if n <= skip:
        return None, skip - n
    return {c: a[skip:] for c, a in rows.items()}, 0


class BatchCutter:
    """Cut a row stream into blocks of consecutive batches, shape ``(k, B, ...)`` per column."""

    def __init__(self, rows: Iterator[dict[str, np.ndarray]], columns: list[str], batch_size: int) -> None:
        self.rows, self.columns, self.batch_size = rows, columns, int(batch_size)
        self.parts: list[dict[str, np.ndarray]] = []
        self.have = 0
        self.error: BaseException | None = None

    def take(self, k: int, stopped: Callable[[], bool] = lambda: False) -> dict[str, np.ndarray] | None:
        """The next ``k`` batches, or None when ``stopped()`` became true first (nothing is lost).

        When the stream fails, the whole batches read before the failure come first (a shorter
        block) and the error is raised by the next call.
        """
        if self.error is not None:
            raise self.error
        need = self.batch_size * int(k)
        while self.have < need:
            if stopped():
                return None
            try:
                r = next(self.rows)
            except Exception as e:
                if self.have < self.batch_size:
                    raise
                self.error, k = e, self.have // self.batch_size
                need = self.batch_size * k
                break
            self.parts.append(r)
            self.have += len(r[self.columns[0]])
        allrows = _cat(self.parts, self.columns)
        block = {c: a[:need].reshape((int(k), self.batch_size) + a.shape[1:]) for c, a in allrows.items()}
        self.have -= need
        self.parts = [{c: a[need:] for c, a in allrows.items()}] if self.have else []
        return block


class _Reader:
    """One background thread reading one row stream into blocks (a restart makes a new one)."""

    def __init__(self, feeder: "Feeder", at: int) -> None:
        self.f = feeder
        rows = row_stream(feeder.source, feeder.seed, start_row=int(at) * feeder.batch_size,
                          check=feeder._check_chunk)
        self.cutter = BatchCutter(rows, feeder.source.columns, feeder.batch_size)
        self.queue: queue.Queue = queue.Queue(maxsize=feeder.depth)
        self.produced = int(at)        # first batch of the next block to read
        self.held: Any = None          # a block read but not yet queued
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.abandoned = False         # its thread did not stop in time: never restart it

    def _wait(self) -> bool:
        """Wait until there is work (a batch allowed, or room in the queue); False when stopped."""
        with self.f._wake:
            while not self.stop.is_set() and (
                    self.produced >= self.f._limit if self.held is None else self.queue.full()):
                self.f._wake.wait()
        return not self.stop.is_set()

    def work(self) -> None:
        while self._wait():
            if self.held is None:
                k = min(self.f.capacity, self.f._limit - self.produced)
                try:
                    block = self.cutter.take(k, self.stop.is_set)
                except BaseException as e:  # delivered to the consumer by feed()
                    block = e
                if block is None:
                    return  # stopped mid-block; the cutter keeps the rows it had read
                self.held = (self.produced, block)
                self.produced += 0 if isinstance(block, BaseException) else _length(block)
            self.queue.put_nowait(self.held)  # room is guaranteed: this thread is the only producer
            item, self.held = self.held, None
            if isinstance(item[1], BaseException):
                return

    def start(self) -> None:
        if self.thread is not None and self.thread.is_alive() and not self.stop.is_set():
            return
        self.stop.clear()
        self.thread = threading.Thread(target=self.work, name="variational-prefetch", daemon=True)
        self.thread.start()

    def close(self, timeout: float) -> None:
        self.stop.set()
        with self.f._wake:
            self.f._wake.notify_all()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
            self.abandoned = self.thread.is_alive()  # stuck in a read: a new reader takes over
        self.thread = None


class Feeder:
    """Prefetch blocks of batches in a background thread; ``feed(n, at)`` for the engine.

    ``feed(n, at)`` returns a dict of column -> array with leading dimension ``capacity`` whose
    first ``n`` entries are the batches ``at, at + 1, ...`` of the stream (batch ``t`` is the
    ``t``-th run of ``batch_size`` rows; the rest is padding the loop never reads). Asking by
    batch number makes the stream exact whatever happens between calls: a chunk that Ctrl-C
    stopped before it ran is fed again (the blocks handed out are kept until a later ``at``
    passes them), and a fit resumed at step ``t`` restarts the reader at row ``t * B``.
    The reader reads ahead no further than :meth:`extend` allows (the steps the fit will run),
    plus the shuffle buffer and the piece being read. Errors raised while reading (NaN,
    missing column, wrong length, unreadable file) are raised by ``feed``.
    """

    def __init__(self, source: Source, batch_size: int, capacity: int, seed: int, depth: int = 2) -> None:
        self.source, self.batch_size, self.capacity = source, int(batch_size), int(capacity)
        self.seed, self.depth = seed, depth
        self.check: Callable[[dict, str], None] | None = None  # the model's check of each chunk
        self._limit = 0                          # the reader reads batches below this index
        self._wake = threading.Condition()
        self._reader: _Reader | None = None
        self._restart(0)

    def _restart(self, at: int) -> None:
        """Drop everything read and start reading at batch ``at``."""
        if self._reader is not None:
            self._reader.close(timeout=10.0)     # a source need not be read by two threads at once
        self._reader = _Reader(self, at)
        self._received = int(at)                 # first batch of the next block from the reader
        self._kept: list[tuple[int, dict[str, np.ndarray]]] = []   # (first batch, block) handed out
        self._next = int(at)

    def _check_chunk(self, chunk: dict, where: str) -> None:
        if self.check is not None:
            self.check(chunk, where)

    def start(self) -> None:
        """Start (or resume) the background reader."""
        if self._reader.abandoned:
            kept, nxt = self._kept, self._next
            self._restart(self._received)
            self._kept, self._next = kept, nxt
        self._reader.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the background reader and wait for it; the stream resumes where it was on the next ``feed``."""
        self._reader.close(timeout)

    @property
    def running(self) -> bool:
        """Whether the background reader thread is alive."""
        t = self._reader.thread
        return t is not None and t.is_alive()

    def extend(self, limit: int) -> None:
        """Let the reader read up to batch ``limit`` (exclusive)."""
        with self._wake:
            if int(limit) > self._limit:
                self._limit = int(limit)
                self._wake.notify_all()

    def _receive(self) -> None:
        """Move the next block from the reader into the kept blocks."""
        self.start()
        start, block = self._reader.queue.get()
        with self._wake:
            self._wake.notify_all()  # room in the queue
        if isinstance(block, BaseException):
            self._reader.queue.put((start, block))  # every later call fails the same way
            raise block
        if start != self._received:  # a block was lost to an interrupt between get and here
            raise _Gap
        self._kept.append((start, block))
        self._received = start + len(next(iter(block.values())))

    def feed(self, n: int, at: int | None = None) -> dict[str, np.ndarray]:
        """The batches ``at .. at + n - 1`` (default: the next ones), padded to ``capacity``."""
        n, at = int(n), self._next if at is None else int(at)
        self._kept = [(s, b) for s, b in self._kept if s + _length(b) > at]
        if (self._kept and self._kept[0][0] > at) or (not self._kept and self._received != at):
            self._restart(at)
        self.extend(at + n)
        try:
            out = self._assemble(n, at)
        except _Gap:
            self._restart(at)
            self.extend(at + n)
            out = self._assemble(n, at)
        self._next = at + n
        return out

    def _assemble(self, n: int, at: int) -> dict[str, np.ndarray]:
        while self._received < at + n:
            self._receive()
        first, block = self._kept[0]
        if first == at and n == self.capacity == _length(block):
            return block
        out = {c: np.zeros((self.capacity,) + a.shape[1:], a.dtype) for c, a in block.items()}
        for s, b in self._kept:
            lo, hi = max(at, s), min(at + n, s + _length(b))
            if hi > lo:
                for c in out:
                    out[c][lo - at:hi - at] = b[c][lo - s:hi - s]
        return out


def _length(block: dict[str, np.ndarray]) -> int:
    return len(next(iter(block.values())))


class _Gap(Exception):
    """The reader's blocks are not contiguous any more (one was lost to an interrupt)."""


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
