"""Today's ecosystem: both ArviZ generations, ArviZ-native results, table inputs, package hygiene.

Every test runs on whichever ArviZ generation is installed (0.x on Python 3.11, 1.x on 3.13);
CI runs the suite on both.
"""

import logging
import tomllib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import numpyro
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from scipy import stats

import variational as vi
from variational.posterior import arviz_compat

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------
# PSIS k-hat: the same on both generations (golden values computed once with ArviZ 0.23.4)
# --------------------------------------------------------------------------------------------

S = 4000
U = (np.arange(S) + 0.5) / S          # evenly spaced quantiles: deterministic "draws"
_Z, _T = stats.norm.ppf(U), stats.t(3).ppf(U)
_N6 = stats.norm(0, 0.6).ppf(U)
KHAT_CASES = {   # name: (log importance ratios, k-hat from ArviZ 0.23.4's az.psislw)
    "pareto tail k=0.3": (-0.3 * np.log1p(-U), 0.31231166382304587),
    "pareto tail k=0.7": (-0.7 * np.log1p(-U), 0.6843220218846058),
    "q normal, p student-t(3)": (stats.t(3).logpdf(_Z) - stats.norm.logpdf(_Z), 0.6640649074177364),
    "q student-t(3), p normal": (stats.norm.logpdf(_T) - stats.t(3).logpdf(_T), -1.6937991742764396),
    "q too narrow (sd 0.6)": (stats.norm.logpdf(_N6) - stats.norm(0, 0.6).logpdf(_N6), 0.5763274233746534),
}


@pytest.mark.parametrize("case", sorted(KHAT_CASES))
def test_khat_is_the_same_on_both_arviz_generations(case):
    log_w, golden = KHAT_CASES[case]
    shuffled = log_w[np.random.default_rng(0).permutation(S)]
    lw, khat = arviz_compat.psislw(shuffled)
    assert abs(khat - golden) < 0.05            # 0.x and 1.x differ in the tail length only
    assert abs(np.exp(lw).sum() - 1.0) < 1e-9   # normalised
    # the sign convention: the largest raw ratio keeps the largest smoothed weight
    assert np.exp(lw)[np.argmax(shuffled)] == pytest.approx(np.exp(lw).max())


# --------------------------------------------------------------------------------------------
# a hierarchical model fitted by ADVI and by NUTS
# --------------------------------------------------------------------------------------------

GROUPS = ["north", "east", "south", "west"]


def hierarchical(group, y=None):
    mu = vi.Normal("mu", 0.0, 5.0)
    tau = vi.HalfNormal("tau", 2.0)
    with numpyro.plate("group", 4):
        a = vi.Normal("a", mu, tau)
    sigma = vi.HalfNormal("sigma", 2.0)
    with numpyro.plate("obs", group.shape[0]):
        vi.Normal("y", a[group], sigma, observed=y)


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(3)
    codes = np.repeat(np.arange(4), 15)
    y = np.array([-1.0, 0.0, 0.5, 2.0])[codes] + rng.normal(0, 0.7, codes.size)
    return pd.DataFrame({"group": pd.Categorical.from_codes(codes, GROUPS), "y": y})


@pytest.fixture(scope="module")
def vi_and_nuts(frame):
    fit = vi.fit(hierarchical, frame, method="fullrank_advi", steps=4000, learning_rate=0.02, stl=True,
                 progress=False)
    vi_data = fit.to_arviz(1000)
    nuts_data = vi.nuts(hierarchical, frame, draws=500, tune=500, target_accept=0.9)
    return fit, vi_data, nuts_data


def test_dims_and_coords_from_plates_equal_nuts(vi_and_nuts):
    _, vi_data, nuts_data = vi_and_nuts
    for group in ("posterior", "log_likelihood", "observed_data"):
        ours, theirs = vi_data[group], nuts_data[group]
        assert sorted(ours.data_vars) == sorted(theirs.data_vars), group
        for name in ours.data_vars:
            assert ours[name].dims == theirs[name].dims, (group, name)
            for dim in ours[name].dims:
                if dim not in ("chain", "draw"):
                    assert list(ours[name][dim].values) == list(theirs[name][dim].values), (group, name, dim)
    assert vi_data.posterior["a"].dims == ("chain", "draw", "group")
    assert list(vi_data.posterior["a"]["group"].values) == GROUPS     # the categorical's categories


def _elpd(result):
    """(elpd, se) of an ELPD result of either generation."""
    elpd = getattr(result, "elpd_loo", None)
    return float(result.elpd if elpd is None else elpd), float(result.se)


def test_loo_of_the_fit_agrees_with_loo_of_nuts(vi_and_nuts):
    import arviz as az

    _, vi_data, nuts_data = vi_and_nuts
    ours, (ref, se) = _elpd(az.loo(vi_data)), _elpd(az.loo(nuts_data))
    assert abs(ours[0] - ref) < 2 * se
    if arviz_compat.ARVIZ_1:  # Magnusson et al.'s correction for draws of q, from lp and log_q
        corrected = az.loo_approximate_posterior(vi_data, log_p=vi_data.sample_stats["lp"],
                                                 log_q=vi_data.sample_stats["log_q"])
        assert abs(_elpd(corrected)[0] - ref) < 2 * se
    table = az.compare({"advi": vi_data, "nuts": nuts_data})
    assert sorted(table.index) == ["advi", "nuts"]


