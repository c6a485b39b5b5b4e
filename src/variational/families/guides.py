"""Custom guides as a family: any NumPyro guide function or autoguide, run by the same engine.

A guide is a NumPyro program over the model's latent sites: ``numpyro.param`` for its
parameters (with constraints), ``numpyro.sample`` for each latent site (any distribution,
``Delta`` included), and optionally auxiliary sample sites (``infer={"is_auxiliary": True}``),
mixtures, ``numpyro.module`` networks. NumPyro's autoguides (``AutoNormal``,
``AutoMultivariateNormal``, ``AutoDAIS``, ``AutoIAFNormal``, ``AutoBNAFNormal``...) are guides.

The adapter keeps the parameters unconstrained for the optimiser (as NumPyro's SVI does) and
shows them constrained, named as the guide named them, in ``fit.params``. Each draw of the guide
is mapped to the model's flat unconstrained vector, and its log density is carried along with
the Jacobian of that map, so the ELBO is the same estimator as NumPyro's ``Trace_ELBO``
(``E_q[log p(x, z) - log q(z)]``) and goes through the engine's usual log density (minibatch
scaling included). The guide is called with the same keyword arguments as the model (data
columns of the current batch plus ``model_kwargs``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import log_density, transform_fn
from numpyro.primitives import Messenger

from ..errors import ModelError
from ..model import RNG_KEY, LogDensity
from ..model.params import PARAMS
from .base import Family

__all__ = ["guide_family", "score_term"]


class _BlockNonReparam(Messenger):
    """Stop gradients through draws of sites without a reparameterised sampler (as Trace_ELBO)."""

    def postprocess_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and not msg["fn"].has_rsample:
            msg["value"] = jax.lax.stop_gradient(msg["value"])
            msg["intermediates"] = None


def guide_family(guide: Callable, logdensity: LogDensity, data: Mapping[str, Any] | None = None,
                 seed: int = 0, score_function: bool = False) -> Family:
    """Wrap a NumPyro guide (function or autoguide) as a :class:`~variational.families.Family`.

    Usually reached through ``vi.fit(model, data, guide=guide)``.

    Parameters
    ----------
    guide : callable
        A NumPyro guide taking the same keyword arguments as the model.
    logdensity : LogDensity
        The model's log density (names, supports and flat layout of the latent sites).
    data : mapping, optional
        Data columns the guide is called with when drawing (``fit.sample``).
    seed : int
        Seed of the trace that discovers the guide's parameters and their initial values.
    score_function : bool
        Add the score-function term for the guide's sites without a reparameterised sampler
        (discrete sites above all): the ELBO's gradient is then unbiased (TraceGraph-style,
        with a leave-one-out baseline over the particles), at the price of a high variance.
        Without it those sites' draws are held fixed in the gradient, as ``Trace_ELBO`` does.

    Returns
    -------
    Family
        With ``user_params`` showing the constrained parameters by the guide's names.

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> from numpyro.distributions import constraints
    >>> import jax.numpy as jnp
    >>> import variational as vi
    >>> def model(y):
    ...     mu = vi.Normal("mu", 0, 10)
    ...     vi.Normal("y", mu, 1, observed=y)
    >>> def guide(y):
    ...     m = numpyro.param("m", 0.0)
    ...     s = numpyro.param("s", 1.0, constraint=constraints.positive)
    ...     numpyro.sample("mu", dist.Normal(m, s))
    >>> fit = vi.fit(model, {"y": jnp.array([1.0, 3.0])}, guide=guide, steps=3000,
    ...              objective=vi.Objective(num_particles=8), progress=False)
    >>> # exact posterior: N(4 / 2.01, 1 / 2.01) = N(1.99, 0.705^2)
    >>> abs(float(fit.params["m"]) - 1.99) < 0.1, abs(float(fit.params["s"]) - 0.705) < 0.07
    (True, True)
    """
    if not callable(guide):
        raise ModelError(f"guide= must be a NumPyro guide (a callable), got {type(guide).__name__}")
    ld = logdensity
    full = {**ld.model_kwargs, **dict(data or {})}
    try:
        tr = handlers.trace(handlers.seed(guide, jax.random.PRNGKey(seed))).get_trace(**full)
    except Exception as e:
        raise ModelError(f"calling the guide failed ({type(e).__name__}: {e}); a guide takes the "
                         f"same keyword arguments as the model (data columns and model_kwargs)") from e
    transforms, init_params = {}, {}
    for name, site in tr.items():
        if site["type"] == "param":
            constraint = site["kwargs"].get("constraint", constraints.real)
            transforms[name] = biject_to(constraint)
            init_params[name] = transforms[name].inv(site["value"])
    _check_sites(tr, ld)
    bijections = {n: biject_to(ld.supports[n]) for n in ld.names if n not in ld.discrete}

    def constrained(params: Any) -> dict[str, Any]:
        return transform_fn(transforms, params)

    def draw(params: Any, key: jax.Array, kwargs: Mapping[str, Any]) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One draw of the guide: the model's flat unconstrained vector, its log density, and
        the log density of the sites drawn without reparameterisation (for the score term)."""
        log_q, gtr = log_density(_BlockNonReparam(handlers.seed(guide, key)), (), _guide_kwargs(kwargs),
                                 constrained(params))
        z, log_jac = {}, 0.0
        for n in ld.names:
            value = gtr[n]["value"]
            if n in ld.discrete:  # (a discrete value rides as it is)
                z[n] = jnp.asarray(value, dtype=jnp.result_type(float))
                continue
            z[n] = bijections[n].inv(value)
            log_jac = log_jac + jnp.sum(bijections[n].log_abs_det_jacobian(z[n], value))
        # q over the unconstrained z: q(theta) |d theta / d z|
        return ld.ravel(z), log_q + log_jac, _log_q_not_reparam(gtr)

    def draws3(params: Any, key: jax.Array, n: int, kwargs: Mapping[str, Any]) -> tuple:
        return jax.vmap(lambda k: draw(params, k, kwargs))(jax.random.split(key, n))

    def draws(params: Any, key: jax.Array, n: int, kwargs: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
        return draws3(params, key, n, kwargs)[:2]

    # draws outside the engine (fit.sample, summaries) are compiled too: a guide traced eagerly
    # op by op is slow
    draws_jit = jax.jit(draws, static_argnums=2)

    def init(key: jax.Array, z0: jax.Array) -> Any:
        return dict(init_params)

    def sample_and_log_q(params: Any, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        return draws_jit(params, key, int(n), full)

    def make_loss_and_grad(logp: Callable, num_particles: int = 1, reduce: Callable | None = None,
                           **_: Any) -> Callable:
        # reduce(lp, log_q) -> objective: an objective other than the ELBO (Renyi's)
        def loss(params: Any, key: jax.Array, batch: Any) -> jax.Array:
            z, log_q, log_q_nr = draws3(params, key, num_particles, {**ld.model_kwargs, **(batch or {})})
            lp = jax.vmap(logp, in_axes=(0, None))(z, batch)
            if reduce is not None:
                return -reduce(lp, log_q)
            elbos = lp - log_q
            if not score_function:
                return -jnp.mean(elbos)
            return -jnp.mean(elbos + score_term(elbos, log_q_nr))

        return jax.value_and_grad(loss)

    def from_constrained(params: Any, values: Mapping[str, Any]) -> Any:
        return {**params, **{k: transforms[k].inv(v) for k, v in values.items()}}

    options = {"guide": getattr(guide, "__name__", type(guide).__name__)}
    if score_function:
        options["score_function"] = True
    return Family("guide", init, sample_and_log_q, make_loss_and_grad=make_loss_and_grad,
                  user_params=constrained, from_user_params=from_constrained, options=options)


def _check_sites(tr: Mapping[str, dict], ld: LogDensity) -> None:
    """The guide's trace samples every latent site of the model, with its shape, and no other."""
    samples = {n: s for n, s in tr.items() if s["type"] == "sample" and not s.get("is_observed")}
    latent = {n for n, s in samples.items() if not (s.get("infer") or {}).get("is_auxiliary")}
    missing = [n for n in ld.names if n not in latent]
    if missing:
        raise ModelError(
            f"the guide has no sample site for the model's latent site(s) {missing}; a guide "
            f"must sample every latent site of the model (its latent sites: {ld.names})")
    extra = sorted(latent - set(ld.names))
    if extra:
        raise ModelError(
            f"the guide samples site(s) {extra} that are not latent sites of the model "
            f"{ld.names}; mark helper variables with infer={{'is_auxiliary': True}}")
    for n in ld.names:
        got, want = tuple(jnp.shape(samples[n]["value"])), tuple(ld.shapes[n])
        if got != want:
            raise ModelError(f"the guide's site '{n}' has shape {got}, but the model's has shape {want}")


def _guide_kwargs(kwargs: Mapping[str, Any]) -> dict:
    """The model's keyword arguments less the engine's reserved batch entries."""
    return {k: v for k, v in kwargs.items() if k not in (RNG_KEY, PARAMS)}


def _log_q_not_reparam(gtr: Mapping[str, dict]) -> jax.Array:
    """Log density of the guide's latent sites drawn without reparameterisation (values fixed)."""
    total = jnp.zeros(())
    for site in gtr.values():
        if site["type"] == "sample" and not site["is_observed"] and not site["fn"].has_rsample:
            lp = site["fn"].log_prob(jax.lax.stop_gradient(site["value"]))
            total = total + jnp.sum(lp if site["scale"] is None else site["scale"] * lp)
    return total


def score_term(elbos: jax.Array, log_q: jax.Array) -> jax.Array:
    """Score-function surrogate per particle: value 0, gradient ``(f - b) grad log q``.

    ``f`` is each particle's ELBO estimate and ``b`` the mean of the other particles' (a
    leave-one-out baseline: it does not depend on the particle, so the estimator stays
    unbiased, and it removes most of the variance the mean of ``f`` would cause); with one
    particle there is no baseline.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> float(score_term(jnp.array([1.0, 3.0]), jnp.array([0.5, -0.5])).sum())
    0.0
    """
    n = elbos.shape[0]
    f = jax.lax.stop_gradient(elbos)
    baseline = (jnp.sum(f) - f) / (n - 1) if n > 1 else jnp.zeros_like(f)
    term = log_q * (f - baseline)
    return term - jax.lax.stop_gradient(term)
