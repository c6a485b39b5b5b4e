"""``LogDensity``: a model plus data as a log density on a flat unconstrained vector.

It gives every algorithm what it needs: the log joint in the flat unconstrained space
(Jacobians included, minibatch scaling applied), the map back to named constrained values
(deterministics included), the flat layout, and a valid initial point. It is built on NumPyro's
own utilities (``numpyro.infer.util``, ``numpyro.handlers``).

Imports: numpyro, jax, :mod:`variational.errors`, :mod:`.handlers`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
import numpyro
from numpyro import handlers
from numpyro.distributions.transforms import IdentityTransform, biject_to
from numpyro.infer.util import compute_log_probs, constrain_fn, potential_energy
from numpyro.infer.initialization import init_to_uniform

from ..errors import ModelError
from .handlers import (
    RNG_KEY, ScaleObserved, SiteLayout, SiteRecorder, describe_support, init_start_or_mean,
    value_without_sampler,
)

__all__ = ["LogDensity", "JACOBIAN"]

#: name of the term holding a latent site's log-Jacobian in :meth:`LogDensity.log_terms`
JACOBIAN = "_{}_log_det"


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _constrained_value(site: dict, z: Mapping[str, jax.Array]) -> Any:
    """Substitute a latent site's value from its unconstrained ``z``; record the log-Jacobian."""
    name = site["name"]
    if site["type"] != "sample" or site["is_observed"] or name not in z:
        return None
    t = biject_to(site["fn"].support)
    value = t(z[name])
    if not isinstance(t, IdentityTransform):
        log_det = t.log_abs_det_jacobian(z[name], value)
        extra = jnp.ndim(log_det) - jnp.ndim(value) + len(site["fn"].event_shape)
        numpyro.factor(JACOBIAN.format(name), jnp.sum(log_det, axis=tuple(range(-extra, 0))) if extra > 0 else log_det)
    return value


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
        Factor applied to the log-likelihood of observed sites (minibatch N/B scaling). Without
        it, observed sites declared with ``total_size=`` are scaled as they say.
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
        # always wrapped: without obs_scale, sites declared with total_size= are still scaled
        return ScaleObserved(model, self.obs_scale)

    def _trace(self, key: jax.Array, data: dict) -> tuple[dict, dict[str, str]]:
        """Trace the model abstractly (shapes and supports only, nothing is computed).

        Returns the trace and, for observed sites whose value is a data column, the column.
        """
        rec = SiteRecorder()
        box: list = []

        def run(key: jax.Array, data: dict) -> int:
            seeded = handlers.substitute(handlers.seed(self.model, key), substitute_fn=value_without_sampler)
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

        median = jax.jit(lambda k, d: point(k, d, functools.partial(init_start_or_mean, values=dict(start))))
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

    def log_terms(self, z_flat: jax.Array, batch: Mapping[str, Any] | None = None) -> tuple[dict[str, jax.Array], dict]:
        """The log joint at ``z_flat`` site by site: ``({site: log density}, trace)``.

        The terms sum to :meth:`logp`. Observed sites (and ``Potential`` terms) carry their
        scaling; each latent site with a constrained support adds a term named
        ``JACOBIAN.format(name)`` (its log-Jacobian, counted with the prior). The trace holds each
        latent site's distribution given the values of the sites before it.
        """
        kwargs = {**self.model_kwargs, **(batch or {})}
        key = kwargs.pop(RNG_KEY, None)
        model = self._scaled if key is None else handlers.seed(self._scaled, key)
        z = self._unravel(z_flat)
        model = handlers.substitute(model, substitute_fn=lambda site: _constrained_value(site, z))
        return compute_log_probs(model, (), kwargs, {})

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
