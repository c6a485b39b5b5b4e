"""Predictions and functions of draws: NumPyro's three Predictive paths, with our names.

- posterior predictive from a fit: ``vi.predictive(model, fit, data=..., n=...)`` or
  ``fit.predict(data, n)``: latent draws from the approximation, then the model run forward;
- prior predictive: ``vi.predictive(model, data=..., n=...)`` (no fit, no draws);
- from given posterior draws: ``vi.predictive(model, posterior_samples=draws, data=...)``
  (a dict of arrays or an ``InferenceData``, for example from :func:`variational.nuts`).

Observed sites are *predicted* in every path: a small effect handler turns them into sampled
sites while keeping their distribution (hence their shape), so the training data can be passed
unchanged. On new covariates, data columns of the fit that ``data=`` does not give (typically
the observed column) are passed to the model as ``None``.

Everything is compiled (``jax.jit`` over ``jax.vmap``); data columns are traced arguments, so
a second call with new data of the same shape does not recompile.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer import Predictive
from numpyro.primitives import Messenger

from ..compilation import key_of
from .. import data as _data
from ..errors import DataError, ModelError, VariationalError, whole_number
from ..model.threads import exclusive
from .approximation import Approximation
from .draws import as_draws

__all__ = ["predictive", "predict", "sample_fn", "site_table", "latent_from_flat", "predict_from_flat",
           "observed_values"]


class _Unobserve(Messenger):
    """Turn observed sample sites into sampled ones (same distribution, hence same shape).

    ``Potential`` terms (``numpyro.factor``, auxiliary observed sites) are left alone.
    """

    def __init__(self, fn: Callable | None = None, sites: Sequence[str] | None = None) -> None:
        self.sites = None if sites is None else set(sites)
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "sample" or not msg.get("is_observed"):
            return
        if (msg.get("infer") or {}).get("is_auxiliary"):
            return
        if self.sites is not None and msg["name"] not in self.sites:
            return
        msg["is_observed"] = False
        msg["value"] = None


# --------------------------------------------------------------------------------------------
# the model's sites, discovered by an abstract trace (nothing is computed)
# --------------------------------------------------------------------------------------------

def site_table(model: Callable, data: Mapping[str, Any] | None = None,
               model_kwargs: Mapping[str, Any] | None = None) -> dict[str, dict]:
    """Name -> {"type", "shape", "plates", "batch_ndim", "event_ndim"} of every site of the model.

    The model is called with ``data`` and ``model_kwargs`` (an abstract trace: nothing is
    computed). ``type`` is ``"latent"``, ``"observed"``, ``"deterministic"`` or
    ``"potential"``; ``plates`` lists the ``numpyro.plate`` frames ``(name, dim, size)`` the
    site is in, ``batch_ndim`` and ``event_ndim`` the numbers of batch and event axes of its
    distribution (empty and 0 for deterministic sites).

    Examples
    --------
    >>> import variational as vi
    >>> def model(y=None):
    ...     mu = vi.Normal("mu", 0, 1)
    ...     vi.Deterministic("mu2", mu ** 2)
    ...     vi.Normal("y", mu, 1, observed=y)
    >>> {k: v["type"] for k, v in site_table(model).items()}
    {'mu': 'latent', 'mu2': 'deterministic', 'y': 'latent'}
    """
    arrays = {k: jnp.asarray(v) for k, v in (data or {}).items()}
    static = dict(model_kwargs or {})
    table: dict[str, dict] = {}

    def run(key: jax.Array, arrays: dict) -> int:
        tr = handlers.trace(handlers.seed(model, key)).get_trace(**static, **arrays)
        for name, s in tr.items():
            if s["type"] == "sample":
                if (s.get("infer") or {}).get("is_auxiliary"):
                    kind = "potential"
                else:
                    kind = "observed" if s["is_observed"] else "latent"
            elif s["type"] == "deterministic":
                kind = "deterministic"
            else:
                continue
            table[name] = {"type": kind, "shape": tuple(np.shape(s["value"])),
                           "plates": tuple((f.name, f.dim, f.size) for f in s.get("cond_indep_stack", ())
                                           if f.dim is not None),
                           "batch_ndim": len(getattr(s.get("fn"), "batch_shape", ())),
                           "event_ndim": len(getattr(s.get("fn"), "event_shape", ()))}
        return 0

    try:
        jax.make_jaxpr(run)(jax.random.PRNGKey(0), arrays)
    except VariationalError:
        raise
    except TypeError as e:
        raise ModelError(f"calling the model with arguments {sorted({**arrays, **static})} "
                         f"failed: {e}") from e
    return table


# --------------------------------------------------------------------------------------------
# the compiled core: latent draws -> predicted sites
# --------------------------------------------------------------------------------------------

def _compile_predictive(model: Callable, static: dict, none_cols: Sequence[str],
                        return_sites: Sequence[str] | None, num_samples: int | None = None) -> Callable:
    pred_model = _Unobserve(model)
    nones = {c: None for c in none_cols}
    sites = None if return_sites is None else list(return_sites)

    def run(key: jax.Array, latent: dict | None, arrays: dict) -> dict:
        p = Predictive(pred_model, posterior_samples=latent, num_samples=num_samples,
                       return_sites=sites, parallel=True)
        return p(key, **static, **nones, **arrays)

    return jax.jit(run)


def _explain_failure(e: Exception, given: Sequence[str], none_cols: Sequence[str]) -> DataError:
    hint = ""
    if none_cols:
        hint = (f" The fit's data column(s) {sorted(none_cols)} were not in data= and were passed "
                f"to the model as None: give them in data=, or give the model's observed "
                f"argument(s) a default of None.")
    return DataError(f"predicting with data columns {sorted(given)} failed: the model raised "
                     f"{type(e).__name__}: {e}.{hint}")


def _run_predictive(model: Callable, key: jax.Array, latent: dict | None, arrays: dict,
                    static: dict, none_cols: Sequence[str], sites: Sequence[str] | None,
                    num_samples: int | None = None, cache: dict | None = None) -> dict[str, np.ndarray]:
    sig = (tuple(sorted(none_cols)), tuple(sorted(arrays)), None if sites is None else tuple(sites), num_samples)
    fn = None if cache is None else cache.get(sig)
    if fn is None:
        fn = _compile_predictive(model, static, none_cols, sites, num_samples)
        if cache is not None:
            cache[sig] = fn
    try:
        out = fn(key, latent, arrays)
    except VariationalError:
        raise
    except Exception as e:  # the model's own error on these inputs, with the inputs named
        raise _explain_failure(e, arrays, none_cols) from e
    return {k: np.asarray(v) for k, v in out.items()}


def _prepare_data(data: Any, model_kwargs: Mapping[str, Any], train_cols: Sequence[str]) -> tuple[dict, dict, list]:
    """(traced data columns, static model kwargs, columns passed as None) for a prediction.

    Data columns are traced (new rows of the same shape do not recompile); model kwargs stay
    concrete, as in :class:`~variational.LogDensity`. A data column overrides a model kwarg of
    the same name.
    """
    cols = _data.as_columns(data)
    if cols:
        _data.num_rows(cols)
        _data.check_finite(cols)  # a NaN covariate would give NaN draws
    arrays = {k: jnp.asarray(v) for k, v in cols.items()}
    static = {k: v for k, v in model_kwargs.items() if k not in arrays}
    none_cols = [c for c in train_cols if c not in arrays and c not in static]
    return arrays, static, none_cols


# --------------------------------------------------------------------------------------------
# draws of a fit
# --------------------------------------------------------------------------------------------

def latent_from_flat(q: Approximation, z: jax.Array) -> dict[str, jax.Array]:
    """Flat unconstrained draws ``(n, D)`` -> named constrained values of the latent sites."""
    if "latent" not in q.programs:
        ld = q.logdensity

        def one(zz: jax.Array) -> dict:
            named = ld.unravel(zz)
            return {k: biject_to(ld.supports[k])(v) for k, v in named.items()}

        q.programs["latent"] = jax.jit(jax.vmap(one))
    return q.programs["latent"](z)


def predict_from_flat(q: Approximation, z: jax.Array, key: jax.Array, data: Any = None,
                      sites: Sequence[str] | None = None, latent: dict | None = None,
                      model: Callable | None = None) -> dict[str, np.ndarray]:
    """Posterior predictive draws (observed and deterministic sites) at flat draws ``z``, or at
    the named constrained draws ``latent`` of ``model`` when given (new rows of an amortised fit)."""
    latent = latent_from_flat(q, z) if latent is None else latent
    if data is None:
        arrays, static, none_cols = q.training_data(), dict(q.model_kwargs), []
    else:
        arrays, static, none_cols = _prepare_data(data, q.model_kwargs, list(q.data))
    cache = None if model is not None else q.programs.setdefault("predictive", {}).setdefault(tuple(sorted(static)), {})
    # (the model with its parameters, if any, at their fitted values; with no latent site at
    # all, n runs of the model at them)
    num = None if latent else int(z.shape[0])
    return _run_predictive(model or q.model, key, latent or None, arrays, static, none_cols, sites,
                           num_samples=num, cache=cache)


def predict(q: Approximation, key: jax.Array, data: Any = None, n: int = 1000,
            sites: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Posterior predictive draws of ``n`` draws of q from ``key``; see :meth:`variational.Fit.predict`."""
    z = q.draw(key, whole_number("n", n, 1))
    return predict_from_flat(q, z, jax.random.fold_in(key, 1), data, sites)


