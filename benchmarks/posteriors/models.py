"""Hand translations of posteriordb's Stan models into NumPyro models.

Each model keeps the Stan program's priors, constraints, parameter names and shapes (Stan's
``vector[K] beta`` is the site ``beta`` of shape ``(K,)``; Stan's ``beta[1]`` is ``beta[0]``
here). Stan's ``transformed data`` block is :func:`prepare`'s job: it turns the stored data
file's columns into the model's keyword arguments, once, in numpy.

A parameter without a prior statement in Stan has an improper flat prior on its support; here it
is an ``ImproperUniform`` site with the same support. Truncated priors (``real<lower=0> sigma;
sigma ~ normal(0, 10)``) differ from NumPyro's half-distributions only by a constant, which no
inference method sees.

The Stan sources are in stan-dev/posteriordb (``posterior_database/models/stan/NAME.stan``,
BSD 3-Clause, (c) Stan Developers); see ``benchmarks/data/posteriordb/README.md``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

__all__ = ["MODELS", "prepare"]


def _flat(name: str, shape: tuple[int, ...] = ()) -> jax.Array:
    return numpyro.sample(name, dist.ImproperUniform(constraints.real, (), shape))


def _flat_positive(name: str, shape: tuple[int, ...] = ()) -> jax.Array:
    return numpyro.sample(name, dist.ImproperUniform(constraints.positive, (), shape))


# -- linear regressions: y ~ normal(X beta, sigma) with Stan's priors ------------------------------
def blr(X: Any, y: Any) -> None:
    """``blr``: beta ~ normal(0, 10), sigma ~ normal(0, 10) on sigma > 0."""
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(10.0))
    numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def _flat_regression(X: Any, y: Any, sigma_prior: Callable[[], Any] | None = None) -> None:
    """Flat beta (one coefficient per column of X, the first column ones); sigma flat or given."""
    beta = _flat("beta", (X.shape[1],))
    sigma = _flat_positive("sigma") if sigma_prior is None else sigma_prior()
    numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def flat_regression(X: Any, y: Any) -> None:
    """``earn_height``, ``logearn_*``, ``kidscore_interaction_c2``, ``kidscore_mom_work``,
    ``mesquite``, ``logmesquite_logvash``, ``nes``: flat beta, flat sigma > 0."""
    _flat_regression(X, y)


def cauchy_sigma_regression(X: Any, y: Any) -> None:
    """``kidscore_momiq``, ``kidscore_momhsiq``: flat beta, sigma ~ cauchy(0, 2.5) on sigma > 0."""
    _flat_regression(X, y, lambda: numpyro.sample("sigma", dist.HalfCauchy(2.5)))


# -- Gaussian process regression ---------------------------------------------------------------------
def gp_regr(x: Any, y: Any) -> None:
    """``gp_regr``: squared-exponential GP with ``sigma`` (not sigma^2) added to the diagonal."""
    rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    d2 = (x[:, None] - x[None, :]) ** 2
    cov = alpha**2 * jnp.exp(-0.5 * d2 / rho**2) + sigma * jnp.eye(x.shape[0])
    numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(x.shape[0]), covariance_matrix=cov), obs=y)


# -- hidden Markov models (forward algorithm, states marginalised) ----------------------------------
def _forward(log_emit: jax.Array, log_trans: jax.Array) -> jax.Array:
    """log p(observations) of an HMM: ``log_emit`` (T, K), ``log_trans[j, k]`` = log P(k | j).

    As in the Stan programs, the first state has no initial distribution term.
    """
    def step(gamma: jax.Array, emit_t: jax.Array) -> tuple[jax.Array, None]:
        return jax.nn.logsumexp(gamma[:, None] + log_trans, axis=0) + emit_t, None

    gamma, _ = jax.lax.scan(step, log_emit[0], log_emit[1:])
    return jax.nn.logsumexp(gamma)


def hmm_example(y: Any, K: int = 2) -> None:
    """``hmm_example``: two states, Gaussian emissions with sd 1, positive ordered means."""
    theta1 = numpyro.sample("theta1", dist.Dirichlet(jnp.ones(K)))
    theta2 = numpyro.sample("theta2", dist.Dirichlet(jnp.ones(K)))
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.positive_ordered_vector, (), (K,)))
    numpyro.factor("mu_prior", dist.Normal(3.0, 1.0).log_prob(mu[0]) + dist.Normal(10.0, 1.0).log_prob(mu[1]))
    log_emit = dist.Normal(mu, 1.0).log_prob(y[:, None])
    numpyro.factor("forward", _forward(log_emit, jnp.log(jnp.stack([theta1, theta2]))))


def hmm_drive_0(u: Any, v: Any, alpha: Any, K: int = 2) -> None:
    """``hmm_drive_0``: two states, exponential emissions of ``u`` and ``v`` with ordered rates."""
    theta1 = numpyro.sample("theta1", dist.Dirichlet(alpha[0]))
    theta2 = numpyro.sample("theta2", dist.Dirichlet(alpha[1]))
    phi = numpyro.sample("phi", dist.ImproperUniform(constraints.positive_ordered_vector, (), (K,)))
    lam = numpyro.sample("lambda", dist.ImproperUniform(constraints.positive_ordered_vector, (), (K,)))
    prior = (dist.Normal(0.0, 1.0).log_prob(phi[0]) + dist.Normal(3.0, 1.0).log_prob(phi[1])
             + dist.Normal(0.0, 1.0).log_prob(lam[0]) + dist.Normal(3.0, 1.0).log_prob(lam[1]))
    numpyro.factor("priors", prior)
    log_emit = dist.Exponential(phi).log_prob(u[:, None]) + dist.Exponential(lam).log_prob(v[:, None])
    numpyro.factor("forward", _forward(log_emit, jnp.log(jnp.stack([theta1, theta2]))))


# -- an ordinary differential equation -----------------------------------------------------------------
def _lotka_volterra_path(theta: jax.Array, z0: jax.Array, n_times: int, substeps: int) -> jax.Array:
    """Populations at t = 1..n_times from z0 at t = 0: classic RK4 with ``substeps`` steps per unit."""
    h = 1.0 / substeps

    def f(z: jax.Array) -> jax.Array:
        u, v = z[0], z[1]
        return jnp.stack([(theta[0] - theta[1] * v) * u, (-theta[2] + theta[3] * u) * v])

    def rk4(z: jax.Array, _: Any) -> tuple[jax.Array, None]:
        k1 = f(z)
        k2 = f(z + 0.5 * h * k1)
        k3 = f(z + 0.5 * h * k2)
        k4 = f(z + h * k3)
        return z + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4), None

    def unit(z: jax.Array, _: Any) -> tuple[jax.Array, jax.Array]:
        z, _ = jax.lax.scan(rk4, z, None, length=substeps)
        return z, z

    _, path = jax.lax.scan(unit, z0, None, length=n_times)
    return path


def lotka_volterra(y_init: Any, y: Any, substeps: int = 20) -> None:
    """``lotka_volterra``: predator-prey ODE (Stan: rk45, rel. tol. 1e-5) observed with lognormal error.

    The measurement times of the posteriordb data are 1, 2, ..., 20; the ODE is solved here with
    fixed-step RK4 (``substeps`` per unit of time), which the NUTS validation checks.
    """
    # Stan: theta[{1, 3}] ~ normal(1, 0.5), theta[{2, 4}] ~ normal(0.05, 0.05), all on theta > 0
    theta = _flat_positive("theta", (4,))
    loc = jnp.array([1.0, 0.05, 1.0, 0.05])
    scale = jnp.array([0.5, 0.05, 0.5, 0.05])
    numpyro.factor("theta_prior", dist.Normal(loc, scale).log_prob(theta).sum())
    z_init = numpyro.sample("z_init", dist.LogNormal(jnp.log(10.0), 1.0).expand([2]).to_event(1))
    sigma = numpyro.sample("sigma", dist.LogNormal(-1.0, 1.0).expand([2]).to_event(1))
    z = _lotka_volterra_path(theta, z_init, y.shape[0], substeps)
    numpyro.sample("y_init", dist.LogNormal(jnp.log(z_init), sigma).to_event(1), obs=y_init)
    numpyro.sample("y", dist.LogNormal(jnp.log(z), sigma).to_event(2), obs=y)


MODELS: dict[str, Callable[..., None]] = {
    "blr": blr, "flat_regression": flat_regression, "cauchy_sigma_regression": cauchy_sigma_regression,
    "gp_regr": gp_regr, "hmm_example": hmm_example, "hmm_drive_0": hmm_drive_0,
    "lotka_volterra": lotka_volterra,
}


# -- Stan's transformed data blocks ----------------------------------------------------------------------
def _design(*cols: Any) -> np.ndarray:
    n = len(cols[0])
    return np.column_stack([np.ones(n), *[np.asarray(c, dtype=float) for c in cols]])


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1))  # Stan's sd() divides by N - 1


def _earnings(d: dict, kind: str) -> dict:
    earn, height, male = (np.asarray(d[k], float) for k in ("earn", "height", "male"))
    if kind == "earn_height":
        return {"X": _design(height), "y": earn}
    if kind == "logearn_height_male":
        return {"X": _design(height, male), "y": np.log(earn)}
    if kind == "logearn_logheight_male":
        return {"X": _design(np.log(height), male), "y": np.log(earn)}
    if kind == "logearn_interaction_z":
        z = (height - height.mean()) / _sd(height)
        return {"X": _design(z, male, z * male), "y": np.log(earn)}
    raise KeyError(kind)


def _kidiq(d: dict, kind: str) -> dict:
    score = np.asarray(d["kid_score"], float)
    hs, iq = np.asarray(d["mom_hs"], float), np.asarray(d["mom_iq"], float)
    if kind == "kidscore_momiq":
        return {"X": _design(iq), "y": score}
    if kind == "kidscore_momhsiq":
        return {"X": _design(hs, iq), "y": score}
    if kind == "kidscore_interaction_c2":
        c_hs, c_iq = hs - 0.5, iq - 100.0
        return {"X": _design(c_hs, c_iq, c_hs * c_iq), "y": score}
    if kind == "kidscore_mom_work":
        work = np.asarray(d["mom_work"])
        return {"X": _design(work == 2, work == 3, work == 4), "y": score}
    raise KeyError(kind)


def _mesquite(d: dict, kind: str) -> dict:
    c = {k: np.asarray(v, float) for k, v in d.items() if k != "N"}
    if kind == "mesquite":
        return {"X": _design(c["diam1"], c["diam2"], c["canopy_height"], c["total_height"], c["density"],
                             c["group"]), "y": c["weight"]}
    if kind == "logmesquite_logvash":
        volume = np.log(c["diam1"] * c["diam2"] * c["canopy_height"])
        area = np.log(c["diam1"] * c["diam2"])
        shape = np.log(c["diam1"] / c["diam2"])
        return {"X": _design(volume, area, shape, np.log(c["total_height"]), c["group"]),
                "y": np.log(c["weight"])}
    raise KeyError(kind)


def _nes(d: dict) -> dict:
    age = np.asarray(d["age_discrete"])
    X = _design(d["real_ideo"], d["race_adj"], age == 2, age == 3, age == 4, d["educ1"], d["gender"], d["income"])
    return {"X": X, "y": np.asarray(d["partyid7"], float)}


def prepare(model_name: str, d: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's arguments from a posteriordb data file (Stan's ``transformed data``).

    Returns ``(columns, kwargs)``: the data columns, one entry per observation (what
    ``vi.fit(model, columns)`` takes), and the other keyword arguments of the model
    (``model_kwargs=``).
    """
    out = _prepare(model_name, d)
    kwargs = {k: out.pop(k) for k in ("alpha", "y_init") if k in out}
    return out, kwargs


