"""Model layer: PyMC-flavoured site constructors and :class:`LogDensity`.

A model is a plain Python function. Any NumPyro model works unchanged; the constructors here are
short sugar over ``numpyro.sample`` / ``numpyro.deterministic`` / ``numpyro.factor`` that also
check shapes, observed values and parameters, and name the site when something is wrong.

:class:`LogDensity` turns a model plus data into what every algorithm needs: the log joint in
the flat unconstrained space (Jacobians included), the map back to named constrained values
(deterministics included), the flat layout, and a valid initial point.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import constrain_fn, potential_energy
from numpyro.infer.initialization import init_to_median, init_to_uniform, init_to_value
from numpyro.primitives import Messenger

from .errors import ModelError

__all__ = [
    "Site", "Normal", "HalfNormal", "Uniform", "Flat", "HalfFlat", "Beta", "Gamma", "Exponential",
    "Cauchy", "HalfCauchy", "StudentT", "LogNormal", "Laplace", "Bernoulli", "Binomial",
    "Poisson", "Categorical", "Dirichlet", "MvNormal", "NormalMixture", "Deterministic",
    "Potential", "LogDensity", "SiteLayout",
]


# --------------------------------------------------------------------------------------------
# site constructors
# --------------------------------------------------------------------------------------------

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
    total_size: int | None = None,
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
    total_size : int, optional
        Number of rows in the full dataset when ``observed`` holds a minibatch; the site's
        log-likelihood is then scaled by ``total_size / len(observed)``.

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
    >>> fit = vi.fit(model, steps=200, progress=False)
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
        if joint != obs_shape:
            raise ModelError(
                f"site '{name}': the parameters' shape {full_shape} and the observed shape "
                f"{obs_shape} broadcast to {joint}, which is larger than the data: this usually "
                f"means a column vector met a row vector; reshape so the shapes match")
        if _is_concrete(observed):
            obs = np.asarray(observed)
            if obs.dtype.kind in "fc" and not np.all(np.isfinite(obs)):
                bad = np.argwhere(~np.isfinite(obs))[:3].tolist()
                raise ModelError(
                    f"site '{name}': observed values contain NaN or inf (first at index "
                    f"{bad}); drop or impute those rows before fitting")
        n_event = len(d.event_shape)
        batch = obs_shape[: len(obs_shape) - n_event] if n_event else obs_shape
        if tuple(d.batch_shape) != batch:
            d = d.expand(batch)
        if total_size is not None:
            infer["total_size"] = int(total_size)
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
        raise ModelError(
            f"site '{name}': a parameter of {cls.__name__} is outside its support ({e}); "
            f"check the values passed to '{name}'") from None
    return Site(name, d, shape=shape, observed=observed, total_size=total_size)


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


def Bernoulli(name: str, p: Any = None, *, logit_p: Any = None, **kw: Any) -> jnp.ndarray:
    """Bernoulli site with probability ``p`` or ``logit_p``. Observed use only for latents.

    Example: ``vi.Bernoulli("y", logit_p=eta, observed=y)``.
    """
    if (p is None) == (logit_p is None):
        raise ModelError(f"site '{name}': give exactly one of p= or logit_p=")
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

    Example: ``vi.Categorical("y", logit_p=scores, observed=labels)``.
    """
    if (p is None) == (logit_p is None):
        raise ModelError(f"site '{name}': give exactly one of p= or logit_p=")
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


# --------------------------------------------------------------------------------------------
# LogDensity
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SiteLayout:
    """Where one latent site lives in the flat unconstrained vector."""

    name: str
    shape: tuple[int, ...]                # constrained shape
    unconstrained_shape: tuple[int, ...]  # shape in the unconstrained space
    offset: int
    size: int


class _SiteRecorder(Messenger):
    """Remembers the name of the last site the model reached (to name it in errors)."""

    def __init__(self, fn: Callable | None = None) -> None:
        self.last: str | None = None
        self.names: list[str] = []
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg.get("name"):
            self.last = msg["name"]
            self.names.append(msg["name"])


class _ScaleObserved(Messenger):
    """Multiply the log-likelihood of observed sites by a factor (minibatch N/B scaling).

    ``scale`` is either a number (every observed site), a callable ``msg -> factor or None``,
    or a mapping ``site name -> factor`` (a rule computed once for the model, see
    :mod:`variational.minibatch`; it takes precedence over ``total_size``).
    Otherwise sites declared with ``total_size=`` are scaled by ``total_size / rows``.
    Latent sites (priors) are never scaled.
    """

    def __init__(self, fn: Callable | None, scale: Any) -> None:
        self.scale = scale
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "sample" or not msg.get("is_observed"):
            return
        infer = msg.get("infer") or {}
        factor = None
        if isinstance(self.scale, Mapping):
            factor = self.scale.get(msg["name"])
        elif "total_size" in infer:
            rows = jnp.shape(msg["value"])[0] if jnp.ndim(msg["value"]) else 1
            factor = infer["total_size"] / rows
        elif callable(self.scale):
            factor = self.scale(msg)
        elif self.scale is not None:
            factor = self.scale
        if factor is not None and factor != 1:
            msg["scale"] = factor if msg.get("scale") is None else msg["scale"] * factor


