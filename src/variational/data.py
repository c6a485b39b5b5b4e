"""Data: named, aligned columns with N rows, and how the compiled loop gets each step's batch.

A dataset is a mapping of column name -> array (or a pandas DataFrame). Every column has the
same number of rows N; a batch is the same rows from every column. Columns are passed to the
model as keyword arguments.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .errors import DataError

__all__ = ["as_columns", "num_rows", "to_device", "Minibatches", "Streamed", "EpochState",
           "check_finite", "Source", "parquet", "npy", "iterable"]


def as_columns(data: Any) -> dict[str, np.ndarray]:
    """Normalise ``data`` (mapping or DataFrame) into a dict of NumPy arrays.

    Raises :class:`~variational.errors.DataError` naming the column when a column is not
    numeric or is empty.

    Examples
    --------
    >>> cols = as_columns({"x": [1.0, 2.0], "y": [0, 1]})
    >>> sorted(cols), cols["x"].dtype.kind
    (['x', 'y'], 'f')
    """
    if data is None:
        return {}
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas DataFrame
        data = {str(c): data[c].to_numpy() for c in data.columns}
    if not isinstance(data, Mapping):
        raise DataError(f"data must be a mapping of column name -> array or a pandas DataFrame, "
                        f"got {type(data).__name__}")
    cols: dict[str, np.ndarray] = {}
    for name, col in data.items():
        a = np.asarray(col)
        if a.dtype.kind not in "biuf":
            raise DataError(f"column '{name}' has dtype {a.dtype}, which is not numeric; encode it "
                            f"first (for example integer codes with pandas.factorize)")
        cols[str(name)] = a
    return cols


def num_rows(cols: Mapping[str, np.ndarray]) -> int:
    """The common number of rows N of the columns; a clear error when they disagree.

    Examples
    --------
    >>> num_rows({"x": np.zeros(3), "y": np.ones(3)})
    3
    """
    lengths = {n: (int(np.shape(a)[0]) if np.ndim(a) else None) for n, a in cols.items()}
    scalars = [n for n, l in lengths.items() if l is None]
    if scalars:
        raise DataError(f"column(s) {scalars} are scalars; data columns need one entry per row "
                        f"(pass constants through model_kwargs instead)")
    distinct = set(lengths.values())
    if len(distinct) > 1:
        desc = ", ".join(f"'{n}': {l}" for n, l in lengths.items())
        raise DataError(f"data columns have different numbers of rows ({desc}); every column "
                        f"must have one entry per row")
    n = distinct.pop() if distinct else 0
    if cols and n == 0:
        raise DataError("the dataset is empty (0 rows)")
    return n


def to_device(cols: Mapping[str, np.ndarray]) -> dict[str, jnp.ndarray]:
    """Put the columns on the default device (float64 becomes the default float dtype)."""
    return {n: jnp.asarray(a) for n, a in cols.items()}


# --------------------------------------------------------------------------------------------
# minibatches in the compiled loop
# --------------------------------------------------------------------------------------------

class EpochState(NamedTuple):
    """Where the row stream stands: ``epoch`` complete passes plus ``pos`` rows of the next.

    ``perm`` / ``next_perm`` are the current and the next epoch's row orders (empty when rows are
    not permuted on the device); ``rows`` is N, kept so that the result can report epochs.
    """

    perm: jax.Array
    next_perm: jax.Array
    pos: jax.Array
    epoch: jax.Array
    rows: jax.Array
    key: jax.Array


def _advance(ds: EpochState, batch_size: int, renew: Callable[[EpochState], EpochState] | None = None) -> EpochState:
    """Move the stream ``batch_size`` rows on; at an epoch boundary, ``renew`` the orders."""
    wrap = ds.pos + batch_size >= ds.rows

    def cross(s: EpochState) -> EpochState:
        s = s._replace(pos=s.pos + batch_size - s.rows, epoch=s.epoch + 1)
        return renew(s) if renew is not None else s

    return jax.lax.cond(wrap, cross, lambda s: s._replace(pos=s.pos + batch_size), ds)


def _with_key(batch: dict, key: jax.Array, needs_key: bool) -> dict:
    if needs_key:
        from .model import RNG_KEY

        batch = {**batch, RNG_KEY: key}
    return batch


class Minibatches:
    """In-memory minibatches: the same ``batch_size`` rows of every column at each step.

    Without replacement the rows form a continuous stream of epochs: epoch ``e`` visits the rows
    in the order of a permutation drawn on the device from ``fold_in(key, e)``; the stream is
    cut into consecutive batches, so when N is not a multiple of the batch size, the batch that
    reaches the end of an epoch is completed with the first rows of the next epoch. Within an
    epoch no row is skipped or read twice. The current and next permutations are carried in the
    loop state and renewed (one ``jax.random.permutation``) only when an epoch ends. With
    ``replace=True`` each step draws ``batch_size`` row indices uniformly with replacement.

    Parameters
    ----------
    num_rows : int
        N, the number of rows of every column.
    batch_size : int
        B, rows per step (``1 <= B <= N``).
    replace : bool
        Draw rows with replacement.
    needs_key : bool
        Add a PRNG key to every batch (models with ``numpyro.plate(subsample_size=)``).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> mb = Minibatches(5, 2)
    >>> ds = mb.init(jax.random.PRNGKey(0))
    >>> data = {"x": jnp.arange(5.0)}
    >>> rows = []
    >>> for t in range(5):
    ...     b, ds = mb.next(ds, data, t, jax.random.PRNGKey(t), None)
    ...     rows += b["x"].tolist()
    >>> sorted(rows[:5]) == [0.0, 1.0, 2.0, 3.0, 4.0], int(ds.epoch)
    (True, 2)
    """

    def __init__(self, num_rows: int, batch_size: int, replace: bool = False, needs_key: bool = False) -> None:
        self.num_rows, self.batch_size = int(num_rows), int(batch_size)
        self.replace, self.needs_key = bool(replace), bool(needs_key)

    def _perm(self, key: jax.Array, epoch: jax.Array) -> jax.Array:
        return jax.random.permutation(jax.random.fold_in(key, epoch), self.num_rows).astype(jnp.int32)

    def init(self, key: jax.Array) -> EpochState:
        zero = jnp.int32(0)
        if self.replace:
            empty = jnp.zeros((0,), jnp.int32)
            return EpochState(empty, empty, zero, zero, jnp.int32(self.num_rows), key)
        return EpochState(self._perm(key, zero), self._perm(key, jnp.int32(1)), zero, zero,
                          jnp.int32(self.num_rows), key)

    def next(self, data_state: EpochState, data: Any, step: jax.Array, key: jax.Array, x: Any) -> tuple[Any, EpochState]:
        ds, n, b = data_state, self.num_rows, self.batch_size
        if self.replace:
            idx = jax.random.randint(key, (b,), 0, n)
            renew = None
        else:
            j = ds.pos + jnp.arange(b, dtype=jnp.int32)
            idx = jnp.where(j < n, ds.perm[jnp.minimum(j, n - 1)], ds.next_perm[jnp.maximum(j - n, 0)])

            def renew(s: EpochState) -> EpochState:
                return s._replace(perm=s.next_perm, next_perm=self._perm(s.key, s.epoch + 1))

        batch = {k: jnp.take(v, idx, axis=0) for k, v in data.items()}
        return _with_key(batch, key, self.needs_key), _advance(ds, b, renew)


class Streamed:
    """Batches that arrive from the host with each compiled call (streaming sources).

    ``x`` (this step's slice of the fed chunk) is the batch; the state only counts rows and
    epochs (the order of the rows is decided on the host, see :mod:`variational.streaming`).
    """

    def __init__(self, num_rows: int, batch_size: int, needs_key: bool = False) -> None:
        self.num_rows, self.batch_size, self.needs_key = int(num_rows), int(batch_size), bool(needs_key)

    def init(self, key: jax.Array) -> EpochState:
        empty, zero = jnp.zeros((0,), jnp.int32), jnp.int32(0)
        return EpochState(empty, empty, zero, zero, jnp.int32(self.num_rows), key)

    def next(self, data_state: EpochState, data: Any, step: jax.Array, key: jax.Array, x: Any) -> tuple[Any, EpochState]:
        return _with_key({**data, **x}, key, self.needs_key), _advance(data_state, self.batch_size)


class KeyedFullBatch:
    """Every step sees the whole dataset, plus a fresh PRNG key for subsampling plates."""

    def init(self, key: jax.Array) -> Any:
        return ()

    def next(self, data_state: Any, data: Any, step: jax.Array, key: jax.Array, x: Any) -> tuple[Any, Any]:
        return _with_key(dict(data), key, True), data_state


def check_finite(cols: Mapping[str, np.ndarray], where: str = "") -> None:
    """Raise :class:`DataError` naming the column and first row that holds NaN or inf.

    Examples
    --------
    >>> check_finite({"x": np.array([1.0, np.nan])})
    Traceback (most recent call last):
    ...
    variational.errors.DataError: column 'x' has NaN or inf at row 1; drop or impute those rows before fitting
    """
    for name, a in cols.items():
        a = np.asarray(a)
        if a.dtype.kind in "fc":
            bad = ~np.isfinite(a)
            if bad.any():
                row = int(np.argwhere(bad.reshape(len(a), -1).any(axis=1))[0, 0]) if a.ndim else 0
                raise DataError(f"column '{name}'{where} has NaN or inf at row {row}; drop or impute "
                                f"those rows before fitting")


from .streaming import Source, iterable, npy, parquet  # noqa: E402  (the streaming sources: vi.data.parquet ...)
