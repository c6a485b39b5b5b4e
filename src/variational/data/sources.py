"""Streaming sources: data larger than memory, read piece by piece.

A :class:`Source` is a dataset that is read piece by piece: the row groups of a Parquet file or
of a folder of Parquet shards (:func:`parquet`), blocks of rows of ``.npy`` files opened as
memory maps (:func:`npy`), or the chunks produced by any Python iterable or generator of dicts
of arrays (:func:`iterable`). How their rows are shuffled and prefetched is in :mod:`.feeder`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jax
import numpy as np

from ..errors import DataError
from .columns import check_finite, exact_for_device
from .files import NpyFile, digest as _digest

__all__ = ["Source", "parquet", "npy", "iterable"]


def _host_dtype(name: str, a: np.ndarray, where: str) -> np.ndarray:
    """Cast to the dtypes the device will use (float32/int32 unless 64-bit mode is on), exactly."""
    a = exact_for_device(name, a, where)
    if not jax.config.jax_enable_x64 and a.dtype == np.float64:
        return a.astype(np.float32)
    return a


class Source:
    """A dataset read piece by piece (base class of the streaming sources).

    Subclasses define :meth:`pieces` (reorderable units) and :meth:`read`; an iterable source
    overrides :meth:`epoch_chunks` instead.

    Attributes
    ----------
    columns : list of str
        The columns passed to the model.
    num_rows : int or None
        N, when the source knows it (file metadata) or the user gave it.
    shuffle_buffer : int
        Rows held back and mixed with the next piece (see the module documentation).
    """

    columns: list[str]
    num_rows: int | None
    shuffle_buffer: int = 0
    _layout: dict[str, tuple] | None = None

    def fingerprint(self) -> dict:
        """What identifies this source's rows and their order: kind, columns, N, files, settings.

        Stored in checkpoints, so that loading or resuming with another source is refused.
        """
        return {"kind": type(self).__name__, "columns": list(self.columns), "num_rows": self.num_rows,
                "shuffle_buffer": int(self.shuffle_buffer)}

    def pieces(self) -> list[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self, piece: Any) -> tuple[str, dict[str, np.ndarray]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def epoch_chunks(self, rng: np.random.Generator | None) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """``(label, columns)`` of every piece, in random order (file order when ``rng`` is None)."""
        ps = self.pieces()
        order = range(len(ps)) if rng is None else rng.permutation(len(ps))
        for i in order:
            yield self.read(ps[int(i)])

    def checked_chunks(self, rng: np.random.Generator | None,
                       check: Callable[[dict, str], None] | None = None) -> Iterator[dict[str, np.ndarray]]:
        """:meth:`epoch_chunks` with every chunk checked: columns present, equal lengths, finite.

        ``check(columns, where)`` is called on each chunk too (``where`` names the piece).
        """
        for label, chunk in self.epoch_chunks(rng):
            missing = [c for c in self.columns if c not in chunk]
            if missing:
                raise DataError(f"{label} has no column(s) {missing} (it has {sorted(chunk)}); every "
                                f"chunk must hold the columns {self.columns}")
            cols = {c: np.asarray(chunk[c]) for c in self.columns}
            lengths = {c: (len(a) if a.ndim else None) for c, a in cols.items()}
            if len(set(lengths.values())) != 1 or None in lengths.values():
                raise DataError(f"{label}: columns have different numbers of rows ({lengths}); every "
                                f"column must have one entry per row")
            for c, a in cols.items():
                if a.dtype.kind not in "biuf":
                    raise DataError(f"column '{c}' in {label} has dtype {a.dtype}, which is not numeric")
            check_finite(cols, where=f" in {label}")
            cols = {c: _host_dtype(c, a, f" in {label}") for c, a in cols.items()}
            self._check_layout(label, cols)
            if check is not None:
                check(cols, f" in {label}")
            yield cols

    def _check_layout(self, label: str, cols: dict[str, np.ndarray]) -> None:
        """Every chunk's columns have the row shape and dtype of the first chunk's."""
        here = {c: (tuple(a.shape[1:]), str(a.dtype)) for c, a in cols.items()}
        if self._layout is None:
            self._layout = here
            return
        for c, (shape, dtype) in here.items():
            want = self._layout[c]
            if (shape, dtype) != want:
                raise DataError(f"column '{c}' in {label} has rows of shape {shape} and dtype {dtype}, "
                                f"but the first chunk's are {want[0]} and {want[1]}; every chunk must "
                                f"hold rows of the same shape and dtype")

    def head(self, n: int) -> dict[str, np.ndarray]:
        """The first ``n`` rows (file order), used to trace the model's shapes.

        Read once per source and ``n``: a fit looks for local latent sites and plans its batches
        with the same rows, so a stream is read no further than its steps ask.
        """
        last = self.__dict__.get("_head")
        if last is not None and last[0] == n:
            return dict(last[1])
        cols = self._read_head(n)
        self._head = (n, cols)
        return dict(cols)

    def _read_head(self, n: int) -> dict[str, np.ndarray]:
        got: list[dict[str, np.ndarray]] = []
        have = 0
        for chunk in self.checked_chunks(None):
            got.append(chunk)
            have += len(next(iter(chunk.values())))
            if have >= n:
                break
        if not got or have == 0:
            raise DataError(f"{self!r} is empty (0 rows)")
        return {c: np.concatenate([g[c] for g in got])[:n] for c in self.columns}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(columns={self.columns}, num_rows={self.num_rows})"


class _ParquetSource(Source):
    def __init__(self, path: str | os.PathLike, columns: Sequence[str] | None, shuffle_buffer: int,
                 shard: tuple[int, int] | None = None) -> None:
        import pyarrow.parquet as pq

        p = Path(path)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*.parquet") if f.is_file())
            if not files:
                raise DataError(f"folder '{p}' holds no .parquet files")
        elif p.exists():
            files = [p]
        else:
            raise DataError(f"Parquet path '{p}' does not exist")
        if shard is not None:
            index, count = shard
            if not (0 <= index < count <= len(files)):
                raise DataError(f"shard={shard!r}: need 0 <= index < count <= the {len(files)} "
                                f"file(s) of '{p}'")
            files = files[index::count]
        self.root = p if p.is_dir() else p.parent
        self.paths = files
        self._stats = [self._stat(f) for f in files]
        self.files = []
        for f in files:
            try:
                self.files.append(pq.ParquetFile(f))
            except Exception as e:  # pyarrow's errors: not a Parquet file, truncated footer ...
                raise DataError(f"'{f}' is not a readable Parquet file ({type(e).__name__}: {e})") from None
        # a ParquetFile is not safe to read from two threads at once (the prefetch threads of two
        # fits of one source): one read at a time
        self._read_lock = threading.Lock()
        names = self.files[0].schema_arrow.names
        if columns is None:
            columns = names
        for f, fp in zip(self.files, files):
            have = f.schema_arrow.names
            missing = [c for c in columns if c not in have]
            if missing:
                raise DataError(f"column(s) {missing} not found in '{fp}' (it has {have}); check columns=")
        self.columns = [str(c) for c in columns]
        self.num_rows = sum(f.metadata.num_rows for f in self.files)
        self.shuffle_buffer = int(shuffle_buffer)

    def pieces(self) -> list[tuple[int, int]]:
        return [(i, g) for i, f in enumerate(self.files) for g in range(f.num_row_groups)]

    @staticmethod
    def _stat(f: Path) -> tuple[int, int]:
        st = os.stat(f)
        return st.st_size, st.st_mtime_ns

    def read(self, piece: tuple[int, int]) -> tuple[str, dict[str, np.ndarray]]:
        i, g = piece
        label = f"'{self.paths[i].name}' row group {g}"
        want = self.files[i].metadata.row_group(g).num_rows
        try:
            now = self._stat(self.paths[i])
        except OSError as e:
            raise DataError(f"{label}: the file cannot be read any more ({type(e).__name__}: {e})") from None
        if now != self._stats[i]:
            raise DataError(f"{label}: '{self.paths[i]}' changed since the source was opened (size "
                            f"{self._stats[i][0]} -> {now[0]} bytes, or a new modification time); a "
                            f"fit must read the same files throughout: open the source again")
        try:
            with self._read_lock:
                table = self.files[i].read_row_group(g, columns=self.columns)
            cols = {c: table.column(c).to_numpy() for c in self.columns}
        except Exception as e:  # pyarrow's errors on a truncated or corrupt file
            why = " ".join(str(e).split())
            raise DataError(f"'{self.paths[i]}' row group {g} could not be read ({type(e).__name__}: "
                            f"{why}); expected {want} rows of columns {self.columns}: the file is "
                            f"truncated or corrupt") from None
        if len(table) != want:
            raise DataError(f"{label} gave {len(table)} rows, but the file's metadata says {want}")
        return label, cols

    def fingerprint(self) -> dict:
        files = []
        for f, (size, _) in zip(self.paths, self._stats):
            with open(f, "rb") as fh:  # the footer: schema, row groups, column statistics
                fh.seek(max(0, size - 8))
                tail = fh.read(8)
                n = int.from_bytes(tail[:4], "little") if len(tail) == 8 else 0
                fh.seek(max(0, size - 8 - n))
                footer = fh.read(n)
            files.append([f.relative_to(self.root).as_posix(), size, _digest(footer)])
        return {**super().fingerprint(), "files": files}


class _NpySource(Source):
    def __init__(self, files: Mapping[str, str | os.PathLike] | str | os.PathLike,
                 columns: Sequence[str] | None, chunk_rows: int, shuffle_buffer: int) -> None:
        if isinstance(files, Mapping):
            paths = {str(k): Path(v) for k, v in files.items()}
        else:
            folder = Path(files)
            if not folder.is_dir():
                raise DataError(f"'{folder}' is not a folder of .npy files; pass a folder or a dict "
                                f"column -> path")
            paths = {f.stem: f for f in sorted(folder.glob("*.npy"))}
        if columns is not None:
            missing = [c for c in columns if c not in paths]
            if missing:
                raise DataError(f"column(s) {missing} have no .npy file (found {sorted(paths)}); check columns=")
            paths = {c: paths[c] for c in columns}
        if not paths:
            raise DataError("no .npy files to read")
        self.files = {c: NpyFile(c, p) for c, p in paths.items()}
        lengths = {c: (f.shape[0] if f.shape else None) for c, f in self.files.items()}
        if len(set(lengths.values())) != 1 or None in lengths.values():
            raise DataError(f".npy columns have different numbers of rows ({lengths}); every column "
                            f"must have one entry per row")
        self.columns = list(self.files)
        self.num_rows = int(next(iter(lengths.values())))
        self.chunk_rows = max(1, int(chunk_rows))
        self.shuffle_buffer = int(shuffle_buffer)

    def pieces(self) -> list[int]:
        return list(range(0, self.num_rows, self.chunk_rows))

    def read(self, start: int) -> tuple[str, dict[str, np.ndarray]]:
        stop = min(start + self.chunk_rows, self.num_rows)
        return f"rows {start}:{stop} of the .npy files", {c: f.rows(start, stop) for c, f in self.files.items()}

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "chunk_rows": self.chunk_rows,
                "files": {c: f.fingerprint() for c, f in self.files.items()}}


class _IterableSource(Source):
    def __init__(self, obj: Callable[[], Iterable] | Iterable, num_rows: int | None,
                 columns: Sequence[str] | None, shuffle_buffer: int) -> None:
        self.obj = obj
        self.num_rows = None if num_rows is None else int(num_rows)
        self.shuffle_buffer = int(shuffle_buffer)
        if columns is None:
            first = next(iter(self._fresh()), None)
            if first is None:
                raise DataError("the iterable source yields no chunks (0 rows)")
            columns = list(first)
        self.columns = [str(c) for c in columns]

    def _fresh(self) -> Iterator:
        if callable(self.obj):
            return iter(self.obj())
        if iter(self.obj) is self.obj:  # a generator or iterator: it can be read only once
            return self.obj
        return iter(self.obj)

    def epoch_chunks(self, rng: np.random.Generator | None) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        for i, d in enumerate(self._fresh()):
            if not isinstance(d, Mapping):
                raise DataError(f"chunk {i} of the iterable source is a {type(d).__name__}; each "
                                f"chunk must be a dict of column name -> array")
            yield f"chunk {i}", dict(d)

    def fingerprint(self) -> dict:
        """Columns, N, the reading settings and a hash of the first chunk's values."""
        first = next(iter(self.epoch_chunks(None)), ("", {}))[1]
        return {**super().fingerprint(),
                "first_chunk": _digest(*(np.asarray(first[c]) for c in self.columns if c in first))}

    def head(self, n: int) -> dict[str, np.ndarray]:
        if not callable(self.obj) and iter(self.obj) is self.obj:
            raise DataError("vi.data.iterable got a generator, which can be read only once; pass a "
                            "function that returns a fresh generator (it is called once per epoch)")
        return super().head(n)


