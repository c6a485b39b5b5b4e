"""Local latent variables under subsampling, against the closed-form conjugate posterior.

Model: ``mu ~ N(0, 10); z_i ~ N(mu, 1); y_i ~ N(z_i, 0.5)``, i = 1..N. Marginally
``y_i ~ N(mu, 1.25)``, so ``mu | y`` is Gaussian with precision ``1/100 + N/1.25``; given mu,
``z_i | mu, y ~ N((mu + 4 y_i)/5, 1/5)``, so ``E[z_i | y] = (E[mu | y] + 4 y_i)/5`` and
``Var[z_i | y] = 1/5 + Var[mu | y]/25``. The family of a local fit (q(mu) times q(z_i | mu)
linear in mu) holds this posterior exactly: the fitted means and sds of q (unconstrained
space, identity here) must match to within the optimiser's noise, and the draw-based answers
(``fit.mean``, ``fit.std``) to within their Monte Carlo error.
"""

from __future__ import annotations

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import variational as vi
from variational.errors import VariationalError


def _data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(rng.normal(1.0, 1.0, n), 0.5).astype(np.float32)


def _exact(y: np.ndarray) -> dict[str, np.ndarray]:
    n = len(y)
    prec = 1 / 100 + n / 1.25
    m_mu, v_mu = (y.sum() / 1.25) / prec, 1 / prec
    return {"mu": (m_mu, np.sqrt(v_mu)), "z": ((m_mu + 4 * y) / 5, np.sqrt(0.2 + v_mu / 25))}


def _model(n: int):
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("rows", n):
            z = numpyro.sample("z", dist.Normal(mu, 1.0))
            numpyro.sample("y", dist.Normal(z, 0.5), obs=y)
    return model


def _subsampled(n: int, b: int):
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("rows", n, subsample_size=b) as idx:
            z = numpyro.sample("z", dist.Normal(mu, 1.0))
            numpyro.sample("y", dist.Normal(z, 0.5), obs=y[idx])
    return model


def _check(fit, y: np.ndarray, mu_tol: float = 0.1) -> None:
    """q's means within 0.1 posterior sds of the exact ones, for mu and every z; sds within 5%
    for every z (a row's sd is exact once visited) and 10% for mu (the minibatch noise of a
    global's scale is averaged out by the decaying step, not removed); the draw-based
    answers within 5.5 Monte Carlo errors of q's own means."""
    exact = _exact(y)
    m, s = fit.unconstrained_mean, fit.unconstrained_std
    for name, tol, tol_sd in (("mu", mu_tol, 0.1), ("z", 0.1, 0.05)):
        em, es = exact[name]
        assert np.max(np.abs(m[name] - em) / es) < tol, name
        assert np.max(np.abs(s[name] / es - 1)) < tol_sd, name
    draws = fit.sample(4000, seed=1)["z"]
    assert draws.shape == (4000, len(y))
    se = exact["z"][1] / np.sqrt(4000)
    assert np.max(np.abs(draws.mean(0) - m["z"]) / se) < 5.5


@pytest.fixture(scope="module")
def batch_fit():
    """The minibatch fit of 2000 rows that several tests read (computed once per module); its
    programs (2000 rows, batches of 256) are found again by the later fits of the same shapes."""
    y = _data(2000)
    return y, vi.fit(_model(2000), {"y": y}, batch_size=256, steps=3000, progress=False)


def test_batch_size_fits_every_row_and_mu_exactly(batch_fit):
    y, fit = batch_fit
    assert fit.method == "fullrank_advi" and fit.local.sites == ("z",)   # the globals' family
    _check(fit, y)
    # each step updated only its batch's rows, each epoch every row once: 3000 * 256 / 2000 = 384
    # visits per row (a batch that straddles two epochs may hold a row twice: one update)
    counts = np.asarray(fit.state.opt_state.count)
    assert 370 <= counts.min() and counts.max() <= 385 and counts.sum() <= 3000 * 256


def test_model_that_subsamples_itself():
    y = _data(2000, seed=1)
    fit = vi.fit(_subsampled(2000, 256), {"y": y}, steps=3000, progress=False)
    _check(fit, y)


def test_parquet_stream_carries_row_numbers(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    y = _data(2000, seed=2)
    pq.write_table(pa.table({"y": y}), tmp_path / "y.parquet", row_group_size=250)
    fit = vi.fit(_model(2000), vi.data.parquet(tmp_path / "y.parquet"), batch_size=256, steps=3000,
                 progress=False)
    _check(fit, y)


def test_plate_declared_with_the_batch_length_is_scaled_to_all_rows():
    y = _data(1000, seed=3)

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("rows", len(y)):
            z = numpyro.sample("z", dist.Normal(mu, 1.0))
            numpyro.sample("y", dist.Normal(z, 0.5), obs=y)

    fit = vi.fit(model, {"y": y}, batch_size=200, steps=2000, progress=False)
    assert fit.unconstrained_mean["z"].shape == (1000,)
    _check(fit, y)


def test_checkpoint_resume_is_exact(tmp_path):
    # the shapes of ``batch_fit`` (2000 rows, batches of 256), so its compiled programs serve
    y = _data(2000, seed=4)
    path = tmp_path / "fit.npz"
    whole = vi.fit(_model(2000), {"y": y}, batch_size=256, steps=300, progress=False)
    vi.fit(_model(2000), {"y": y}, batch_size=256, steps=150, progress=False, checkpoint=path)
    resumed = vi.fit(_model(2000), {"y": y}, batch_size=256, steps=300, progress=False,
                     checkpoint=path, resume=True)
    assert resumed.steps == 300
    np.testing.assert_array_equal(resumed.unconstrained_mean["z"], whole.unconstrained_mean["z"])


def test_options_the_local_fit_cannot_take_are_named():
    y = _data(300)
    with pytest.raises(VariationalError, match="replace"):
        vi.fit(_model(300), {"y": y}, batch_size=100, steps=10, replace=True, progress=False)
    with pytest.raises(VariationalError, match="svgd"):
        vi.fit(_model(300), {"y": y}, batch_size=100, steps=10, method="svgd", progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["batch_size", "subsample_size"])
def test_ten_thousand_rows(how):
    n = 10_000
    y = _data(n, seed=5)
    if how == "batch_size":
        fit = vi.fit(_model(n), {"y": y}, batch_size=256, steps=6000, progress=False)
    else:
        fit = vi.fit(_subsampled(n, 256), {"y": y}, steps=6000, progress=False)
    _check(fit, y)


def test_answers_cover_every_training_row(batch_fit):
    y, fit = batch_fit
    pred = fit.predict(n=200, seed=0)["y"]
    assert pred.shape == (200, 2000)
    # y_i's posterior predictive: N(E[z_i], Var[z_i] + 0.25); its mean within 5 Monte Carlo errors
    ez, sz = _exact(y)["z"]
    se = np.sqrt(sz ** 2 + 0.25) / np.sqrt(200)
    assert np.max(np.abs(pred.mean(0) - ez) / se) < 5.5
    idata = fit.to_arviz(n=100, seed=0)
    assert idata.posterior["z"].shape[-1] == 2000
    d = fit.diagnose(n=400)
    assert d.khat < 0.7   # q is the exact posterior here: the importance weights are near 1


def test_the_default_call_stops_on_its_own_and_is_right():
    y = _data(1000, seed=7)
    fit = vi.fit(_model(1000), {"y": y}, batch_size=256, progress=False)
    assert fit.converged and fit.steps < 20_000
    # Stan's rule on the minibatch ELBO stops early (~700 steps): mu within 0.25 of its sd
    _check(fit, y, mu_tol=0.25)