def sample_fn(q: Approximation, fn: Callable[[dict], Any], key: jax.Array, n: int = 1000,
              data: Any = None) -> Any:
    """Evaluate ``fn(params)`` over ``n`` draws of q from ``key``; see :meth:`variational.Fit.sample_fn`."""
    if not callable(fn):
        raise TypeError(f"fn must be a function of the named parameters, got {type(fn).__name__}")
    z = q.draw(key, whole_number("n", n, 1))
    if data is None:
        params = {k: jnp.asarray(v) for k, v in q.constrain(z).items()}
    else:
        params = {**latent_from_flat(q, z),
                  **{k: jnp.asarray(v) for k, v in predict_from_flat(q, z, jax.random.fold_in(key, 1), data).items()}}
    names = sorted(params)

    compiled = q.programs.setdefault("sample_fn", {})
    if fn not in compiled:
        if len(compiled) >= 32:  # keep the most recent functions only
            compiled.pop(next(iter(compiled)))
        compiled[fn] = jax.jit(jax.vmap(lambda p: fn(_NamedParams(p))))
    try:
        out = compiled[fn](params)
    except _MissingName as e:
        raise ModelError(f"fn asked for '{e.args[0]}', which is not a site of the model; "
                         f"available: {names}") from None
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
            jax.errors.TracerBoolConversionError) as e:
        raise ModelError(
            "fn is evaluated over all draws at once (vectorised and compiled), so it must use "
            "jax.numpy instead of numpy and cannot branch in Python on parameter values "
            f"(use jnp.where): {type(e).__name__}") from None
    return jax.tree_util.tree_map(np.asarray, out)


