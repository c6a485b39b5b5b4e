"""Variational objectives, written once against the :class:`~variational.families.Family` interface.

- ``"elbo"``: ``E_q[log p(x, z) - log q(z)]`` (NumPyro's ``Trace_ELBO``, PyMC's ``KL``);
- ``kl_weight=beta``: ``E_q[log p(x | z)] - beta KL(q || prior)`` (PyMC's ``KL(beta=)``, the
  beta-ELBO). The prior term holds the latent sites' log densities and their log-Jacobians; the
  likelihood term holds the observed sites and ``Potential`` terms;
- ``"renyi"``: the Renyi bound ``1/(1 - alpha) log E_q[(p(x, z) / q(z))^(1 - alpha)]`` over
  ``num_particles`` draws (NumPyro's ``RenyiELBO``): alpha -> 1 is the ELBO, alpha = 0 the
  importance-weighted bound on ``log p(x)``;
- ``"meanfield_elbo"``: the ELBO with ``KL(q_i || p_i)`` in closed form for each latent site
  whose prior allows it given the other sites' draws (NumPyro's ``TraceMeanField_ELBO``); the
  other sites keep the Monte Carlo term. Needs the mean-field family (``method="advi"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions.transforms import ExpTransform, IdentityTransform, IndependentTransform, biject_to

from .errors import VariationalError
from .families.base import LOG_2PI, Family
from .model import LogDensity
from .model.logdensity import JACOBIAN

__all__ = ["Objective", "OBJECTIVES", "RENYI_MINIBATCH", "make_objective", "elbo", "renyi_bound", "weighted_elbo",
           "meanfield_elbo", "make_loss_and_grad"]

OBJECTIVES = ("elbo", "renyi", "meanfield_elbo")

RENYI_MINIBATCH = (
    "objective='renyi' with batch_size=: the bound of a minibatch (the log of an average of its "
    "weights) is not an unbiased estimate of the full-data bound, and the noise of the scaled "
    "minibatch likelihood inflates q; use larger batches, all rows, or objective='elbo'")


@dataclass(frozen=True)
class Objective:
    """What the optimiser maximises: a name and its options (see :func:`make_objective`)."""

    name: str = "elbo"
    alpha: float | None = None
    kl_weight: float = 1.0

    @property
    def plain(self) -> bool:
        """The ELBO with weight 1 (the estimator every family supports)."""
        return self.name == "elbo" and self.kl_weight == 1.0


def make_objective(objective: str | Objective = "elbo", *, alpha: float | None = None,
                   kl_weight: float = 1.0) -> Objective:
    """Check the objective's name and options and return an :class:`Objective`.

    Examples
    --------
    >>> make_objective("renyi", alpha=0.5)
    Objective(name='renyi', alpha=0.5, kl_weight=1.0)
    """
    if isinstance(objective, Objective):
        return objective
    if objective not in OBJECTIVES:
        raise VariationalError(f"objective={objective!r} is not known; choose one of {list(OBJECTIVES)}")
    try:
        kl_weight = float(kl_weight)
    except (TypeError, ValueError):
        raise VariationalError(f"kl_weight={kl_weight!r} must be a number >= 0") from None
    if not kl_weight >= 0 or kl_weight == float("inf"):
        raise VariationalError(f"kl_weight={kl_weight!r} must be a finite number >= 0 (1 is the ELBO)")
    if objective == "renyi":
        a = 0.0 if alpha is None else alpha
        if not isinstance(a, (int, float)) or a != a or abs(a) == float("inf"):
            raise VariationalError(f"alpha={alpha!r} must be a finite number (the Renyi order)")
        if a == 1:
            raise VariationalError("alpha=1 makes the Renyi bound the ELBO; use objective='elbo'")
        if kl_weight != 1.0:
            raise VariationalError("kl_weight= applies to objective='elbo' or 'meanfield_elbo', not 'renyi'")
        return Objective("renyi", float(a), 1.0)
    if alpha is not None:
        raise VariationalError(f"alpha= is the order of objective='renyi'; it does not apply to {objective!r}")
    return Objective(objective, None, kl_weight)


def elbo(
    family: Family,
    logp: Callable[[jax.Array, Any], jax.Array],
    params: Any,
    key: jax.Array,
    batch: Mapping[str, Any] | None = None,
    num_particles: int = 1,
    stl: bool = False,
) -> jax.Array:
    """Monte Carlo estimate of the ELBO, ``E_q[log p(x, z) - log q(z)]``.

    Parameters
    ----------
    family : Family
        The variational family.
    logp : callable
        ``logp(z_flat, batch) -> scalar`` (see :class:`variational.LogDensity`).
    params : pytree
        The family's parameters.
    key : jax.Array
        PRNG key.
    batch : mapping, optional
        Data passed to ``logp``.
    num_particles : int
        Number of draws averaged.
    stl : bool
        Sticking-the-landing: the score term of ``log q`` is dropped from the gradient
        (``log q`` evaluated at stopped parameters), which lowers variance near the optimum.

    Returns
    -------
    jax.Array
        Scalar ELBO estimate.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from variational.families import mean_field
    >>> fam = mean_field()
    >>> p = {"loc": jnp.zeros(1), "rho": jnp.full(1, 0.5413)}   # std = 1
    >>> logp = lambda z, b: -0.5 * jnp.sum(z ** 2)              # q equals p up to a constant
    >>> estimate = jax.jit(lambda p, key: elbo(fam, logp, p, key))   # compiled once, as in a fit
    >>> bool(jnp.isfinite(estimate(p, jax.random.PRNGKey(0))))
    True
    """
    z, log_q = _draws(family, params, key, num_particles, stl)
    lp = jax.vmap(logp, in_axes=(0, None))(z, batch)
    return jnp.mean(lp - log_q)


def _draws(family: Family, params: Any, key: jax.Array, n: int, stl: bool) -> tuple[jax.Array, jax.Array]:
    z, log_q = family.sample_and_log_q(params, key, n)
    if stl:
        if family.log_q is None:
            raise ValueError(f"stl=True needs a family with log_q; '{family.name}' has none")
        log_q = family.log_q(jax.lax.stop_gradient(params), z)
    return z, log_q


def renyi_value(log_w: jax.Array, alpha: float) -> jax.Array:
    """``1/(1 - alpha) log mean_k exp((1 - alpha) log_w_k)`` of the log weights ``log_w`` (K,)."""
    a = 1.0 - alpha
    return (jax.nn.logsumexp(a * log_w) - jnp.log(log_w.shape[0])) / a


def renyi_bound(family: Family, logp: Callable, params: Any, key: jax.Array,
                batch: Mapping[str, Any] | None = None, num_particles: int = 2,
                alpha: float = 0.0) -> jax.Array:
    """Monte Carlo estimate of the Renyi bound of order ``alpha`` (``num_particles`` draws).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from variational.families import mean_field
    >>> fam = mean_field()
    >>> p = {"loc": jnp.zeros(1), "rho": jnp.full(1, 0.5413)}      # q = N(0, 1)
    >>> logp = lambda z, b: -0.5 * jnp.sum(z ** 2) - 0.9189385      # p = N(0, 1): log p(x) = 0
    >>> bound = jax.jit(lambda p, key: renyi_bound(fam, logp, p, key, num_particles=8))   # compiled once
    >>> round(float(bound(p, jax.random.PRNGKey(0))), 4)
    0.0
    """
    z, log_q = family.sample_and_log_q(params, key, num_particles)
    lp = jax.vmap(logp, in_axes=(0, None))(z, batch)
    return renyi_value(lp - log_q, alpha)


def _split(terms: Mapping[str, jax.Array], trace: Mapping[str, dict]) -> tuple[jax.Array, jax.Array]:
    """(log-likelihood, log-prior with Jacobians) from :meth:`LogDensity.log_terms`."""
    latent = {n for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]}
    jacobians = {JACOBIAN.format(n) for n in latent}
    lik = prior = jnp.zeros(())
    for name, value in terms.items():
        if trace[name]["is_observed"] and name not in jacobians:
            lik = lik + value
        else:
            prior = prior + value
    return lik, prior


def weighted_elbo(family: Family, logdensity: LogDensity, params: Any, key: jax.Array,
                  batch: Mapping[str, Any] | None = None, num_particles: int = 1,
                  kl_weight: float = 1.0, stl: bool = False) -> jax.Array:
    """``E_q[log p(x | z)] - kl_weight * KL(q || prior)``, by Monte Carlo (the beta-ELBO).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import variational as vi
    >>> from variational.families import mean_field
    >>> def model(y):
    ...     vi.Normal("y", vi.Normal("mu", 0, 1), 1, observed=y)
    >>> ld = vi.LogDensity(model, {"y": jnp.zeros(3)})
    >>> fam, key = mean_field(), jax.random.PRNGKey(0)
    >>> @jax.jit                                     # one compiled program, not op by op
    ... def both(key):
    ...     p = fam.init(key, ld.init)
    ...     a = weighted_elbo(fam, ld, p, key, {"y": jnp.zeros(3)}, 4, kl_weight=1.0)
    ...     return a, elbo(fam, ld.logp, p, key, {"y": jnp.zeros(3)}, 4)
    >>> a, b = both(key)
    >>> bool(jnp.allclose(a, b))
    True
    """
    z, log_q = _draws(family, params, key, num_particles, stl)

    def parts(zz: jax.Array) -> tuple[jax.Array, jax.Array]:
        return _split(*logdensity.log_terms(zz, batch))

    lik, prior = jax.vmap(parts)(z)
    return jnp.mean(lik + kl_weight * (prior - log_q))


def _gaussian_prior(fn: Any, support: Any) -> tuple[jax.Array, jax.Array] | None:
    """(loc, scale) when the prior of a site is Gaussian in its unconstrained space, else None."""
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution)):
        fn = fn.base_dist
    t = biject_to(support)
    while isinstance(t, IndependentTransform):   # a site made an event with to_event()
        t = t.base_transform
    if type(fn) is dist.Normal and isinstance(t, IdentityTransform):
        return fn.loc, fn.scale
    if type(fn) is dist.LogNormal and isinstance(t, ExpTransform):
        return fn.base_dist.loc, fn.base_dist.scale
    return None


def meanfield_elbo(family: Family, logdensity: LogDensity, params: Any, key: jax.Array,
                   batch: Mapping[str, Any] | None = None, num_particles: int = 1,
                   kl_weight: float = 1.0) -> jax.Array:
    """The ELBO with closed-form ``KL(q_i || p_i)`` where a site's prior is Gaussian.

    For a mean-field Gaussian ``q``: a site whose prior is Normal (real support) or LogNormal
    (positive support, a Normal on the log scale) given the other sites' draws contributes
    ``-KL`` exactly; every other site keeps ``log p_i + log|J_i| - log q_i`` at the draw.
    Same expectation as :func:`elbo`, lower variance.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import variational as vi
    >>> from variational.families import mean_field
    >>> def model():
    ...     vi.Normal("x", 0, 1)
    >>> ld, fam = vi.LogDensity(model), mean_field()
    >>> p = {"loc": jnp.zeros(1), "rho": jnp.full(1, 0.5413)}     # q = prior: KL = 0
    >>> estimate = jax.jit(lambda p, key: meanfield_elbo(fam, ld, p, key))   # compiled once, as in a fit
    >>> abs(float(estimate(p, jax.random.PRNGKey(0)))) < 1e-4
    True
    """
    z = family.sample_and_log_q(params, key, num_particles)[0]
    loc, std = logdensity.unravel(family.mean(params)), logdensity.unravel(family.std(params))

    def one(zz: jax.Array) -> jax.Array:
        terms, trace = logdensity.log_terms(zz, batch)
        zs = logdensity.unravel(zz)
        lik, _ = _split(terms, trace)
        prior = jnp.zeros(())
        for n in logdensity.names:
            site, m, s = trace[n], loc[n], std[n]
            gauss = _gaussian_prior(site["fn"], site["fn"].support)
            if gauss is None:   # Monte Carlo term at the draw
                u = (zs[n] - m) / s
                log_q = jnp.sum(-0.5 * u * u - jnp.log(s)) - 0.5 * u.size * LOG_2PI
                prior = prior + terms[n] + terms.get(JACOBIAN.format(n), 0.0) - log_q
            else:
                mp, sp = (jnp.broadcast_to(a, m.shape) for a in gauss)
                kl = jnp.log(sp / s) + (s * s + (m - mp) ** 2) / (2 * sp * sp) - 0.5
                scale = site["scale"] if site["scale"] is not None else 1.0
                prior = prior - scale * jnp.sum(kl)
        return lik + kl_weight * prior

    return jnp.mean(jax.vmap(one)(z))


def make_loss_and_grad(
    family: Family,
    logp: Callable[[jax.Array, Any], jax.Array],
    num_particles: int = 1,
    stl: bool = False,
    objective: Objective | None = None,
    logdensity: LogDensity | None = None,
) -> Callable[[Any, jax.Array, Any], tuple[jax.Array, Any]]:
    """``f(params, key, batch) -> (loss, grads)`` with loss = -objective, for the engine.

    ``logdensity`` is needed by the objectives that split the log joint into likelihood and
    prior (``kl_weight != 1``, ``"meanfield_elbo"``).
    """
    obj = objective or Objective()
    _check(obj, family, num_particles, stl, logdensity)
    if family.make_loss_and_grad is not None:
        if obj.plain:
            return family.make_loss_and_grad(logp, num_particles=num_particles)
        alpha = obj.alpha
        return family.make_loss_and_grad(logp, num_particles=num_particles,
                                         reduce=lambda lp, lq: renyi_value(lp - lq, alpha))

    def value(params: Any, key: jax.Array, batch: Any) -> jax.Array:
        if obj.name == "renyi":
            return renyi_bound(family, logp, params, key, batch, num_particles, obj.alpha)
        if obj.name == "meanfield_elbo":
            return meanfield_elbo(family, logdensity, params, key, batch, num_particles, obj.kl_weight)
        if obj.kl_weight != 1.0:
            return weighted_elbo(family, logdensity, params, key, batch, num_particles, obj.kl_weight, stl)
        return elbo(family, logp, params, key, batch, num_particles, stl)

    return jax.value_and_grad(lambda p, k, b: -value(p, k, b))


def _check(obj: Objective, family: Family, num_particles: int, stl: bool, ld: LogDensity | None) -> None:
    """Refuse combinations of objective, family and options that have no meaning here."""
    if obj.plain:
        return
    what = f"objective={obj.name!r}" + (f" with kl_weight={obj.kl_weight}" if obj.kl_weight != 1 else "")
    if family.make_loss_and_grad is not None and not (obj.name == "renyi" and family.name == "guide"):
        raise VariationalError(
            f"{what} does not apply to method {family.name!r}: "
            + ("a guide supports objective='elbo' and 'renyi'" if family.name == "guide"
               else "it is not an ELBO method (it has its own update); use objective='elbo'"))
    if family.options.get("score_function"):
        raise VariationalError(f"{what} does not apply to a guide with discrete sites drawn by the "
                               f"score-function estimator; use objective='elbo'")
    if obj.name == "renyi" and num_particles < 2:
        raise VariationalError(
            "objective='renyi' averages the weights of several draws inside the logarithm; with "
            "num_particles=1 it is the ELBO. Give num_particles >= 2 (for example 8)")
    if obj.name in ("renyi", "meanfield_elbo") and stl:
        raise VariationalError(f"stl=True applies to objective='elbo' only, not {obj.name!r}")
    if obj.name == "meanfield_elbo" and not family.factorised:
        raise VariationalError(
            f"objective='meanfield_elbo' needs the mean-field family (method='advi'), whose sites "
            f"are independent under q; method {family.name!r} is not")
    if obj.name != "renyi" and ld is None:
        raise VariationalError(f"{what} needs the model's LogDensity (logdensity=)")
    if obj.name != "renyi" and getattr(ld, "enumerated", None):
        raise VariationalError(f"{what} splits the log joint site by site, which a model with "
                               f"enumerated discrete sites {list(ld.enumerated)} does not allow; "
                               f"use objective='elbo' or 'renyi'")
