"""Columns: named, aligned arrays with N rows, checked once on the way in.

A dataset is a mapping of column name -> array (or a pandas DataFrame). Every column has the
same number of rows N; a batch is the same rows from every column. Columns are passed to the
model as keyword arguments.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from ..errors import DataError

__all__ = ["as_columns", "num_rows", "to_device", "check_finite"]


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
