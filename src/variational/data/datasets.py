"""Datasets and reference models used by the demo, examples, tests and benchmarks.

The library generates its own radon-like data (known true parameters) so that nothing needs to
be downloaded; :func:`load_radon` reads the real Minnesota radon survey when a CSV is given.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import model as _m

__all__ = ["RadonData", "make_radon", "load_radon", "radon_model", "find_shared_data"]


@dataclass
class RadonData:
    """Columns of the hierarchical radon regression plus what is needed to read the results."""

    county: np.ndarray          # int, county code per home
    floor: np.ndarray           # float, 0 = basement, 1 = first floor
    log_radon: np.ndarray       # float, the response
    county_names: list[str]
    truth: dict[str, Any] = field(default_factory=dict)   # true parameters (generated data only)

    @property
    def n_counties(self) -> int:
        return len(self.county_names)

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """The data columns, as passed to :func:`radon_model`."""
        return {"county": self.county, "floor": self.floor, "log_radon": self.log_radon}

    def __len__(self) -> int:
        return len(self.log_radon)


def make_radon(n_counties: int = 85, n_rows: int = 919, seed: int = 0, **truth: float) -> RadonData:
    """Generate radon-like data with known parameters (county intercepts and floor slopes).

    Counties get unequal numbers of homes (as in the survey); every county has at least two.

    Examples
    --------
    >>> d = make_radon(seed=1)
    >>> len(d), d.n_counties
    (919, 85)
    """
    rng = np.random.default_rng(seed)
    t = dict(mu_alpha=1.5, sigma_alpha=0.35, mu_beta=-0.65, sigma_beta=0.3, eps=0.75)
    t.update(truth)
    sizes = 2 + rng.multinomial(n_rows - 2 * n_counties, rng.dirichlet(np.full(n_counties, 0.7)))
    county = np.repeat(np.arange(n_counties), sizes)
    floor = (rng.random(n_rows) < 0.17).astype(np.float64)
    alpha = rng.normal(t["mu_alpha"], t["sigma_alpha"], n_counties)
    beta = rng.normal(t["mu_beta"], t["sigma_beta"], n_counties)
    y = alpha[county] + beta[county] * floor + rng.normal(0, t["eps"], n_rows)
    t.update(alpha=alpha, beta=beta)
    names = [f"COUNTY{i:02d}" for i in range(n_counties)]
    return RadonData(county.astype(np.int32), floor, y, names, t)


def load_radon(path: str | Path) -> RadonData:
    """Read the radon survey CSV (columns ``county``, ``floor``, ``log_radon``).

    Counties are coded in order of first appearance.
    """
    path = Path(path)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows")
    for col in ("county", "floor", "log_radon"):
        if col not in rows[0]:
            raise ValueError(f"{path}: column '{col}' is missing (found {sorted(rows[0])})")
    names: dict[str, int] = {}
    county = np.array([names.setdefault(r["county"].strip(), len(names)) for r in rows], np.int32)
    floor = np.array([float(r["floor"]) for r in rows])
    y = np.array([float(r["log_radon"]) for r in rows])
    return RadonData(county, floor, y, list(names))


def find_shared_data(name: str) -> Path | None:
    """Path of a public dataset in a ``shared/data`` folder near the working directory, if any."""
    here = Path.cwd().resolve()
    for base in [here, *here.parents]:
        for cand in (base / "shared" / "data" / name, base.parent / "shared" / "data" / name):
            if cand.exists():
                return cand
    return None


def radon_model(county: Any, floor: Any, log_radon: Any = None, n_counties: int = 85) -> None:
    """The seed's hierarchical radon regression: county intercepts and floor slopes.

    Examples
    --------
    >>> import variational as vi
    >>> d = make_radon(seed=0)
    >>> ld = vi.LogDensity(radon_model, d.columns, {"n_counties": d.n_counties})
    >>> ld.dim
    175
    """
    mu_a = _m.Normal("mu_alpha", 0.0, 100.0)
    sigma_a = _m.Uniform("sigma_alpha", 0.0, 100.0)
    mu_b = _m.Normal("mu_beta", 0.0, 100.0)
    sigma_b = _m.Uniform("sigma_beta", 0.0, 100.0)
    a = _m.Normal("alpha", mu_a, sigma_a, shape=n_counties)
    b = _m.Normal("beta", mu_b, sigma_b, shape=n_counties)
    eps = _m.Uniform("eps", 0.0, 100.0)
    est = a[county] + b[county] * floor
    _m.Normal("log_radon", est, eps, observed=log_radon)


def make_iris(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Generate iris-like data: 3 species x 50 flowers, 4 measurements (the real one's class means).

    Used by the examples when ``iris.csv`` is not available.

    Examples
    --------
    >>> X, y, names = make_iris()
    >>> X.shape, int(y.max()), names[0]
    ((150, 4), 2, 'setosa')
    """
    rng = np.random.default_rng(seed)
    means = np.array([[5.01, 3.43, 1.46, 0.25], [5.94, 2.77, 4.26, 1.33], [6.59, 2.97, 5.55, 2.03]])
    sds = np.array([[0.35, 0.38, 0.17, 0.11], [0.52, 0.31, 0.47, 0.20], [0.64, 0.32, 0.55, 0.27]])
    X = np.concatenate([rng.normal(means[k], sds[k], size=(50, 4)) for k in range(3)]).astype(np.float32)
    y = np.repeat(np.arange(3), 50).astype(np.int32)
    return X, y, ["setosa", "versicolor", "virginica"]