def parquet(path: str | os.PathLike, columns: Sequence[str] | None = None, *,
            shuffle_buffer: int = 65_536, shard: tuple[int, int] | None = None) -> Source:
    """A Parquet file or a folder of Parquet shards as a streaming source.

    N comes from the files' metadata. Pieces are row groups: write the files with row groups
    of some 10,000s of rows so that the epoch order of row groups shuffles well.

    Parameters
    ----------
    path : str or path
        A ``.parquet`` file or a folder searched recursively for ``*.parquet``.
    columns : sequence of str, optional
        Columns to read (default: all columns of the first file).
    shuffle_buffer : int
        Rows held back and mixed with the next row group.
    shard : (int, int), optional
        ``(index, count)``: keep the files ``index::count`` of the folder (sorted by name), for
        example ``(jax.process_index(), jax.process_count())`` so that each process of a
        multi-process fit reads its own shards.

    Examples
    --------
    >>> import numpy as np, pandas as pd, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> pd.DataFrame({"y": np.arange(10.0)}).to_parquet(os.path.join(d, "a.parquet"))
    >>> parquet(d).num_rows
    10
    """
    return _ParquetSource(path, columns, shuffle_buffer, shard)


def npy(files: Mapping[str, str | os.PathLike] | str | os.PathLike, columns: Sequence[str] | None = None, *,
        chunk_rows: int = 65_536, shuffle_buffer: int = 65_536) -> Source:
    """``.npy`` files opened as memory maps (one file per column) as a streaming source.

    Parameters
    ----------
    files : mapping or folder
        ``{column: path}``, or a folder whose ``<column>.npy`` files are the columns.
    columns : sequence of str, optional
        Columns to use (default: all).
    chunk_rows : int
        Rows per piece (the unit whose order is shuffled each epoch).
    shuffle_buffer : int
        Rows held back and mixed with the next piece.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> np.save(os.path.join(d, "y.npy"), np.zeros(7))
    >>> npy(d).num_rows
    7
    """
    return _NpySource(files, columns, chunk_rows, shuffle_buffer)


def iterable(fn_or_iterable: Callable[[], Iterable] | Iterable, num_rows: int | None = None, *,
             columns: Sequence[str] | None = None, shuffle_buffer: int = 65_536) -> Source:
    """Any iterable of dicts of arrays (chunks of rows) as a streaming source.

    Parameters
    ----------
    fn_or_iterable : callable or iterable
        A function returning a fresh iterator of chunks (called once per epoch), or a re-iterable
        object such as a list. A generator object can be read only once, so it is refused.
    num_rows : int
        N, the rows of one pass. Required: a source that turns out to give a different number
        of rows is an error at the end of the first epoch.
    columns : sequence of str, optional
        Columns to use (default: the keys of the first chunk).
    shuffle_buffer : int
        Rows held back and mixed with the next chunk.

    Examples
    --------
    >>> import numpy as np
    >>> src = iterable(lambda: ({"y": np.ones(5)} for _ in range(3)), num_rows=15)
    >>> src.columns, src.num_rows
    (['y'], 15)
    """
    return _IterableSource(fn_or_iterable, num_rows, columns, shuffle_buffer)