#: Reserved batch entry: a PRNG key that seeds the model (for ``numpyro.plate(subsample_size=)``).
RNG_KEY = "_rng_key"


def _init_start_or_median(site: dict | None = None, values: Mapping[str, Any] = {}) -> Any:
    """Init strategy: a site with a start value takes it, the others start at the prior mean.

    The mean is deterministic (no draws: the same initial point whatever the seed), which a
    median of a few prior draws is not: for a wide prior such as Normal(0, 100) that median
    can land 70 units from the centre. Where the mean is undefined or infinite (Cauchy,
    improper priors) the median of prior draws is used.
    """
    if site is None:
        return functools.partial(_init_start_or_median, values=values)
    if site["name"] in values:
        return init_to_value(site, values=values)
    if site["type"] != "sample" or site.get("is_observed") or site["fn"].support.is_discrete:
        return init_to_median(site, num_samples=15)
    try:
        mean = 1.0 * site["fn"].mean
    except (NotImplementedError, ValueError):
        return init_to_median(site, num_samples=15)
    sample_shape = site["kwargs"].get("sample_shape")
    if sample_shape:
        mean = jnp.broadcast_to(mean, tuple(sample_shape) + jnp.shape(mean))
    median = init_to_median(site, num_samples=15)
    return jnp.where(jnp.isfinite(mean), mean, median)


def _describe_support(support: Any) -> str:
    return type(support).__name__.lstrip("_").replace("Constraint", "").lower() or str(support)


def _value_without_sampler(site: dict) -> Any:
    """A point in the support of a latent site whose distribution cannot be sampled.

    Improper priors (``vi.Flat``, ``vi.HalfFlat``, NumPyro's ``ImproperUniform``) have no
    sampler; tracing the model needs a value of the right shape, which ``init_to_uniform`` gives.
    """
    if site["type"] != "sample" or site["is_observed"] or site.get("value") is not None:
        return None
    try:
        jax.eval_shape(lambda k: site["fn"](rng_key=k, sample_shape=site["kwargs"].get("sample_shape", ())),
                       site["kwargs"]["rng_key"])
    except NotImplementedError:
        return init_to_uniform(site)
    return None


