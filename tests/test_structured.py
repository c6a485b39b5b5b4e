"""The structured Gaussian (Markov along the model's series) and the default family's choice.

Truths: the dense Gaussian the family's parameters define (its log density and covariance by
linear algebra), and the exact posterior of a random walk observed with noise from a Kalman
smoother written in NumPy (``tests/_kalman.py``).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import variational as vi
from variational.families import coupled_chains, default_family, find_chains, structured
from variational.model import LogDensity

from _kalman import random_walk_data, smoother

STEP_SD, NOISE_SD = 0.3, 0.5


def _perturbed(fam, d, seed=0):
    # perturbed on the host (NumPy): eager jax.numpy would compile a program for every operation
    p = fam.init(jax.random.PRNGKey(seed), jnp.zeros(d))
    rng = np.random.default_rng(seed + 1)
    p = {**p, **{n: (np.asarray(p[n]) + 0.3 * rng.normal(size=np.shape(p[n]))).astype(np.float32)
                 for n in ["loc", "rho", "L", "B", "a"]}}
    return {**p, "pre_loc": rng.normal(size=d).astype(np.float32),
            "pre_scale": np.linspace(0.5, 2.0, d, dtype=np.float32)}


def _gaussian_log_density(z, mean, cov):
    """log N(z | mean, cov) by NumPy's Cholesky factor, row by row of ``z``."""
    chol = np.linalg.cholesky(np.asarray(cov, np.float64))
    white = np.linalg.solve(chol, (np.asarray(z, np.float64) - np.asarray(mean, np.float64)).T)
    return -0.5 * (white ** 2).sum(0) - np.log(np.diag(chol)).sum() - 0.5 * len(chol) * np.log(2 * np.pi)


# two globals (0, 1), a series of 5 steps, two globals (7, 8)... and a (2, 3) site read along its axis of 3
CHAINS = ((2, (5,)), (9, (2, 3)))


def test_draws_log_q_and_moments_are_those_of_the_dense_gaussian():
    fam = structured(chains=CHAINS)
    p = _perturbed(fam, 15)
    # the family's moments in one compiled program (not op by op), the truth by NumPy
    mean, cov, std = jax.jit(lambda q: (fam.mean(q), fam.cov(q), fam.std(q)))(p)
    z, lq = jax.jit(fam.sample_and_log_q, static_argnums=2)(p, jax.random.PRNGKey(2), 40_000)
    exact = _gaussian_log_density(z[:50], mean, cov)
    assert np.max(np.abs(np.asarray(lq[:50]) - exact)) < 1e-3
    assert np.max(np.abs(np.asarray(jax.jit(fam.log_q)(p, z[:50])) - exact)) < 1e-3
    assert np.allclose(std, np.sqrt(np.diag(cov)), rtol=1e-5)
    sd = np.sqrt(np.diag(cov))
    corr_err = (np.cov(np.asarray(z).T) - np.asarray(cov)) / np.outer(sd, sd)
    assert np.max(np.abs(corr_err)) < 0.04          # ~5 Monte Carlo errors at 40,000 draws
    assert np.max(np.abs(np.asarray(z.mean(0) - mean) / sd)) < 0.03


def test_precision_is_tridiagonal_along_each_series_and_dense_elsewhere():
    fam = structured(chains=((1, (6,)),))
    prec = np.linalg.inv(np.asarray(jax.jit(fam.cov)(_perturbed(fam, 7)), np.float64))
    series = prec[1:, 1:]
    far = np.abs(np.triu(series, 2)).max()
    assert far < 1e-4 * np.abs(series).max()
    assert np.abs(prec[0, 1:]).min() > 1e-3           # every step depends on the global


