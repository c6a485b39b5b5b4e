"""Columns: named, aligned arrays with N rows, checked once on the way in.

A dataset is a mapping of column name -> array, or a table: pandas, polars (DataFrame or
LazyFrame), pyarrow, or anything that speaks the Arrow PyCapsule interface. Every column has
the same number of rows N; a batch is the same rows from every column. Columns are passed to
the model as keyword arguments; categorical columns as their integer codes.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import DataError

__all__ = ["as_columns", "read_columns", "num_rows", "to_device", "check_finite", "exact_for_device"]

_INT32 = np.iinfo(np.int32)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def exact_for_device(name: str, a: np.ndarray, where: str = "") -> np.ndarray:
    """``a`` in the dtype the device will hold, with every value kept exactly, or a DataError.

    Without JAX's 64-bit mode a device holds 32-bit numbers: 64-bit integers are narrowed to
    int32 (exact when they fit, else refused: JAX would wrap them around), and float64 values
    beyond float32's range (which would become inf) are refused. Float64 values within range
    are rounded to float32 on the device as JAX always does.

    Examples
    --------
    >>> exact_for_device("n", np.array([1, 2], dtype=np.int64)).dtype
    dtype('int32')
    """
    if jax.config.jax_enable_x64 or a.dtype.itemsize < 8 or a.dtype.kind not in "iuf" or a.size == 0:
        return a
    bad = ((a < _INT32.min) | (a > _INT32.max)) if a.dtype.kind in "iu" else (np.abs(a) > _FLOAT32_MAX) & np.isfinite(a)
    if bad.any():
        first = int(np.argmax(bad.reshape(-1)))
        row, value = first // max(1, int(np.prod(a.shape[1:]))), a.reshape(-1)[first]
        if a.dtype.kind in "iu":
            raise DataError(
                f"column '{name}'{where} holds integers beyond the 32-bit range ({value} at row {row}), "
                f"which JAX would wrap around without 64-bit mode; turn it on with "
                f"jax.config.update('jax_enable_x64', True) before fitting, or rescale the column "
                f"(as float32 it would keep 24 bits of precision)")
        raise DataError(f"column '{name}'{where} holds values beyond float32's range ({value:g} at row "
                        f"{row}), which would become inf on the device; rescale the column, or turn on "
                        f"64-bit mode with jax.config.update('jax_enable_x64', True)")
    return a.astype(np.int32) if a.dtype.kind in "iu" else a


def _refuse_duplicates(names: list[str], what: str) -> None:
    twice = [n for n, k in Counter(names).items() if k > 1]
    if twice:
        raise DataError(f"the {what} has {Counter(names)[twice[0]]} columns named '{twice[0]}'; "
                        f"give each column its own name (every column is one model argument)")


def _refuse_pandas_na(name: str, col: Any) -> None:
    """A nullable pandas column (Int64, Float64, boolean) with NA: name the column and row."""
    if hasattr(getattr(col, "dtype", None), "numpy_dtype") and hasattr(col, "isna") and bool(col.isna().any()):
        row = int(np.flatnonzero(np.asarray(col.isna()))[0])
        raise DataError(f"column '{name}' has a missing value (pandas NA) at row {row}; drop or "
                        f"impute those rows before fitting")


def _ragged(name: str, col: Any) -> str:
    lengths = sorted({len(v) if hasattr(v, "__len__") else 1 for v in col})
    return (f"column '{name}' is ragged: its rows have different lengths ({', '.join(map(str, lengths[:5]))}); "
            f"give one value per row (a long format with a group column), or pad the rows to one "
            f"length and mask the padding")


def as_columns(data: Any) -> dict[str, np.ndarray]:
    """Normalise ``data`` into a dict of NumPy arrays (see :func:`read_columns` for the inputs).

    Raises :class:`~variational.errors.DataError` naming the column when a column is not
    numeric or is empty.

    Examples
    --------
    >>> cols = as_columns({"x": [1.0, 2.0], "y": [0, 1]})
    >>> sorted(cols), cols["x"].dtype.kind
    (['x', 'y'], 'f')
    """
    return read_columns(data)[0]


def read_columns(data: Any) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    """Columns as NumPy arrays, and the categories of the categorical columns.

    ``data`` is a mapping of column name -> array, a pandas DataFrame, a polars DataFrame or
    LazyFrame (collected), a ``pyarrow.Table``, or any table that speaks the Arrow PyCapsule
    stream interface (``__arrow_c_stream__``). Categorical columns (pandas ``category``,
    polars ``Categorical``/``Enum``, Arrow dictionary columns) become their integer codes
    (``int32``, ``0 .. K - 1``), and their categories are returned so that results can name
    them (a plate of K entries named after the column gets them as coordinates).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"g": pd.Categorical(["b", "a", "b"]), "y": [1.0, 2.0, 3.0]})
    >>> cols, cats = read_columns(df)
    >>> cols["g"].tolist(), cats
    ([1, 0, 1], {'g': ['a', 'b']})
    """
    if data is None:
        return {}, {}
    if callable(getattr(data, "collect", None)) and not hasattr(data, "__arrow_c_stream__"):
        data = data.collect()   # a lazy frame (polars LazyFrame): run its query
    if hasattr(data, "to_dict") and hasattr(data, "columns") and hasattr(data, "iloc"):  # pandas
        _refuse_duplicates([str(c) for c in data.columns], "DataFrame")
        raw = {str(c): data[c] for c in data.columns}
    elif hasattr(data, "__arrow_c_stream__") or type(data).__module__.startswith("pyarrow"):
        raw = _arrow_columns(data)
    elif isinstance(data, Mapping):
        _refuse_duplicates([str(k) for k in data], "mapping (once its keys are strings)")
        raw = {str(k): v for k, v in data.items()}
    else:
        raise DataError(f"data must be a mapping of column name -> array or a table (pandas, polars, "
                        f"pyarrow), got {type(data).__name__}")
    cols: dict[str, np.ndarray] = {}
    categories: dict[str, list] = {}
    for name, col in raw.items():
        if isinstance(col, _Categorical):
            cols[name], categories[name] = col.codes, col.categories
            continue
        if _is_pandas_categorical(col):
            col = _pandas_codes(name, col, categories)
        _refuse_pandas_na(name, col)
        try:
            a = np.asarray(col)
        except ValueError as e:   # rows of different lengths
            raise DataError(_ragged(name, col)) from e
        if a.dtype == object and len(a) and all(np.ndim(v) for v in a.ravel()):
            raise DataError(_ragged(name, col))
        if a.dtype.kind not in "biuf":
            dtype = getattr(col, "dtype", a.dtype)
            raise DataError(f"column '{name}' has dtype {dtype}, which is not numeric; encode it "
                            f"first (for example as a categorical: integer codes, categories kept)")
        cols[name] = exact_for_device(name, a)
    return cols, categories


class _Categorical:
    """Integer codes and categories of an Arrow dictionary column."""

    def __init__(self, codes: np.ndarray, categories: list) -> None:
        self.codes, self.categories = codes, categories


def _is_pandas_categorical(col: Any) -> bool:
    return str(getattr(col, "dtype", "")) == "category" and hasattr(col, "cat")


def _pandas_codes(name: str, col: Any, categories: dict) -> np.ndarray:
    codes = np.asarray(col.cat.codes, dtype=np.int32)
    if (codes < 0).any():
        raise DataError(f"categorical column '{name}' has a missing value at row {int(np.argmax(codes < 0))}; "
                        f"drop those rows or add a category for them")
    categories[name] = [_plain(c) for c in col.cat.categories]
    return codes


def _arrow_columns(data: Any) -> dict[str, Any]:
    """Columns of an Arrow table (or anything with ``__arrow_c_stream__``) as arrays or codes."""
    import pyarrow as pa

    table = data if isinstance(data, pa.Table) else pa.table(data)
    _refuse_duplicates([str(c) for c in table.column_names], "table")
    out: dict[str, Any] = {}
    for name, col in zip(table.column_names, table.columns):
        name = str(name)
        if pa.types.is_dictionary(col.type):
            out[name] = _arrow_codes(name, col)
        elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type):
            out[name] = col.to_numpy()
        else:
            raise DataError(f"column '{name}' has Arrow type {col.type}, which is not numeric; encode it "
                            f"first (for example as a categorical: integer codes, categories kept)")
    return out


def _arrow_codes(name: str, col: Any) -> _Categorical:
    import pyarrow as pa

    if col.null_count:
        raise DataError(f"categorical column '{name}' has {col.null_count} missing value(s); drop those "
                        f"rows or add a category for them")
    col = col.unify_dictionaries() if col.num_chunks > 1 else col
    chunks = col.chunks or [pa.array([], type=col.type)]
    codes = np.concatenate([np.asarray(c.indices.to_numpy(zero_copy_only=False)) for c in chunks])
    return _Categorical(codes.astype(np.int32), [_plain(c) for c in chunks[0].dictionary.to_pylist()])


def _plain(value: Any) -> Any:
    """A category as a plain Python value (``numpy.str_`` -> ``str``)."""
    return value.item() if hasattr(value, "item") else value


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
    # converted on the host and transferred: no operation to compile per column dtype
    return {n: jax.device_put(np.asarray(a, jax.dtypes.canonicalize_dtype(np.asarray(a).dtype)))
            for n, a in cols.items()}


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
