"""``LogDensity``: a model plus data as a log density on a flat unconstrained vector.

It gives every algorithm what it needs: the log joint in the flat unconstrained space
(Jacobians included, minibatch scaling applied), the map back to named constrained values
(deterministics included), the flat layout, and a valid initial point. It is built on NumPyro's
own utilities (``numpyro.infer.util``, ``numpyro.handlers``).

Imports: numpyro, jax, :mod:`variational.errors`, :mod:`.handlers`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import constrain_fn, potential_energy
from numpyro.infer.initialization import init_to_uniform

from ..compilation import caching, compiled, fingerprint, signature
from ..errors import ModelError
from .handlers import (
    RNG_KEY, ScaleObserved, SiteLayout, SiteRecorder, describe_support, init_start_or_mean,
)

__all__ = ["LogDensity"]


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _is_latent(site: dict) -> bool:
    return (site["type"] == "sample" and not site["is_observed"]
            and not (site.get("infer") or {}).get("is_auxiliary"))


def _refuse_discrete(trace: dict) -> None:
    for n, s in trace.items():
        fn = s.get("fn")
        if _is_latent(s) and (getattr(fn, "is_discrete", False) or getattr(fn.support, "is_discrete", False)):
            raise ModelError(
                f"site '{n}' is a discrete latent variable ({type(fn).__name__}); "
                f"variational inference here needs continuous latents: marginalise it "
                f"(sum it out with logsumexp, as the Gaussian-mixture example does for "
                f"its component labels) or pass its values as observed=")


class _Traced(NamedTuple):
    """A traced program: its closed jaxpr and the shapes of its outputs."""

    jaxpr: Any
    out_shape: Any


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
        with caching():
            self._discover(jax.random.PRNGKey(seed), data, start or {})

    def _discover(self, key: jax.Array, data: dict, start: Mapping[str, Any]) -> None:
        """One trace of the model: its sites, their supports and shapes, and the initial point."""
        self._scaled = self._wrap(self.model)
        self._keys: dict[Any, tuple] = {}
        data = {k: jnp.asarray(v) for k, v in data.items()}
        try:
            trace, data_of_site, init_jaxpr = self._trace(key, data, start)
        except ModelError:
            if start:  # a start value outside its support fails in the trace: say which one
                self.supports = {n: s["fn"].support for n, s in self._trace(key, data, {})[0].items()
                                 if _is_latent(s)}
                self._check_start(start)
            raise
        self.trace_sites = {k: v for k, v in trace.items()}
        latent = {n: s for n, s in trace.items() if _is_latent(s)}
        self.observed_names = [n for n, s in trace.items() if s["type"] == "sample" and s["is_observed"]]
        self._check_observed(trace, data, data_of_site)
        self.deterministic_names = [n for n, s in trace.items() if s["type"] == "deterministic"]
        # plates with subsample_size draw their indices from a key: logp then needs batch[RNG_KEY]
        self.needs_key = any(s["type"] == "plate" and s["args"][1] is not None
                             and s["args"][1] < s["args"][0] for s in trace.values())
        if not latent:
            raise ModelError("the model has no latent (unobserved) random variables to infer")

        self.supports = {n: latent[n]["fn"].support for n in latent}
        self.shapes = {n: tuple(np.shape(latent[n]["value"])) for n in latent}
        self._check_start(start)
        unconstrained = init_jaxpr.out_shape
        box: list = []   # the flat layout, found abstractly (nothing is computed)
        flat = jax.eval_shape(lambda z: box.append(ravel_pytree(z)[1]) or ravel_pytree(z)[0], unconstrained)
        self._unravel = box[0]
        self.dim = int(flat.shape[0])
        self.dtype = flat.dtype
        # the layout of the flat vector (ravel_pytree orders dict keys by sorted name)
        layout, offset = [], 0
        for n in sorted(unconstrained):
            size = int(np.prod(unconstrained[n].shape, dtype=int))
            layout.append(SiteLayout(n, self.shapes[n], tuple(unconstrained[n].shape), offset, size))
            offset += size
        self.layout = layout
        self.names = [s.name for s in layout]
        self.init = self._initial_point(key, data, start, init_jaxpr)

    # -- construction helpers ----------------------------------------------------------------
    def _wrap(self, model: Callable) -> Callable:
        if self.obs_scale is None:
            return model
        return ScaleObserved(model, self.obs_scale)

    def _trace(self, key: jax.Array, data: dict, start: Mapping[str, Any]) -> tuple[dict, dict[str, str], Any]:
        """Trace the model abstractly: its sites, and the initial point as a program.

        The sites take their initial values (start values, else the prior mean, see
        :func:`~variational.model.handlers.init_start_or_mean`); nothing is computed here. Returns
        the trace, the data column of each observed site whose value is one, and the traced
        program ``(key, data) -> unconstrained initial values`` (a jaxpr and its output shapes).
        """
        rec = SiteRecorder()
        box: list = []
        strategy = functools.partial(init_start_or_mean, values=dict(start))

        def run(key: jax.Array, data: dict) -> dict:
            seeded = handlers.substitute(handlers.seed(self.model, key), substitute_fn=strategy)
            tr = handlers.trace(seeded).get_trace(**self.model_kwargs, **data)
            ids = {id(v): k for k, v in data.items()}
            box.append((tr, {n: ids[id(s["value"])] for n, s in tr.items()
                              if s["type"] == "sample" and s.get("is_observed") and id(s["value"]) in ids}))
            _refuse_discrete(tr)
            return {n: biject_to(s["fn"].support).inv(s["value"]) for n, s in tr.items() if _is_latent(s)}

        try:
            with rec:
                closed, shapes = jax.make_jaxpr(run, return_shape=True)(key, data)
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
        return box[0][0], box[0][1], _Traced(closed, shapes)

    def _check_observed(self, trace: dict, data: dict, data_of_site: dict) -> None:
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

    def _initial_point(self, key: jax.Array, data: dict, start: Mapping[str, Any], traced: "_Traced") -> jax.Array:
        """A valid initial point (flat): start values, else prior means, else random points.

        One compiled call evaluates the initial values found by the trace and checks that the log
        density and its gradient are finite there; it is compiled once per model program.
        """
        batch = {**data, RNG_KEY: key} if self.needs_key else data

        def first(key: jax.Array, data: dict) -> tuple[jax.Array, jax.Array]:
            leaves = jax.core.eval_jaxpr(traced.jaxpr.jaxpr, traced.jaxpr.consts, *jax.tree_util.tree_leaves((key, data)))
            flat = ravel_pytree(jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(traced.out_shape), leaves))[0]
            return flat, self._finite_at(flat, {**data, RNG_KEY: key} if self.needs_key else data)

        program = compiled(("initial point", fingerprint(traced.jaxpr), self.key("logp", batch),
                            signature((key, data))), lambda: jax.jit(first).lower(key, data))
        flat, ok = program(key, data)
        if not bool(ok) and not start:
            latent = list(self.supports)

            def point(key: jax.Array, data: dict) -> tuple[jax.Array, jax.Array]:
                model = handlers.substitute(handlers.seed(self._scaled, key), substitute_fn=init_to_uniform(radius=2))
                tr = handlers.trace(model).get_trace(**self.model_kwargs, **data)
                flat = self.ravel({n: biject_to(tr[n]["fn"].support).inv(tr[n]["value"]) for n in latent})
                return flat, self._finite_at(flat, {**data, RNG_KEY: key} if self.needs_key else data)

            uniform = jax.jit(point)
            for i in range(20):
                flat, ok = uniform(jax.random.fold_in(key, i), data)
                if bool(ok):
                    break
        if not bool(ok):
            raise ModelError(self._explain_invalid_init({**self.model_kwargs, **data}, self.unravel(flat)))
        return flat

    def _finite_at(self, flat: jax.Array, batch: dict) -> jax.Array:
        lp, grad = jax.value_and_grad(self.logp)(flat, batch)
        return jnp.isfinite(lp) & jnp.all(jnp.isfinite(grad))

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

    def log_joint(self, z_flat: jax.Array, batch: Mapping[str, Any] | None = None) -> jax.Array:
        """Log joint density at ``z_flat`` on the rows of ``batch`` as given: no minibatch scaling."""
        kwargs = {**self.model_kwargs, **(batch or {})}
        key = kwargs.pop(RNG_KEY, None)
        model = self.model if key is None else handlers.seed(self.model, key)
        return -potential_energy(model, (), kwargs, self._unravel(z_flat))

    def key(self, kind: str = "logp", batch: Mapping[str, Any] | None = None) -> tuple:
        """A key of the program ``kind`` (``"logp"``, ``"log_joint"`` or ``"constrain"``) on
        batches shaped like ``batch``: equal for two LogDensity objects only when the program is
        the same (see :func:`variational.compilation.fingerprint`). Compiled functions built on
        it are shared between fits; the model is traced once per kind and batch shape.

        Examples
        --------
        >>> import jax.numpy as jnp
        >>> import variational as vi
        >>> def model(y):
        ...     vi.Normal("y", vi.Normal("mu", 0, 10), 1, observed=y)
        >>> a = vi.LogDensity(model, {"y": jnp.ones(5)})
        >>> b = vi.LogDensity(model, {"y": jnp.zeros(5)})   # other values, same program
        >>> a.key("logp", {"y": jnp.ones(5)}) == b.key("logp", {"y": jnp.zeros(5)})
        True
        """
        batch = dict(batch or {})
        if kind == "log_joint" and self.obs_scale is None:
            return ("log_joint", self.key("logp", batch)[1])   # the same program
        sig = (kind, signature(batch))
        if sig not in self._keys:
            fn = {"logp": self.logp, "log_joint": self.log_joint, "constrain": self.constrain}[kind]
            z = jax.ShapeDtypeStruct((self.dim,), self.dtype)
            closed, out = jax.make_jaxpr(fn, return_shape=True)(z, batch)
            # the output's structure too: constrain's names are not in its equations
            self._keys[sig] = (kind, fingerprint(closed), str(jax.tree_util.tree_structure(out)))
        return self._keys[sig]

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
