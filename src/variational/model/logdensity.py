"""``LogDensity``: a model plus data as a log density on a flat unconstrained vector.

It gives every algorithm what it needs: the log joint in the flat unconstrained space
(Jacobians included, minibatch scaling applied), the map back to named constrained values
(deterministics included), the flat layout, and a valid initial point. It is built on NumPyro's
own utilities (``numpyro.infer.util``, ``numpyro.handlers``).

Imports: numpyro, jax, :mod:`variational.errors`, :mod:`.checks`, :mod:`.handlers`, :mod:`.enumerate`, :mod:`.params`, :mod:`.threads`.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import compute_log_probs, constrain_fn, potential_energy
from numpyro.infer.initialization import init_to_uniform

from ..compilation import fingerprint, key_of, ravel, run_traced, signature
from ..compilation.constants import recording
from ..errors import ModelError
from .checks import (
    DiscreteObserved, argument_hint, check_finite_observed, explain_invalid_init, refuse_delta, warn_missing_observed,
)
from .enumerate import (
    enum_log_density, enum_marginals, enumerated_sites, is_discrete, max_plate_nesting, refuse_discrete,
    sample_discrete,
)
from .threads import exclusive
from .handlers import (
    JACOBIAN, RNG_KEY, KeyUse, ScaleObserved, SiteLayout, SiteRecorder, describe_support,
    init_start_or_mean, unconstrained_value, value_without_sampler,
)
from .constants import LiftConstants, as_arguments
from .params import PARAMS, ModelParams, param_sites

__all__ = ["LogDensity", "JACOBIAN"]


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


class LogDensity:
    """A model and its data as a log density on a flat unconstrained vector.

    Discrete latent sites marked ``infer={"enumerate": "parallel"}`` are summed out of
    :meth:`logp` exactly (:attr:`enumerated`); the model's ``numpyro.param`` sites are
    :attr:`params`, substituted at ``batch[PARAMS]`` or their current values.

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
        Factor applied to the log-likelihood of observed sites (minibatch N/B scaling). Without
        it, observed sites declared with ``total_size=`` are scaled as they say.
    start : mapping, optional
        Initial values (constrained space) for some latent sites; the others start at the
        prior median.
    seed : int
        Seed of the model trace used to discover the sites.
    score_function : bool
        Accept discrete latent sites that are not enumerated: a guide draws them (their values
        are entries of the flat vector, substituted as they are); see ``docs/discrete.md``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import variational as vi
    >>> def model(y):
    ...     mu = vi.Normal("mu", 0, 10)
    ...     vi.Normal("y", mu, 1, observed=y)
    >>> ld = vi.LogDensity(model, {"y": jnp.ones(5)})
    >>> ld.dim, ld.names
    (1, ['mu'])
    >>> logp = jax.jit(ld.logp)                      # compiled once, called many times
    >>> float(logp(ld.init, {"y": jnp.ones(5)})) < 0
    True
    """

    @exclusive
    def __init__(
        self,
        model: Callable,
        data: Mapping[str, Any] | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        *,
        obs_scale: Any = None,
        start: Mapping[str, Any] | None = None,
        seed: int = 0,
        score_function: bool = False,
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
        key = key_of(seed)
        self._keys: dict[Any, tuple] = {}   # program keys (see key())
        self._model0 = LiftConstants(model)   # (its numbers are its programs' argument: .constants)
        self._scaled = self._wrap(self._model0)
        self.params = ModelParams()

        # NumPy columns are converted on the host and transferred (no operation to compile)
        data = {k: jax.device_put(np.asarray(v, jax.dtypes.canonicalize_dtype(v.dtype)))
                if isinstance(v, np.ndarray) else jnp.asarray(v) for k, v in data.items()}
        with recording() as numbers:
            trace, data_of_site = self._trace(key, data)
        #: the numbers of the model's distributions, its programs' argument (``program(..., lift=)``)
        self.lift = (tuple(numbers), as_arguments(numbers)) if numbers else None
        self.trace_sites = {k: v for k, v in trace.items()}
        latent = {n: s for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]
                  and not (s.get("infer") or {}).get("is_auxiliary")}
        refuse_delta(latent)
        warn_missing_observed(self.model, {**self.model_kwargs, **data}, latent)
        psites = param_sites(trace)
        self.enumerated = enumerated_sites(trace)
        # shape and number of values of each enumerated site
        self.enum_sizes = {n: (tuple(np.shape(trace[n]["value"])),
                               int(np.shape(trace[n]["fn"].enumerate_support(expand=False))[0]))
                           for n in self.enumerated}
        self.plate_nesting = max_plate_nesting(trace)
        latent = {n: s for n, s in latent.items() if n not in self.enumerated}
        # discrete sites a guide draws (score-function estimator): their values ride in the flat
        # vector as floats, and are substituted as they are (no transform, no Jacobian)
        self.discrete = sorted(n for n, s in latent.items() if is_discrete(s["fn"])) if score_function else []
        self._discrete_dtypes = {n: jnp.result_type(latent[n]["value"]) for n in self.discrete}
        refuse_discrete({n: s for n, s in latent.items() if n not in self.discrete})
        self.observed_names = [n for n, s in trace.items() if s["type"] == "sample" and s["is_observed"]]
        self._discrete_obs = DiscreteObserved(trace, data_of_site, self.observed_names)
        self._discrete_obs.check(data)
        check_finite_observed(trace, data, data_of_site, self.observed_names)
        self.deterministic_names = [n for n, s in trace.items() if s["type"] == "deterministic"]
        # plates with subsample_size draw their indices from a key: logp then needs batch[RNG_KEY]
        self.needs_key = any(s["type"] == "plate" and s["args"][1] is not None
                             and s["args"][1] < s["args"][0] for s in trace.values())
        if not latent and not psites and not self.enumerated:
            raise ModelError("the model has no latent (unobserved) random variables and no "
                             "parameters (numpyro.param) to infer")

        self.supports = {n: latent[n]["fn"].support for n in latent}
        self.shapes = {n: tuple(np.shape(latent[n]["value"])) for n in latent}
        self._check_start(start or {})
        z0, param_values = self._initial_point(key, data, start or {}, sorted(psites))
        self.params = ModelParams.from_trace(
            {n: {**psites[n], "value": param_values[n]} for n in psites})
        self.param_names = self.params.names
        flat, unravel = ravel(z0)   # (on the host: no operation to compile)
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

    def _wrap(self, model: Callable) -> Callable:
        # always wrapped: without obs_scale, sites declared with total_size= are still scaled
        return ScaleObserved(model, self.obs_scale)

    def check_observed(self, cols: Mapping[str, Any], where: str = "") -> None:
        """Refuse values a discrete observed site cannot take (2.5 counts, -1 events) among the
        data columns ``cols``, naming the site and column (:class:`.checks.DiscreteObserved`)."""
        self._discrete_obs.check(cols, where)

    def _trace(self, key: jax.Array, data: dict) -> tuple[dict, dict[str, str]]:
        """Trace the model abstractly (shapes and supports only, nothing is computed).

        Returns the trace and, for observed sites whose value is a data column, the column.
        """
        rec = SiteRecorder()
        box: list = []

        def run(key: jax.Array, data: dict) -> int:
            seeded = handlers.substitute(handlers.seed(self._model0, key), substitute_fn=value_without_sampler)
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
                hint = argument_hint(self.model, sorted({**self.model_kwargs, **data}))
                raise ModelError(
                    f"calling the model failed: {e}{hint}. Data columns and model_kwargs are passed "
                    f"as keyword arguments; check their names against the model's signature") from e
            raise self._raised(rec, e) from e
        except Exception as e:  # the model's own error, with the site it happened at
            raise self._raised(rec, e) from e
        return box[0]

    @staticmethod
    def _raised(rec: SiteRecorder, e: Exception) -> ModelError:
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
                                 f"support ({describe_support(self.supports[n])}); pick a value inside it")

    def _log_joint(self, model: Callable, kwargs: Mapping[str, Any], z: Mapping[str, Any]) -> jax.Array:
        """Log joint at unconstrained ``z`` (enumerated discrete sites summed out)."""
        model, z = self._with_discrete(model, z)
        if self.enumerated:
            return enum_log_density(model, kwargs, z, self.plate_nesting)
        return -potential_energy(model, (), dict(kwargs), z)

    def _to_flat(self, name: str, value: Any, support: Any) -> jax.Array:
        if name in self.discrete:
            return jnp.asarray(value, dtype=jnp.result_type(float))
        return biject_to(support).inv(value)

    def _with_discrete(self, model: Callable, z: Mapping[str, Any]) -> tuple[Callable, dict]:
        """The model with the discrete sites' values (from ``z``) substituted, and the rest of ``z``."""
        if not self.discrete:
            return model, dict(z)
        values = {n: jnp.round(z[n]).astype(self._discrete_dtypes[n]) for n in self.discrete}
        return handlers.substitute(model, data=values), {n: v for n, v in z.items() if n not in values}

    def _initial_point(self, key: jax.Array, data: dict, start: Mapping[str, Any],
                       params: list[str]) -> tuple[dict, dict]:
        """A valid initial point: start values, else prior medians, else random points.

        Returns the latent point (unconstrained) and the initial values of the model's
        parameters. Everything here is compiled (an eager trace of a large model is slow).
        """
        latent = list(self.supports)
        uses_key: list[bool] = []

        def point(key: jax.Array, data: dict, strategy: Any) -> tuple[dict, dict, jax.Array]:
            model = handlers.substitute(handlers.seed(self._scaled, key), substitute_fn=strategy)
            tr = handlers.trace(model).get_trace(**self.model_kwargs, **data)
            z = {n: self._to_flat(n, tr[n]["value"], tr[n]["fn"].support) for n in latent}
            values = {n: tr[n]["value"] for n in params}
            fixed = handlers.substitute(handlers.seed(self._scaled, key), data=values)
            with KeyUse(uses_key):
                lp, grad = jax.value_and_grad(
                    lambda z: self._log_joint(fixed, {**self.model_kwargs, **data}, z))(z)
            ok = jnp.isfinite(lp) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grad)] or [jnp.bool_(True)]))
            return z, values, ok

        rule = functools.partial(init_start_or_mean, values=dict(start))   # one call, compiled once per program
        # (its numbers stay in it: XLA folds most of it then, 0.5 s of compiling against 3 s on radon)
        z, values, ok = run_traced("initial point", lambda k, d: point(k, d, rule), key, data)
        if not bool(ok) and not start:
            uniform = jax.jit(lambda k, d: point(k, d, init_to_uniform(radius=2)))
            for i in range(20):
                z, values, ok = uniform(jax.random.fold_in(key, i), data)
                if bool(ok):
                    break
        # a model that asks for randomness when run (dropout: numpyro.prng_key()) gets a key per step
        self.needs_key = self.needs_key or any(uses_key)
        if not bool(ok):
            self.params = ModelParams.from_trace(
                {n: {"kwargs": {}, "value": values[n]} for n in params})  # (only to explain)
            raise ModelError(explain_invalid_init(self.params.substitute(handlers.seed(self.model, 0)),
                                                     {**self.model_kwargs, **data}, z))
        return {k: jnp.asarray(v) for k, v in z.items()}, values

    # -- the interface every algorithm uses ---------------------------------------------------
    def unravel(self, z_flat: jax.Array) -> dict[str, jax.Array]:
        """Flat unconstrained vector -> dict of unconstrained arrays."""
        return self._unravel(z_flat)

    def ravel(self, z: Mapping[str, Any]) -> jax.Array:
        """Dict of unconstrained arrays -> flat vector."""
        return ravel_pytree({n: jnp.asarray(z[n]) for n in self.names})[0]

    def _model_for(self, model: Callable, batch: Mapping[str, Any] | None) -> tuple[Callable, dict]:
        """``model`` with the batch's key and parameters applied, and the model's keyword arguments."""
        kwargs = {**self.model_kwargs, **(batch or {})}
        key = kwargs.pop(RNG_KEY, None)
        theta = kwargs.pop(PARAMS, None)
        if key is not None or self.needs_key:
            model = handlers.seed(model, jax.random.PRNGKey(0) if key is None else key)
        return self.params.substitute(model, theta), kwargs

    def logp(self, z_flat: jax.Array, batch: Mapping[str, Any] | None = None) -> jax.Array:
        """Log joint density at ``z_flat`` (unconstrained, Jacobians and scaling included).

        Enumerated discrete sites are summed out; the model's parameters take the values of
        ``batch[PARAMS]`` (unconstrained) when given, else those of :attr:`params`.
        """
        model, kwargs = self._model_for(self._scaled, batch)
        return self._log_joint(model, kwargs, self._unravel(z_flat))

    def log_joint(self, z_flat: jax.Array, batch: Mapping[str, Any] | None = None,
                  scale: Any = None) -> jax.Array:
        """Log joint at ``z_flat`` on ``batch`` as the model states it: without the fit's
        minibatch scaling (``scale``: a :class:`ScaleObserved` rule to apply instead)."""
        model = self._model0 if scale is None else ScaleObserved(self._model0, scale)
        model, kwargs = self._model_for(model, batch)
        return self._log_joint(model, kwargs, self._unravel(z_flat))

    def key(self, kind: str = "logp", batch: Mapping[str, Any] | None = None) -> tuple:
        """A key of the program ``kind`` (``"logp"``, ``"log_joint"``, ``"constrain"``) on batches
        shaped like ``batch``, equal only for the same program (its trace's fingerprint and output
        structure), so fits share functions compiled on it. Traced once per kind and shape."""
        batch = dict(batch or {})
        if kind == "log_joint" and self._scaled is self._model0:   # (no scaling: the same program)
            return ("log_joint", self.key("logp", batch)[1:])
        sig = (kind, signature(batch))
        if sig not in self._keys:
            fn = {"logp": self.logp, "log_joint": self.log_joint, "constrain": self.constrain}[kind]
            closed, out = jax.make_jaxpr(fn, return_shape=True)(jax.ShapeDtypeStruct((self.dim,), self.dtype), batch)
            self._keys[sig] = (kind, fingerprint(closed), str(jax.tree_util.tree_structure(out)), tuple(self.names))
        return self._keys[sig]

    def log_terms(self, z_flat: jax.Array, batch: Mapping[str, Any] | None = None) -> tuple[dict[str, jax.Array], dict]:
        """The log joint at ``z_flat`` site by site: ``({site: log density}, trace)``.

        The terms sum to :meth:`logp`. Observed sites (and ``Potential`` terms) carry their
        scaling; each latent site with a constrained support adds a term named
        ``JACOBIAN.format(name)`` (its log-Jacobian, counted with the prior). The trace holds each
        latent site's distribution given the values of the sites before it.
        """
        model, kwargs = self._model_for(self._scaled, batch)
        model, z = self._with_discrete(model, self._unravel(z_flat))
        model = handlers.substitute(model, substitute_fn=lambda site: unconstrained_value(site, z))
        return compute_log_probs(model, (), kwargs, {})

    def constrain(self, z_flat: jax.Array, batch: Mapping[str, Any] | None = None) -> dict[str, jax.Array]:
        """Named values in the model's own (constrained) space, deterministics included.

        Enumerated discrete sites are drawn from their conditional posterior given ``z_flat``
        (with the key ``batch[RNG_KEY]``, else a fixed one).
        """
        model, kwargs = self._model_for(self._model0, batch)
        model, z = self._with_discrete(model, self._unravel(z_flat))
        if not self.enumerated:
            out = constrain_fn(model, (), kwargs, z, return_deterministic=True)
            return {**out, **{n: jnp.round(v) for n, v in self._unravel(z_flat).items() if n in self.discrete}}
        values = {n: biject_to(self.supports[n])(v) for n, v in z.items()}
        key = (batch or {}).get(RNG_KEY, jax.random.PRNGKey(0))
        tr = sample_discrete(model, kwargs, values, key, self.plate_nesting)
        keep = set(self.names) | set(self.enumerated) | set(self.deterministic_names)
        return {n: s["value"] for n, s in tr.items() if n in keep}

    def discrete_probs(self, z_flat: jax.Array, batch: Mapping[str, Any] | None = None) -> dict[str, jax.Array]:
        """Exact posterior probabilities of each enumerated site's values given ``z_flat``.

        Returns ``name -> array (*site_shape, K)`` (K values of the site's support); the
        model's own scaling, not the fit's minibatch scaling, applies.
        """
        model, kwargs = self._model_for(self._model0, batch)
        return enum_marginals(model, kwargs, self._unravel(z_flat), self.plate_nesting, self.enum_sizes)

    def bind(self, theta: Mapping[str, Any]) -> "LogDensity":
        """This log density with the model's parameters fixed at ``theta`` (unconstrained).

        The copy's :meth:`logp` and :meth:`constrain` use ``theta`` by default and its
        :attr:`model` is the model with those values substituted, so functions that run the
        model (predictions, diagnostics) see the fitted parameters.
        """
        if not self.params:
            return self
        new = copy.copy(self)
        new.__dict__.pop("_compiled", None)  # (compiled functions of the unbound density)
        new._keys = {}
        new.params = self.params.with_values(theta)
        new.model = new.params.substitute(self._model0)
        return new

    def unconstrain(self, values: Mapping[str, Any]) -> jax.Array:
        """Named constrained values of the latent sites -> flat unconstrained vector."""
        z = {n: self._to_flat(n, jnp.asarray(values[n]), self.supports[n]) for n in self.names}
        return self.ravel(z)

    def __repr__(self) -> str:
        sites = ", ".join(f"{s.name}{list(s.shape)}" for s in self.layout)
        return f"LogDensity(dim={self.dim}, latent=[{sites}], observed={self.observed_names})"
