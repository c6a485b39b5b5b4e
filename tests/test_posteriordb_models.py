"""The posteriordb translations the accuracy benchmark trusts (``benchmarks/posteriors/``).

Each log density is checked against an independent computation written here in numpy/scipy
from the Stan program (priors, likelihood, the forward algorithm of the HMM, the GP covariance,
the ODE solved by scipy), at two points; the stored reference summaries are checked to load and
to agree with what the stored data imply (least squares for the regressions).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy import integrate, stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import posteriors  # noqa: E402
from posteriors import models  # noqa: E402
from numpyro import handlers  # noqa: E402
from numpyro.infer.util import log_density  # noqa: E402

import variational as vi  # noqa: E402


@pytest.fixture(scope="module")
def reference():
    return posteriors.read_reference()


def _point(p, shift: float) -> dict[str, np.ndarray]:
    """Constrained site values at the reference mean moved by ``shift`` reference sds (kept in support)."""
    out: dict[str, list] = {}
    scalar = {name for name in p.reference if "[" not in name}
    for name, r in p.reference.items():
        out.setdefault(name.split("[", 1)[0], []).append(r["mean"] + shift * r["sd"])
    return {k: np.asarray(v[0] if k in scalar else v) for k, v in out.items()}


def _log_joint(p):
    """The model's log joint at constrained values (no Jacobians), compiled once."""
    kwargs = {**p.data, **p.kwargs}
    fn = jax.jit(lambda v: log_density(p.model, (), kwargs, v)[0])
    return lambda values: float(fn(values))


def test_blr_log_density_matches_scipy(reference):
    p = posteriors.load("sblri-blr", reference)
    ld = vi.LogDensity(p.model, p.data, p.kwargs)      # what the benchmark's fits see
    logp = jax.jit(lambda z: ld.logp(z, p.data))
    for shift in (0.0, 1.5):
        v = _point(p, shift)
        X, y, beta, sigma = p.data["X"], p.data["y"], v["beta"], float(v["sigma"])
        expected = (stats.norm.logpdf(beta, 0, 10).sum() + stats.halfnorm.logpdf(sigma, scale=10)
                    + stats.norm.logpdf(y, X @ beta, sigma).sum())
        # unconstrained: plus the log-Jacobian of sigma = exp(u)
        assert float(logp(ld.unconstrain(v))) == pytest.approx(expected + np.log(sigma), rel=2e-5)


@pytest.mark.parametrize("name", ["kidiq-kidscore_momiq", "kidiq-kidscore_momhsiq"])
def test_kidiq_log_joint_matches_scipy(reference, name):
    """Stan's transformed data (the design) is checked too: the columns are read raw here."""
    p = posteriors.load(name, reference)
    log_joint = _log_joint(p)
    raw = posteriors.read_data("kidiq")
    iq, hs, score = (np.asarray(raw[k], float) for k in ("mom_iq", "mom_hs", "kid_score"))
    for shift in (0.0, -1.0):
        v = _point(p, shift)
        b, sigma = v["beta"], float(v["sigma"])
        mean = b[0] + b[1] * iq if len(b) == 2 else b[0] + b[1] * hs + b[2] * iq
        expected = stats.halfcauchy.logpdf(sigma, scale=2.5) + stats.norm.logpdf(score, mean, sigma).sum()
        assert log_joint({"beta": b, "sigma": sigma}) == pytest.approx(expected, rel=2e-5)


def _hmm_forward(y: np.ndarray, mu: np.ndarray, theta: np.ndarray) -> float:
    """Stan's loop, written out: gamma[t, k] = log_sum_exp_j(gamma[t-1, j] + log theta[j, k] + emit)."""
    gamma = stats.norm.logpdf(y[0], mu, 1.0)
    for t in range(1, len(y)):
        gamma = np.array([np.logaddexp.reduce(gamma + np.log(theta[:, k]) + stats.norm.logpdf(y[t], mu[k], 1.0))
                          for k in range(2)])
    return float(np.logaddexp.reduce(gamma))