class _MissingName(KeyError):
    pass


class _NamedParams(dict):
    """A dict whose missing keys raise an error that names the key and the available sites."""

    def __missing__(self, key: str) -> Any:
        raise _MissingName(key)


# --------------------------------------------------------------------------------------------
# the public function
# --------------------------------------------------------------------------------------------

@exclusive
def predictive(
    model: Callable,
    fit: Any = None,
    *,
    data: Any = None,
    n: int | None = None,
    posterior_samples: Any = None,
    model_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
    sites: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Predictive draws: posterior (from a fit or given draws) or prior.

    Parameters
    ----------
    model : callable
        The model. With ``fit=``, the fit's model is used when ``model`` is None.
    fit : Fit, optional
        Posterior predictive from this approximation's draws.
    data : mapping or DataFrame, optional
        Columns passed to the model. With a fit, ``None`` means the training data; new
        covariates (for example a test set) give predictions with their number of rows, and
        training columns missing from ``data`` (the observed column) are passed as ``None``.
    n : int, optional
        Number of draws (default 1000). With ``posterior_samples``, ``n`` evenly spaced draws
        are used (default: all of them).
    posterior_samples : dict or InferenceData, optional
        Posterior draws (name -> array with the draws first, or an ``InferenceData`` whose
        chains are pooled), for example from :func:`variational.nuts`.
    model_kwargs : mapping, optional
        Other keyword arguments of the model (default: the fit's).
    seed : int, optional
        Seed; without it a fit draws afresh on each call and the other paths use seed 0.
    sites : sequence of str, optional
        Sites to return (default: observed and deterministic sites, and for the prior
        predictive also the latent sites).

    Returns
    -------
    dict
        name -> array of shape ``(n, *site_shape)``.

    Examples
    --------
    >>> import numpy as np
    >>> import variational as vi
    >>> def model(x, y=None):
    ...     b = vi.Normal("b", 0, 1)
    ...     vi.Normal("y", b * x, 0.5, observed=y)
    >>> x = np.linspace(-1, 1, 20)
    >>> prior = vi.predictive(model, data={"x": x}, n=100)
    >>> prior["y"].shape, prior["b"].shape
    ((100, 20), (100,))
    >>> fit = vi.fit(model, {"x": x, "y": 2 * x}, steps=500, learning_rate=0.05, progress=False)
    >>> vi.predictive(model, fit, data={"x": np.zeros(3)}, n=50)["y"].shape
    (50, 3)
    """
    if fit is not None:
        if posterior_samples is not None:
            raise ValueError("give either fit= or posterior_samples=, not both")
        if model is not None and model is not fit.model:
            raise ValueError("model is not the model of fit=; pass the fit's model (or None)")
        if model_kwargs is not None:
            raise ValueError("model_kwargs= comes from the fit; put new covariates in data=")
        return fit.predict(data, 1000 if n is None else n, seed, sites=sites)
    if not callable(model):
        raise ModelError(f"the model must be a callable (a Python function), got {type(model).__name__}")
    key = key_of(0 if seed is None else int(seed))
    arrays, static, _ = _prepare_data(data, model_kwargs or {}, [])
    if posterior_samples is None:
        num = whole_number("n", 1000 if n is None else n, 1)
        return _run_predictive(model, key, None, arrays, static, [], sites, num_samples=num)
    draws = as_draws(posterior_samples)
    table = site_table(model, arrays, static)
    # latent sites with draws are substituted; the others (the predicted sites, which are
    # latent when their observed argument is None) are drawn from the model given them
    latent = [k for k, v in table.items() if v["type"] == "latent" and k in draws]
    if not latent:
        raise DataError(f"posterior_samples ({sorted(draws)}) holds none of the model's latent "
                        f"sites ({sorted(k for k, v in table.items() if v['type'] == 'latent')})")
    sizes = {np.shape(draws[k])[0] for k in latent}
    if len(sizes) != 1:
        raise DataError(f"posterior_samples have different numbers of draws per site: "
                        f"{ {k: np.shape(draws[k])[0] for k in latent} }")
    total = sizes.pop()
    idx = np.arange(total) if n is None else np.linspace(0, total - 1, whole_number("n", n, 1)).round().astype(int)
    chosen = {k: jnp.asarray(draws[k][idx]) for k in latent}
    return _run_predictive(model, key, chosen, arrays, static, [], sites)


def observed_values(model: Callable, data: Mapping[str, Any], model_kwargs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The values of the observed sites (the data as the model sees it)."""
    arrays = {k: jnp.asarray(v) for k, v in data.items()}

    def run(arrays: dict) -> dict:
        tr = handlers.trace(handlers.seed(model, 0)).get_trace(**model_kwargs, **arrays)
        return {n: s["value"] for n, s in tr.items() if s["type"] == "sample" and s["is_observed"]
                and not (s.get("infer") or {}).get("is_auxiliary")}

    return {k: np.asarray(v) for k, v in jax.jit(run)(arrays).items()}
