"""Site constructors: PyMC-flavoured sugar over ``numpyro.sample``, ``deterministic`` and ``factor``.

Each constructor builds a NumPyro distribution, checks its parameters, shape and observed values,
and names the site when something is wrong. Any NumPyro model works without them.

Owns: the constructors. Imports: numpyro, jax, :mod:`variational.errors`, :mod:`.checks`, :mod:`.handlers`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from ..errors import ModelError
from .checks import refuse_nonfinite
from .handlers import check_total_size

__all__ = [
    "Site", "Normal", "HalfNormal", "Uniform", "Flat", "HalfFlat", "Beta", "Gamma", "Exponential",
    "Cauchy", "HalfCauchy", "StudentT", "LogNormal", "Laplace", "Bernoulli", "Binomial",
    "Poisson", "Categorical", "Dirichlet", "MvNormal", "NormalMixture", "Deterministic",
    "Potential",
]

def _enumerating() -> bool:
    """Whether the model runs under parallel enumeration of discrete sites (NumPyro's funsor ``enum``)."""
    from numpyro.primitives import _PYRO_STACK

    return any(type(h).__name__ == "enum" and type(h).__module__.startswith("numpyro.contrib.funsor")
               for h in _PYRO_STACK)


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _shape_of(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def Site(
    name: str,
    distribution: dist.Distribution,
    *,
    shape: int | Sequence[int] | None = None,
    observed: Any = None,
    total_size: int | Sequence[int | None] | None = None,
) -> jnp.ndarray:
    """Declare a random variable with any NumPyro distribution.

    Parameters
    ----------
    name : str
        Site name; it names the variable in every result.
    distribution : numpyro.distributions.Distribution
        The distribution of the site.
    shape : int or tuple of int, optional
        Full shape of the variable (batch + event), as in PyMC. The distribution is expanded
        to it; it must be compatible with the distribution's own shape.
    observed : array_like, optional
        Observed values. Makes the site part of the likelihood.
    total_size : int or sequence, optional
        Number of rows in the full dataset when ``observed`` holds a minibatch; the site's
        log-likelihood is then scaled by ``total_size / len(observed)``. Per dimension, as in
        PyMC: ``[N, None]`` (rows are a minibatch of N, columns whole), ``[N, ..., M]``.

    Returns
    -------
    jax.Array
        The sampled (or observed) value.

    Examples
    --------
    >>> import numpyro.distributions as dist
    >>> import variational as vi
    >>> def model():
    ...     vi.Site("rate", dist.Gamma(2.0, 1.0), shape=3)
    >>> fit = vi.fit(model, steps=200, learning_rate=0.05, progress=False)
    >>> fit.mean["rate"].shape
    (3,)
    """
    if not isinstance(name, str) or not name:
        raise ModelError(f"a site name must be a non-empty string, got {name!r}")
    d = distribution
    full_shape = tuple(d.batch_shape) + tuple(d.event_shape)
    if shape is not None:
        target = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        n_event = len(d.event_shape)
        if len(target) < n_event or (n_event and target[len(target) - n_event:] != tuple(d.event_shape)):
            raise ModelError(
                f"site '{name}': shape={target} does not end with the event shape "
                f"{tuple(d.event_shape)} of its {type(d).__name__} distribution; "
                f"give shape=(..., {', '.join(map(str, d.event_shape))})")
        batch = target[: len(target) - n_event]
        try:
            np.broadcast_shapes(tuple(d.batch_shape), batch)
            if np.broadcast_shapes(tuple(d.batch_shape), batch) != batch:
                raise ValueError
        except ValueError:
            raise ModelError(
                f"site '{name}': shape={target} does not broadcast with the parameters' shape "
                f"{full_shape}; make the parameters' shapes match shape= or drop shape=") from None
        if tuple(d.batch_shape) != batch:
            d = d.expand(batch)
        full_shape = target
    infer = {}
    if observed is not None:
        obs_shape = _shape_of(observed)
        try:
            joint = np.broadcast_shapes(full_shape, obs_shape)
        except ValueError:
            raise ModelError(
                f"site '{name}': the parameters' shape {full_shape} does not broadcast with the "
                f"observed shape {obs_shape}; reshape the parameters or the observed values so "
                f"that they match") from None
        if joint != obs_shape and not _enumerating():  # (enumerated values add dimensions on the left)
            raise ModelError(
                f"site '{name}': the parameters' shape {full_shape} and the observed shape "
                f"{obs_shape} broadcast to {joint}, which is larger than the data: this usually "
                f"means a column vector met a row vector; reshape so the shapes match")
        if _is_concrete(observed):
            refuse_nonfinite(observed, f"site '{name}'")
        n_event = len(d.event_shape)
        batch = obs_shape[: len(obs_shape) - n_event] if n_event else obs_shape
        if tuple(d.batch_shape) != batch and not _enumerating():
            d = d.expand(batch)
        if total_size is not None:
            try:
                infer["total_size"] = check_total_size(total_size, len(obs_shape))
            except ValueError as e:
                raise ModelError(f"site '{name}': {e}") from None
    elif total_size is not None:
        raise ModelError(f"site '{name}': total_size= only applies to observed sites")
    return numpyro.sample(name, d, obs=observed, infer=infer or None)


def _make(name: str, cls: Callable[..., dist.Distribution], params: tuple, kwargs: dict) -> jnp.ndarray:
    """Build ``cls(*params)`` with argument validation, naming the site on failure."""
    shape = kwargs.pop("shape", None)
    observed = kwargs.pop("observed", None)
    total_size = kwargs.pop("total_size", None)
    if kwargs:
        raise ModelError(f"site '{name}': unexpected argument(s) {sorted(kwargs)}")
    concrete = all(_is_concrete(p) for p in params)
    try:
        d = cls(*params, validate_args=concrete)
    except ValueError as e:
        shapes = [_shape_of(p) for p in params]
        try:
            np.broadcast_shapes(*shapes)
        except ValueError:
            raise ModelError(
                f"site '{name}': the parameters of {cls.__name__} do not broadcast together "
                f"(shapes {shapes}); make their shapes compatible") from None
        raise ModelError(_bad_parameter(name, cls, params) or (
            f"site '{name}': a parameter of {cls.__name__} is outside its support ({e}); "
            f"check the values passed to '{name}'")) from None
    return Site(name, d, shape=shape, observed=observed, total_size=total_size)


def _bad_parameter(name: str, cls: Any, params: tuple) -> str | None:
    """Which parameter of a NumPyro distribution class is outside its allowed range, by its own name."""
    if not isinstance(cls, type):
        return None
    try:
        names = [p for p in inspect.signature(cls).parameters if p != "validate_args"]
    except (TypeError, ValueError):
        return None
    for arg, value in zip(names, params):
        constraint = cls.arg_constraints.get(arg)
        if constraint is None or not _is_concrete(value):
            continue
        with jax.ensure_compile_time_eval():  # concrete values: evaluate now, even inside a trace
            ok = np.asarray(constraint(jnp.asarray(value, dtype=jnp.result_type(float))))
        if not np.all(ok):
            shown = np.asarray(value)
            shown = shown.item() if shown.size == 1 else f"an array with {int((~ok).sum())} bad value(s)"
            return (f"site '{name}': {cls.__name__}'s {arg} must be {_describe(constraint)}, got "
                    f"{shown}; check the values passed to '{name}'")
    return None


def _describe(constraint: Any) -> str:
    text = type(constraint).__name__.lstrip("_").replace("Constraint", "")
    words = {"Positive": "positive", "GreaterThan": "greater than its lower bound",
             "Interval": "inside its interval", "UnitInterval": "in [0, 1]", "Real": "a real number",
             "Simplex": "on the simplex (non-negative, summing to 1)",
             "NonNegativeInteger": "a non-negative integer", "PositiveDefinite": "positive definite"}
    return words.get(text, f"in {text.lower() or constraint}")


def Normal(name: str, mu: Any = 0.0, sigma: Any = 1.0, **kw: Any) -> jnp.ndarray:
    """Normal(mu, sigma) site. Example: ``vi.Normal("mu", 0, 10)``."""
    return _make(name, dist.Normal, (mu, sigma), kw)


def HalfNormal(name: str, sigma: Any = 1.0, **kw: Any) -> jnp.ndarray:
    """Half-normal site with scale ``sigma``. Example: ``vi.HalfNormal("sd", 1, shape=3)``."""
    return _make(name, dist.HalfNormal, (sigma,), kw)


def Uniform(name: str, lower: Any = 0.0, upper: Any = 1.0, **kw: Any) -> jnp.ndarray:
    """Uniform(lower, upper) site. Example: ``vi.Uniform("eps", 0, 100)``."""
    return _make(name, dist.Uniform, (lower, upper), kw)


def _flat(*, validate_args: bool | None = None) -> dist.Distribution:
    return dist.ImproperUniform(dist.constraints.real, (), ())


def _half_flat(*, validate_args: bool | None = None) -> dist.Distribution:
    return dist.ImproperUniform(dist.constraints.positive, (), ())


def Flat(name: str, **kw: Any) -> jnp.ndarray:
    """Improper flat prior on the real line. Example: ``vi.Flat("b", shape=2)``."""
    return _make(name, _flat, (), kw)


def HalfFlat(name: str, **kw: Any) -> jnp.ndarray:
    """Improper flat prior on the positive reals. Example: ``vi.HalfFlat("s")``."""
    return _make(name, _half_flat, (), kw)


def Beta(name: str, alpha: Any, beta: Any, **kw: Any) -> jnp.ndarray:
    """Beta(alpha, beta) site. Example: ``vi.Beta("p", 1, 1)``."""
    return _make(name, dist.Beta, (alpha, beta), kw)


def Gamma(name: str, alpha: Any, beta: Any, **kw: Any) -> jnp.ndarray:
    """Gamma site with shape ``alpha`` and rate ``beta``. Example: ``vi.Gamma("tau", 2, 1)``."""
    return _make(name, dist.Gamma, (alpha, beta), kw)


def Exponential(name: str, lam: Any = 1.0, **kw: Any) -> jnp.ndarray:
    """Exponential site with rate ``lam``. Example: ``vi.Exponential("s", 1.0)``."""
    return _make(name, dist.Exponential, (lam,), kw)


def Cauchy(name: str, alpha: Any = 0.0, beta: Any = 1.0, **kw: Any) -> jnp.ndarray:
    """Cauchy site with location ``alpha`` and scale ``beta``. Example: ``vi.Cauchy("c", 0, 1)``."""
    return _make(name, dist.Cauchy, (alpha, beta), kw)


def HalfCauchy(name: str, beta: Any = 1.0, **kw: Any) -> jnp.ndarray:
    """Half-Cauchy site with scale ``beta``. Example: ``vi.HalfCauchy("tau", 5)``."""
    return _make(name, dist.HalfCauchy, (beta,), kw)


def StudentT(name: str, nu: Any, mu: Any = 0.0, sigma: Any = 1.0, **kw: Any) -> jnp.ndarray:
    """Student-t site. Example: ``vi.StudentT("t", 3, 0, 1)``."""
    return _make(name, dist.StudentT, (nu, mu, sigma), kw)


def LogNormal(name: str, mu: Any = 0.0, sigma: Any = 1.0, **kw: Any) -> jnp.ndarray:
    """Log-normal site. Example: ``vi.LogNormal("x", 0, 1)``."""
    return _make(name, dist.LogNormal, (mu, sigma), kw)


def Laplace(name: str, mu: Any = 0.0, b: Any = 1.0, **kw: Any) -> jnp.ndarray:
    """Laplace site with location ``mu`` and scale ``b``. Example: ``vi.Laplace("w", 0, 1)``."""
    return _make(name, dist.Laplace, (mu, b), kw)


def _probs_or_logits(name: str, p: Any, logit_p: Any, kw: dict) -> tuple[Any, Any]:
    """``(p, logit_p)`` with NumPyro's spellings ``probs=`` / ``logits=`` taken out of ``kw``."""
    probs, logits = kw.pop("probs", None), kw.pop("logits", None)
    given = [f"{k}=" for k, v in (("p", p), ("probs", probs), ("logit_p", logit_p), ("logits", logits))
             if v is not None]
    if len(given) != 1:
        raise ModelError(f"site '{name}': give exactly one of p= (or probs=) and logit_p= (or logits=); "
                         f"got {', '.join(given) if given else 'neither'}")
    return (p if probs is None else probs), (logit_p if logits is None else logits)


def Bernoulli(name: str, p: Any = None, *, logit_p: Any = None, **kw: Any) -> jnp.ndarray:
    """Bernoulli site with probability ``p`` or log-odds ``logit_p`` (NumPyro's ``probs=`` and
    ``logits=`` are accepted too).

    Example: ``vi.Bernoulli("y", logit_p=eta, observed=y)``.
    """
    p, logit_p = _probs_or_logits(name, p, logit_p, kw)
    if p is not None:
        return _make(name, lambda p, validate_args=None: dist.Bernoulli(probs=p, validate_args=validate_args), (p,), kw)
    return _make(name, lambda lg, validate_args=None: dist.Bernoulli(logits=lg, validate_args=validate_args), (logit_p,), kw)


def Binomial(name: str, n: Any, p: Any, **kw: Any) -> jnp.ndarray:
    """Binomial(n, p) site. Example: ``vi.Binomial("k", 10, p, observed=k)``."""
    return _make(name, lambda n, p, validate_args=None: dist.Binomial(n, probs=p, validate_args=validate_args), (n, p), kw)


def Poisson(name: str, mu: Any, **kw: Any) -> jnp.ndarray:
    """Poisson site with rate ``mu``. Example: ``vi.Poisson("c", jnp.exp(eta), observed=c)``."""
    return _make(name, dist.Poisson, (mu,), kw)


def Categorical(name: str, p: Any = None, *, logit_p: Any = None, **kw: Any) -> jnp.ndarray:
    """Categorical site over the last axis of ``p`` (or ``logit_p``).

    Example: ``vi.Categorical("y", logit_p=scores, observed=labels)`` (NumPyro's ``probs=`` and
    ``logits=`` are accepted too).
    """
    p, logit_p = _probs_or_logits(name, p, logit_p, kw)
    if p is not None:
        return _make(name, lambda p, validate_args=None: dist.Categorical(probs=p, validate_args=validate_args), (p,), kw)
    return _make(name, lambda lg, validate_args=None: dist.Categorical(logits=lg, validate_args=validate_args), (logit_p,), kw)


def Dirichlet(name: str, a: Any, **kw: Any) -> jnp.ndarray:
    """Dirichlet site with concentration ``a`` (last axis is the simplex).

    Example: ``vi.Dirichlet("w", jnp.ones(3))``.
    """
    return _make(name, dist.Dirichlet, (jnp.asarray(a, dtype=jnp.result_type(float)),), kw)


def MvNormal(name: str, mu: Any, cov: Any = None, *, chol: Any = None, tau: Any = None,
             **kw: Any) -> jnp.ndarray:
    """Multivariate normal with one of ``cov``, ``chol`` (lower Cholesky factor) or ``tau``.

    Example: ``vi.MvNormal("x", jnp.zeros(2), cov=jnp.eye(2))``.
    """
    given = [k for k, v in (("cov", cov), ("chol", chol), ("tau", tau)) if v is not None]
    if len(given) != 1:
        raise ModelError(f"site '{name}': give exactly one of cov=, chol= or tau= (got {given or 'none'})")

    def build(mu: Any, m: Any, validate_args: bool | None = None) -> dist.Distribution:
        key = {"cov": "covariance_matrix", "chol": "scale_tril", "tau": "precision_matrix"}[given[0]]
        return dist.MultivariateNormal(mu, validate_args=validate_args, **{key: m})

    build.__name__ = "MvNormal"
    return _make(name, build, (mu, cov if cov is not None else chol if chol is not None else tau), kw)


def NormalMixture(name: str, w: Any, mu: Any, sigma: Any, **kw: Any) -> jnp.ndarray:
    """Mixture of normals with weights ``w`` over the last axis (labels marginalised).

    Example: ``vi.NormalMixture("x", jnp.array([0.2, 0.8]), jnp.array([-0.3, 0.5]), 0.1)``.
    """
    def build(w: Any, mu: Any, sigma: Any, validate_args: bool | None = None) -> dist.Distribution:
        mu, sigma = jnp.broadcast_arrays(jnp.asarray(mu, float), jnp.asarray(sigma, float))
        return dist.MixtureSameFamily(dist.Categorical(probs=w, validate_args=validate_args),
                                      dist.Normal(mu, sigma, validate_args=validate_args))

    build.__name__ = "NormalMixture"
    return _make(name, build, (w, mu, sigma), kw)


def Deterministic(name: str, value: Any) -> jnp.ndarray:
    """Record a function of other variables; it appears in draws and summaries.

    Example: ``vi.Deterministic("x2", x ** 2)``.
    """
    return numpyro.deterministic(name, value)


def Potential(name: str, value: Any) -> None:
    """Add a custom log-density term (the role of PyMC's Potential/DensityDist).

    Example: ``vi.Potential("lik", jax.scipy.special.logsumexp(logps, axis=-1).sum())``.
    """
    numpyro.factor(name, value)
