"""Names of the axes of every site: dims from the model's ``numpyro.plate``s, coords from the data.

The rule is ArviZ's for NumPyro models (``az.from_numpyro``), so a fit's ``to_arviz()`` and a
:func:`variational.nuts` run of the same model line up (``az.plot_forest([vi_idata, nuts_idata])``):

- a batch axis of a sample site that a plate declares is named after the plate;
- every other axis ``i`` of site ``x`` (event axes, axes of deterministic sites, batch axes
  without a plate) is named ``x_dim_i``;
- coordinates are ``0 .. size - 1``, except for a plate that a categorical data column
  describes (a pandas categorical, a polars ``Categorical``/``Enum`` or an Arrow dictionary
  column): its coordinates are the column's categories. A plate describes a column when it has
  the column's name and as many entries as it has categories, or, failing a name match, when
  it is the only plate of that size and the column the only categorical with that many
  categories.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["site_dims", "plate_coords", "axis_coords"]


def site_dims(table: Mapping[str, dict]) -> dict[str, list[str]]:
    """Dimension names per site of a :func:`~variational.posterior.predictive.site_table`.

    Examples
    --------
    >>> table = {"a": {"shape": (3, 2), "plates": (("group", -1, 3),), "batch_ndim": 1, "event_ndim": 1}}
    >>> site_dims(table)
    {'a': ['group', 'a_dim_1']}
    """
    dims: dict[str, list[str]] = {}
    for site, info in table.items():
        shape, nb, ne = info["shape"], info.get("batch_ndim", 0), info.get("event_ndim", 0)
        by_dim = {d: name for name, d, _ in info.get("plates", ())}
        end = len(shape) - ne          # one past the last batch axis
        names = []
        for i in range(len(shape)):
            rel = i - end              # batch axes count from -1 leftwards, as plates do
            names.append(by_dim[rel] if -nb <= rel < 0 and rel in by_dim else f"{site}_dim_{i}")
        dims[site] = names
    return dims


def plate_coords(table: Mapping[str, dict], categories: Mapping[str, Sequence[Any]] | None) -> dict[str, list]:
    """Coordinates of the plates that categorical columns describe (see the module's rule).

    Examples
    --------
    >>> table = {"a": {"shape": (2,), "plates": (("county", -1, 2),), "batch_ndim": 1}}
    >>> plate_coords(table, {"county": ["north", "south"]})
    {'county': ['north', 'south']}
    """
    if not categories:
        return {}
    sizes = {name: size for info in table.values() for name, _, size in info.get("plates", ())}
    out = {name: list(categories[name]) for name, size in sizes.items()
           if name in categories and len(categories[name]) == size}
    for name, size in sizes.items():
        if name in out:
            continue
        plates_of_size = [p for p, s in sizes.items() if s == size and p not in out]
        cats_of_size = [c for c, v in categories.items() if len(v) == size and c not in sizes]
        if len(plates_of_size) == 1 and len(cats_of_size) == 1:
            out[name] = list(categories[cats_of_size[0]])
    return out


def axis_coords(dims: Mapping[str, Sequence[str]], shapes: Mapping[str, Sequence[int]],
                coords: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """Coordinates of every dimension in ``dims``: ``coords`` where given, else ``0 .. size - 1``."""
    out: dict[str, Any] = {}
    for site, names in dims.items():
        for name, size in zip(names, shapes[site]):
            if name in coords:
                if len(coords[name]) != size:
                    raise ValueError(f"coords['{name}'] has {len(coords[name])} entries but dimension "
                                     f"'{name}' of site '{site}' has {size}")
                out[name] = np.asarray(coords[name])
            elif name not in out:
                out[name] = np.arange(size)
    return out
