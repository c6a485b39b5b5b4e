"""Columns: named, aligned arrays with N rows, checked once on the way in.

A dataset is a mapping of column name -> array (or a pandas DataFrame). Every column has the
same number of rows N; a batch is the same rows from every column. Columns are passed to the
model as keyword arguments.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import DataError

__all__ = ["as_columns", "num_rows", "to_device", "check_finite", "exact_for_device"]

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


def _from_dataframe(df: Any) -> dict[str, Any]:
    names = [str(c) for c in df.columns]
    twice = [n for n, k in Counter(names).items() if k > 1]
    if twice:
        raise DataError(f"the DataFrame has {Counter(names)[twice[0]]} columns named '{twice[0]}'; "
                        f"give each column its own name (every column is one model argument)")
    out = {}
    for name, (_, col) in zip(names, df.items()):
        if hasattr(col.dtype, "numpy_dtype") and bool(col.isna().any()):  # nullable dtypes (Int64, Float64...)
            row = int(np.flatnonzero(col.isna().to_numpy())[0])
            raise DataError(f"column '{name}' has a missing value (pandas NA) at row {row}; drop or "
                            f"impute those rows before fitting")
        out[name] = col.to_numpy()
    return out


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
        data = _from_dataframe(data)
    if not isinstance(data, Mapping):
        raise DataError(f"data must be a mapping of column name -> array or a pandas DataFrame, "
                        f"got {type(data).__name__}")
    cols: dict[str, np.ndarray] = {}
    for name, col in data.items():
        a = np.asarray(col)
        if a.dtype.kind not in "biuf":
            raise DataError(f"column '{name}' has dtype {a.dtype}, which is not numeric; encode it "
                            f"first (for example integer codes with pandas.factorize)")
        if str(name) in cols:
            raise DataError(f"two columns are named '{name}' once turned into strings; rename one")
        cols[str(name)] = exact_for_device(str(name), a)
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