def test_rewhitening_and_from_gaussian_keep_the_distribution():
    fam = structured(chains=CHAINS)
    p = _perturbed(fam, 15, seed=3)
    moments = jax.jit(lambda v: (fam.mean(v), fam.cov(v), fam.std(v)))   # one program, three members
    q = jax.jit(fam.rewhiten)(p)
    (mp, cp, _), (mq, cq, sq) = moments(p), moments(q)
    assert np.allclose(cq, cp, atol=1e-5) and np.allclose(mq, mp, atol=1e-6)
    assert np.allclose(sq, q["pre_scale"], rtol=1e-5)   # unit scale in the new coordinates
    r = jax.jit(fam.from_gaussian)(mp, cp)               # a member is its own closest member
    assert np.allclose(moments(r)[1], cp, atol=1e-4)


def test_chains_are_the_long_sites_along_their_longest_axis():
    def model():
        numpyro.sample("sigma", dist.HalfNormal(1.0))
        numpyro.sample("x", dist.GaussianRandomWalk(1.0, num_steps=40))
        numpyro.sample("w", dist.Normal(0, 1).expand([3, 20]).to_event(2))
        numpyro.sample("b", dist.Normal(0, 1).expand([5]))

    ld = LogDensity(model)
    assert find_chains(ld.layout) == ((6, (3, 20)), (66, (40,)))   # b, sigma first (sorted names)
    assert default_family(ld.dim, ld.layout) == ("structured", {"chains": ((6, (3, 20)), (66, (40,)))})
    fam = structured(chains=find_chains(ld.layout))
    p = fam.init(jax.random.PRNGKey(0), ld.init)
    assert p["B"].shape == (100, 6) and p["a"].shape == (100,)     # linear in the series' length
    assert default_family(30, ld.layout)[0] == "fullrank_advi"
    assert default_family(500)[0] == "lowrank_advi"
    # the log density couples neighbours along x only: w's independent coordinates are no series
    assert find_chains(ld.layout, logp=ld.logp, at=ld.init, data={}) == ((66, (40,)),)


def _groups_and_walk(y, group, groups=30, walk=True):
    # exchangeable group effects (radon's form) beside a random walk of 60 steps
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    alpha = numpyro.sample("alpha", dist.Normal(mu, tau).expand([groups]).to_event(1))
    x = numpyro.sample("x", dist.GaussianRandomWalk(STEP_SD, num_steps=60))[group % 60] if walk else 0.0
    numpyro.sample("y", dist.Normal(alpha[group] + x, 1.0), obs=y)


def test_group_effects_are_no_series_and_a_random_walk_is():
    group = np.arange(120) % 30
    data = {"y": np.random.default_rng(0).normal(size=120).astype(np.float32), "group": group}
    ld = LogDensity(_groups_and_walk, data)
    (_, a_shape), (x_off, x_shape) = find_chains(ld.layout)       # candidates by size: both
    assert (a_shape, x_shape, ld.dim) == ((30,), (60,), 92)
    # the Hessian couples x[t] with x[t +- 1], never alpha[j] with alpha[j +- 1] (the data tie
    # alpha[j] to x[j % 60], an even step to an even step): the series is x, the 32 others global
    assert default_family(ld.dim, ld.layout, ld.logp, ld.init, data) == ("structured", {"chains": ((x_off, (60,)),)})
    # without the walk (and with 70 groups: 72 dimensions) no site is a series
    data["group"] = np.arange(120) % 70
    ld = LogDensity(functools.partial(_groups_and_walk, groups=70, walk=False), data)
    assert ld.dim == 72 and default_family(ld.dim, ld.layout, ld.logp, ld.init, data) == ("lowrank_advi", {"rank": 8})


def test_sites_coupled_only_to_each_other_are_no_series():
    """Persons and items of an item-response model: every person effect meets every item effect
    in the likelihood, none meets another of its own site. The Hessian within each site is
    diagonal, so neither is a series (one probe over both sites at once read each as one)."""
    def persons_and_items(z, data):
        u, w = z[:40], z[40:80]
        return -0.5 * jnp.sum((u[:, None] * w[None, :] - 1.0) ** 2) - 0.5 * jnp.sum(z ** 2)

    at = jnp.linspace(0.5, 1.5, 80)
    assert coupled_chains(((0, (40,)), (40, (40,))), persons_and_items, at) == ()
    # a random walk beside them is still found, and only it
    def walk(z, data):
        return persons_and_items(z, data) - 0.5 * jnp.sum(jnp.diff(z[80:]) ** 2)

    at = jnp.linspace(0.5, 1.5, 120)
    assert coupled_chains(((0, (40,)), (40, (40,)), (80, (40,))), walk, at) == ((80, (40,)),)