def test_arviz_reads_the_result(vi_and_nuts):
    import arviz as az

    fit, vi_data, nuts_data = vi_and_nuts
    table = vi.summary(vi_data)
    assert list(table.columns) == ["mean", "sd", "hdi_3%", "hdi_97%"]    # the same on both generations
    nuts_mean = nuts_data.posterior["mu"].values.mean()
    assert abs(table.loc["mu", "mean"] - nuts_mean) < 0.5 * nuts_data.posterior["mu"].values.std()
    if arviz_compat.ARVIZ_1:
        plot = az.plot_forest({"advi": vi_data, "nuts": nuts_data}, var_names=["a"], backend="matplotlib")
        assert plot is not None
    else:
        axes = az.plot_forest([vi_data, nuts_data], model_names=["advi", "nuts"], var_names=["a"])
        assert len(np.ravel(axes)) == 1
    np.testing.assert_array_equal(vi_data.optimization["loss"].values, fit.hist)
    assert vi_data.optimization.attrs["method"] == "fullrank_advi"
    assert vi_data.sample_stats["lp"].shape == vi_data.sample_stats["log_q"].shape == (1, 1000)
    codes = vi_data.constant_data["group"]
    assert codes.dims == ("obs",) and list(codes.attrs["categories"]) == GROUPS


# --------------------------------------------------------------------------------------------
# table inputs: the same numbers as the equivalent NumPy columns
# --------------------------------------------------------------------------------------------

CATS = ["lo", "mid", "hi"]
_RNG = np.random.default_rng(5)
CODES = _RNG.integers(0, 3, 30)
X = _RNG.normal(size=30)
Y = np.array([-1.0, 0.0, 1.0])[CODES] + 0.5 * X + _RNG.normal(0, 0.3, 30)
NEW_CODES, NEW_X = np.array([2, 0, 1, 1]), np.array([0.5, -0.5, 0.0, 1.0])


def regression(g, x, y=None):
    a = vi.Normal("a", 0.0, 2.0, shape=3)
    b = vi.Normal("b", 0.0, 2.0)
    vi.Normal("y", a[g] + b * x, 0.3, observed=y)


def _tables(kind, codes, x, y=None):
    values = [CATS[c] for c in codes]
    cols = {"x": x} if y is None else {"x": x, "y": y}
    if kind == "pandas categorical":
        return pd.DataFrame({"g": pd.Categorical(values, categories=CATS), **cols})
    if kind == "arrow dictionary":
        return pa.table({"g": pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(CATS)), **cols})
    if kind == "polars enum":
        return pl.DataFrame({"g": pl.Series(values, dtype=pl.Enum(CATS)), **cols})
    if kind == "polars lazy enum":
        return pl.LazyFrame({"g": pl.Series(values, dtype=pl.Enum(CATS)), **cols})
    raise AssertionError(kind)


@pytest.fixture(scope="module")
def numpy_fit():
    fit = vi.fit(regression, {"g": CODES, "x": X, "y": Y}, steps=200, learning_rate=0.05, progress=False)
    return fit, fit.predict({"g": NEW_CODES, "x": NEW_X}, n=50, seed=1)


@pytest.mark.parametrize("kind", ["pandas categorical", "arrow dictionary", "polars enum", "polars lazy enum"])
def test_table_inputs_fit_and_predict_like_numpy_columns(kind, numpy_fit):
    ref, ref_pred = numpy_fit
    fit = vi.fit(regression, _tables(kind, CODES, X, Y), steps=200, learning_rate=0.05, progress=False)
    np.testing.assert_array_equal(fit.hist, ref.hist)
    pred = fit.predict(_tables(kind, NEW_CODES, NEW_X), n=50, seed=1)
    np.testing.assert_array_equal(pred["y"], ref_pred["y"])
    assert fit.categories == {"g": CATS}


def test_polars_categorical_codes_index_its_categories():
    values = ["b", "a", "c", "a", "b"]
    cols, cats = vi.data.read_columns(pl.DataFrame({"g": pl.Series(values, dtype=pl.Categorical)}))
    assert [cats["g"][c] for c in cols["g"]] == values and cols["g"].dtype == np.int32


def test_text_columns_are_named_with_their_own_dtype():
    df = pd.DataFrame({"y": [1.0, 2.0], "name": ["a", "b"]})
    with pytest.raises(vi.DataError, match=f"column 'name' has dtype {df['name'].dtype}, which is not numeric"):
        vi.as_columns(df)
    with pytest.raises(vi.DataError, match="column 'name' has Arrow type .*string.*not numeric"):
        vi.as_columns(pl.DataFrame({"y": [1.0, 2.0], "name": ["a", "b"]}))
    with pytest.raises(vi.DataError, match="categorical column 'g' has a missing value at row 1"):
        vi.as_columns(pd.DataFrame({"g": pd.Categorical(["a", None, "a"])}))


# --------------------------------------------------------------------------------------------
# package hygiene
# --------------------------------------------------------------------------------------------

def test_version_license_and_type_marker(capsys):
    from variational.cli import main

    assert vi.__version__ == version("variational")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"variational {version('variational')}"
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "Apache-2.0"
    assert (ROOT / "LICENSE").read_text().split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert (Path(vi.__file__).parent / "py.typed").exists()


def test_quiet_fit_writes_nothing_to_the_terminal(capfd, caplog):
    def model():
        vi.Normal("x", 0.0, 1.0)

    with caplog.at_level(logging.INFO, logger="variational"):
        fit = vi.fit(model, steps=50, learning_rate="auto", progress=False)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert any("learning_rate='auto' chose" in r.getMessage() for r in caplog.records)
    assert any("learning_rate='auto' chose" in n for n in fit.notes)