def _prepare(model_name: str, d: dict) -> dict[str, Any]:
    if model_name == "blr":
        return {"X": np.asarray(d["X"], float), "y": np.asarray(d["y"], float)}
    if model_name in ("earn_height", "logearn_height_male", "logearn_logheight_male", "logearn_interaction_z"):
        return _earnings(d, model_name)
    if model_name.startswith("kidscore_"):
        return _kidiq(d, model_name)
    if model_name in ("mesquite", "logmesquite_logvash"):
        return _mesquite(d, model_name)
    if model_name == "nes":
        return _nes(d)
    if model_name == "gp_regr":
        return {"x": np.asarray(d["x"], float), "y": np.asarray(d["y"], float)}
    if model_name == "hmm_example":
        return {"y": np.asarray(d["y"], float)}
    if model_name == "hmm_drive_0":
        return {"u": np.asarray(d["u"], float), "v": np.asarray(d["v"], float),
                "alpha": np.asarray(d["alpha"], float)}
    if model_name == "lotka_volterra":
        if list(d["ts"]) != list(range(1, len(d["ts"]) + 1)):
            raise ValueError("the RK4 path assumes measurement times 1, 2, ..., N")
        return {"y_init": np.asarray(d["y_init"], float), "y": np.asarray(d["y"], float)}
    raise KeyError(f"no translation of the Stan model {model_name!r}")