def _walk(y):
    x = numpyro.sample("x", dist.GaussianRandomWalk(STEP_SD, num_steps=len(y)))
    numpyro.sample("y", dist.Normal(x, NOISE_SD), obs=y)


def _kalman_errors(fit, y):
    m, s = smoother(y, STEP_SD, NOISE_SD)
    mu, sd = np.asarray(fit.mean["x"]), np.asarray(fit.std["x"])
    return np.max(np.abs(mu - m) / s), (sd / s).min(), (sd / s).max()


@pytest.fixture(scope="module")
def walk100():
    y = random_walk_data(100, STEP_SD, NOISE_SD, seed=0)
    return y, vi.fit(_walk, {"y": y}, progress=False, seed=0)


def test_default_fit_of_a_noisy_random_walk_is_the_kalman_smoother(walk100):
    y, fit = walk100
    assert fit.method == "structured"
    err, lo, hi = _kalman_errors(fit, y)
    assert err <= 0.1 and 0.95 <= lo and hi <= 1.05, (err, lo, hi)


def test_a_saved_structured_fit_reloads(walk100, tmp_path):
    y, fit = walk100
    path = fit.save(tmp_path / "walk.npz")
    again = vi.load(path, _walk, {"y": y})
    assert again.method == "structured"
    assert np.allclose(np.asarray(again.mean["x"]), np.asarray(fit.mean["x"]))


def test_without_a_series_the_default_is_low_rank_and_reloads_with_its_rank(tmp_path):
    def model():   # 75 dimensions in five sites of 15: none is a series
        for k in range(5):
            numpyro.sample(f"x{k}", dist.Normal(0.0, 1.0).expand([15]).to_event(1))

    fit = vi.fit(model, steps=50, learning_rate=0.01, progress=False)
    assert fit.method == "lowrank_advi" and fit.state.params["W"].shape == (75, 8)
    again = vi.load(fit.save(tmp_path / "lr.npz"), model)
    assert again.state.params["W"].shape == (75, 8)
    assert np.allclose(np.asarray(again.mean["x3"]), np.asarray(fit.mean["x3"]))


def _correlated(dim, rho):
    # a Gaussian posterior whose correlations are dense: every pair rho (a Markov chain cannot hold it)
    return rho * np.ones((dim, dim)) + (1 - rho) * np.eye(dim)


@pytest.mark.slow
def test_a_bad_structured_default_tries_full_rank_and_says_so():
    cov = _correlated(80, 0.5)

    def model():
        numpyro.sample("x", dist.MultivariateNormal(jnp.zeros(80), jnp.asarray(cov)))

    fit = vi.fit(model, progress=False, seed=0, max_steps=20_000)
    assert fit.method == "fullrank_advi", fit.message
    assert "fitted 'structured' (verdict " in fit.message
    assert fit.alternative.method == "structured"
    sd = np.asarray(fit.std["x"])
    assert np.all(np.abs(sd - 1.0) < 0.1) and np.max(np.abs(np.asarray(fit.mean["x"]))) < 0.1


@pytest.mark.slow
def test_default_fit_of_a_random_walk_of_1000_steps_is_close_to_the_kalman_smoother():
    # measured (benchmarks/long_series.py, the same data and seed): 0.055 sd, sd ratios 0.947-1.032;
    # the smallest ratio is where the stopping rule's tolerance (0.1 q-sd of movement) leaves it
    y = random_walk_data(1000, STEP_SD, NOISE_SD, seed=0)
    fit = vi.fit(_walk, {"y": y}, progress=False)
    err, lo, hi = _kalman_errors(fit, y)
    assert fit.method == "structured"
    assert err <= 0.1 and 0.93 <= lo and hi <= 1.05, (err, lo, hi)