def test_hmm_log_joint_matches_forward_algorithm(reference):
    p = posteriors.load("hmm_example-hmm_example", reference)
    log_joint = _log_joint(p)
    for shift in (0.0, 0.7):
        v = _point(p, shift)
        t1 = np.array([v["theta1"][0], 1 - v["theta1"][0]])
        t2 = np.array([v["theta2"][0], 1 - v["theta2"][0]])
        expected = (stats.norm.logpdf(v["mu"][0], 3, 1) + stats.norm.logpdf(v["mu"][1], 10, 1)  # Dirichlet(1, 1): 0
                    + _hmm_forward(p.data["y"], v["mu"], np.stack([t1, t2])))
        assert log_joint({"theta1": t1, "theta2": t2, "mu": v["mu"]}) == pytest.approx(expected, rel=1e-5)


def test_gp_log_joint_matches_scipy(reference):
    p = posteriors.load("gp_pois_regr-gp_regr", reference)
    log_joint = _log_joint(p)
    for shift in (0.0, -0.8):
        v = _point(p, shift)
        rho, alpha, sigma = float(v["rho"]), float(v["alpha"]), float(v["sigma"])
        x, y = p.data["x"], p.data["y"]
        cov = alpha**2 * np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / rho**2) + sigma * np.eye(len(x))
        expected = (stats.gamma.logpdf(rho, 25, scale=1 / 4) + stats.halfnorm.logpdf(alpha, scale=2)
                    + stats.halfnorm.logpdf(sigma, scale=1) + stats.multivariate_normal.logpdf(y, 0 * x, cov))
        got = log_joint({"rho": rho, "alpha": alpha, "sigma": sigma})
        assert got == pytest.approx(expected, rel=1e-5)


def test_lotka_volterra_rk4_matches_scipy_ode_solver(reference):
    p = posteriors.load("hudson_lynx_hare-lotka_volterra", reference)
    v = _point(p, 0.0)
    th, z0 = v["theta"], v["z_init"]

    def f(t, z):
        return [(th[0] - th[1] * z[1]) * z[0], (-th[2] + th[3] * z[0]) * z[1]]

    exact = integrate.solve_ivp(f, (0, 20), z0, t_eval=np.arange(1, 21), rtol=1e-10, atol=1e-10).y.T
    path = np.asarray(models._lotka_volterra_path(th, z0, 20, 20))
    assert np.max(np.abs(path / exact - 1)) < 1e-4


def test_reference_summaries_load_and_agree_with_the_data(reference):
    assert len(posteriors.POSTERIORS) >= 12
    for name in posteriors.POSTERIORS:
        p = posteriors.load(name, reference)
        values = _point(p, 0.0)

        def latent_values(p=p, values=values):
            tr = handlers.trace(handlers.substitute(p.model, data=values)).get_trace(**p.data, **p.kwargs)
            return {k: s["value"] for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}

        latent = {k: v.shape for k, v in jax.eval_shape(latent_values).items()}  # traced, not run
        assert latent == {k: np.shape(v) for k, v in values.items()}, name      # names and shapes agree
        assert sum(int(np.prod(s)) for s in latent.values()) == len(p.reference), name
        assert all(r["sd"] > 0 and np.isfinite(r["mean"]) for r in p.reference.values()), name
    rows = {"earnings": ("earn", 1192), "kidiq": ("kid_score", 434), "mesquite": ("weight", 46),
            "nes2000": ("partyid7", 476), "sblri": ("y", 100), "hmm_example": ("y", 100)}
    for data_name, (column, n) in rows.items():
        assert len(posteriors.read_data(data_name)[column]) == n, data_name
    # with flat priors on the coefficients the posterior mean of beta is the least-squares fit
    for name in ("kidiq_with_mom_work-kidscore_mom_work", "earnings-logearn_interaction_z", "nes2000-nes"):
        p = posteriors.load(name, reference)
        ols = np.linalg.lstsq(p.data["X"], p.data["y"], rcond=None)[0]
        ref = np.array([p.reference[f"beta[{i + 1}]"]["mean"] for i in range(len(ols))])
        sd = np.array([p.reference[f"beta[{i + 1}]"]["sd"] for i in range(len(ols))])
        assert np.max(np.abs(ref - ols) / sd) < 0.05, name