class LogDensity:
    """A model and its data as a log density on a flat unconstrained vector.

    Parameters
    ----------
    model : callable
        A model function (NumPyro primitives or ``variational`` constructors).
    data : mapping, optional
        Named columns passed to the model as keyword arguments. Used here to trace the model
        (shapes, supports); :meth:`logp` takes a batch with the same names.
    model_kwargs : mapping, optional
        Other keyword arguments of the model (not data columns).
    obs_scale : float or callable, optional
        Factor applied to the log-likelihood of observed sites (minibatch N/B scaling).
    start : mapping, optional
        Initial values (constrained space) for some latent sites; the others start at the
        prior median.
    seed : int
        Seed of the model trace used to discover the sites.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import variational as vi
    >>> def model(y):
    ...     mu = vi.Normal("mu", 0, 10)
    ...     vi.Normal("y", mu, 1, observed=y)
    >>> ld = vi.LogDensity(model, {"y": jnp.ones(5)})
    >>> ld.dim, ld.names
    (1, ['mu'])
    >>> float(ld.logp(ld.init, {"y": jnp.ones(5)})) < 0
    True
    """

    def __init__(
        self,
        model: Callable,
        data: Mapping[str, Any] | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        *,
        obs_scale: Any = None,
        start: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        if not callable(model):
            raise ModelError(f"the model must be a callable (a Python function), got {type(model).__name__}")
        self.model = model
        self.model_kwargs = dict(model_kwargs or {})
        self.obs_scale = obs_scale
        data = dict(data or {})
        overlap = set(data) & set(self.model_kwargs)
        if overlap:
            raise ModelError(f"argument(s) {sorted(overlap)} given both as data columns and in model_kwargs; keep one")
        kwargs = {**self.model_kwargs, **data}
        key = jax.random.PRNGKey(seed)
        self._scaled = self._wrap(model)

        data = {k: jnp.asarray(v) for k, v in data.items()}
        trace, data_of_site = self._trace(key, data)
        self.trace_sites = {k: v for k, v in trace.items()}
        latent = {n: s for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]
                  and not (s.get("infer") or {}).get("is_auxiliary")}
        for n, s in latent.items():
            fn = s["fn"]
            if getattr(fn, "is_discrete", False) or getattr(fn.support, "is_discrete", False):
                raise ModelError(
                    f"site '{n}' is a discrete latent variable ({type(fn).__name__}); "
                    f"variational inference here needs continuous latents: marginalise it "
                    f"(sum it out with logsumexp, as the Gaussian-mixture example does for "
                    f"its component labels) or pass its values as observed=")
        self.observed_names = [n for n, s in trace.items() if s["type"] == "sample" and s["is_observed"]]
        for n in self.observed_names:
            v = trace[n]["value"]
            col = data_of_site.get(n)
            if col is not None:
                v, where = data[col], f" (data column '{col}')"
            elif not _is_concrete(v):
                continue  # computed inside the model from the data; checked at the initial point
            else:
                where = ""
            a = np.asarray(v)
            if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
                bad = np.argwhere(~np.isfinite(a))[:3].tolist()
                raise ModelError(
                    f"site '{n}'{where}: observed values contain NaN or inf (first at index "
                    f"{bad}); drop or impute those rows before fitting")
        self.deterministic_names = [n for n, s in trace.items() if s["type"] == "deterministic"]
        # plates with subsample_size draw their indices from a key: logp then needs batch[RNG_KEY]
        self.needs_key = any(s["type"] == "plate" and s["args"][1] is not None
                             and s["args"][1] < s["args"][0] for s in trace.values())
        if not latent:
            raise ModelError("the model has no latent (unobserved) random variables to infer")

        self.supports = {n: latent[n]["fn"].support for n in latent}
        self.shapes = {n: tuple(np.shape(latent[n]["value"])) for n in latent}
        self._check_start(start or {})
        z0 = self._initial_point(key, data, start or {})
        flat, unravel = ravel_pytree(z0)
        self._unravel = unravel
        self.init = flat
        self.dim = int(flat.shape[0])
        self.dtype = flat.dtype
        # the layout of the flat vector (ravel_pytree orders dict keys by sorted name)
        layout, offset = [], 0
        for n in sorted(z0):
            size = int(np.size(z0[n]))
            layout.append(SiteLayout(n, self.shapes[n], tuple(np.shape(z0[n])), offset, size))
            offset += size
        self.layout = layout
        self.names = [s.name for s in layout]

    # -- construction helpers ----------------------------------------------------------------
    def _wrap(self, model: Callable) -> Callable:
        if self.obs_scale is None:
            return model
        return _ScaleObserved(model, self.obs_scale)

    def _trace(self, key: jax.Array, data: dict) -> tuple[dict, dict[str, str]]:
        """Trace the model abstractly (shapes and supports only, nothing is computed).

        Returns the trace and, for observed sites whose value is a data column, the column.
        """
        rec = _SiteRecorder()
        box: list = []

        def run(key: jax.Array, data: dict) -> int:
            seeded = handlers.substitute(handlers.seed(self.model, key), substitute_fn=_value_without_sampler)
            tr = handlers.trace(seeded).get_trace(**self.model_kwargs, **data)
            ids = {id(v): k for k, v in data.items()}
            box.append((tr, {n: ids[id(s["value"])] for n, s in tr.items()
                              if s["type"] == "sample" and s.get("is_observed") and id(s["value"]) in ids}))
            return 0

        try:
            with rec:
                jax.make_jaxpr(run)(key, data)
        except ModelError:
            raise
        except TypeError as e:
            if "argument" in str(e) and rec.last is None:
                raise ModelError(
                    f"calling the model failed: {e}. Data columns and model_kwargs are passed "
                    f"as keyword arguments; check their names against the model's signature") from e
            raise self._raised(rec, e) from e
        except Exception as e:  # the model's own error, with the site it happened at
            raise self._raised(rec, e) from e
        return box[0]

    @staticmethod
    def _raised(rec: _SiteRecorder, e: Exception) -> ModelError:
        where = f"after site '{rec.last}'" if rec.last else "before its first site"
        hint = ""
        if "Concretization" in type(e).__name__ or "Tracer" in type(e).__name__:
            hint = (" (the model is compiled, so it cannot branch in Python on data or parameter "
                    "values; use jnp.where, or pass such values through model_kwargs)")
        return ModelError(f"the model raised {type(e).__name__} {where}{hint}: {e}")

    def _check_start(self, start: Mapping[str, Any]) -> None:
        for n, v in start.items():
            if n not in self.supports:
                raise ModelError(f"start value given for '{n}', which is not a latent site of the model "
                                 f"(latent sites: {sorted(self.supports)})")
            ok = np.asarray(self.supports[n](jnp.asarray(v, dtype=jnp.result_type(float))))
            if not np.all(ok):
                raise ModelError(f"start value for '{n}' ({np.asarray(v).tolist()}) is outside its "
                                 f"support ({_describe_support(self.supports[n])}); pick a value inside it")

    def _initial_point(self, key: jax.Array, data: dict, start: Mapping[str, Any]) -> dict:
        """A valid initial point: start values, else prior medians, else random points.

        Everything here is compiled (an eager trace of a large model is slow).
        """
        latent = list(self.supports)

        def point(key: jax.Array, data: dict, strategy: Any) -> tuple[dict, jax.Array]:
            model = handlers.substitute(handlers.seed(self._scaled, key), substitute_fn=strategy)
            tr = handlers.trace(model).get_trace(**self.model_kwargs, **data)
            z = {n: biject_to(tr[n]["fn"].support).inv(tr[n]["value"]) for n in latent}
            lp, grad = jax.value_and_grad(
                lambda z: -potential_energy(handlers.seed(self._scaled, key), (),
                                            {**self.model_kwargs, **data}, z))(z)
            ok = jnp.isfinite(lp) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grad)]))
            return z, ok

        median = jax.jit(lambda k, d: point(k, d, functools.partial(_init_start_or_median, values=dict(start))))
        z, ok = median(key, data)
        if not bool(ok) and not start:
            uniform = jax.jit(lambda k, d: point(k, d, init_to_uniform(radius=2)))
            for i in range(20):
                z, ok = uniform(jax.random.fold_in(key, i), data)
                if bool(ok):
                    break
        if not bool(ok):
            raise ModelError(self._explain_invalid_init({**self.model_kwargs, **data}, z))
        return {k: jnp.asarray(v) for k, v in z.items()}

    def _explain_invalid_init(self, kwargs: dict, z: dict) -> str:
        constrained = constrain_fn(self.model, (), kwargs, z)
        tr = handlers.trace(handlers.substitute(handlers.seed(self.model, 0), constrained)).get_trace(**kwargs)
        bad = []
        for n, s in tr.items():
            if s["type"] == "sample":
                lp = s["fn"].log_prob(s["value"])
                if not np.all(np.isfinite(np.asarray(lp))):
                    kind = "observed" if s["is_observed"] else "latent"
                    bad.append(f"'{n}' ({kind})")
            elif s["type"] == "factor" or (s["type"] == "sample" and n.startswith("_")):
                pass
        if bad:
            return (f"the log density is not finite at the initial point: site(s) {', '.join(bad)} "
                    f"have log-probability -inf or NaN, i.e. a value outside the support of the "
                    f"distribution or a parameter outside its allowed range. Check the data and "
                    f"parameters of those sites")
        return ("the log density is not finite at the initial point; a Potential term or a "
                "parameter is outside its allowed range. Check the model's parameters")

    # -- the interface every algorithm uses ---------------------------------------------------
    def unravel(self, z_flat: jax.Array) -> dict[str, jax.Array]:
        """Flat unconstrained vector -> dict of unconstrained arrays."""
        return self._unravel(z_flat)

    def ravel(self, z: Mapping[str, Any]) -> jax.Array:
        """Dict of unconstrained arrays -> flat vector."""
        return ravel_pytree({n: jnp.asarray(z[n]) for n in self.names})[0]

    def logp(self, z_flat: jax.Array, batch: Mapping[str, Any] | None = None) -> jax.Array:
        """Log joint density at ``z_flat`` (unconstrained, Jacobians and scaling included)."""
        kwargs = {**self.model_kwargs, **(batch or {})}
        key = kwargs.pop(RNG_KEY, None)
        model = self._scaled if key is None else handlers.seed(self._scaled, key)
        return -potential_energy(model, (), kwargs, self._unravel(z_flat))

    def constrain(self, z_flat: jax.Array, batch: Mapping[str, Any] | None = None) -> dict[str, jax.Array]:
        """Named values in the model's own (constrained) space, deterministics included."""
        kwargs = {**self.model_kwargs, **(batch or {})}
        key = kwargs.pop(RNG_KEY, None)
        model = self.model if key is None and not self.needs_key else handlers.seed(
            self.model, jax.random.PRNGKey(0) if key is None else key)
        return constrain_fn(model, (), kwargs, self._unravel(z_flat), return_deterministic=True)

    def unconstrain(self, values: Mapping[str, Any]) -> jax.Array:
        """Named constrained values of the latent sites -> flat unconstrained vector."""
        z = {n: biject_to(self.supports[n]).inv(jnp.asarray(values[n])) for n in self.names}
        return self.ravel(z)

    def __repr__(self) -> str:
        sites = ", ".join(f"{s.name}{list(s.shape)}" for s in self.layout)
        return f"LogDensity(dim={self.dim}, latent=[{sites}], observed={self.observed_names})"
