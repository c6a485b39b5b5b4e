"""A fit of a model with local latent variables (see ``docs/local_latents.md``).

:func:`find` tells whether a fit's data plan meets a model with a plate over the data rows that
holds latent sites (with ``batch_size=``, a streamed source, or ``subsample_size=`` in the
model); :func:`fit_local` builds that fit: the model as a log density over all N rows (what the
answers read: ``fit.mean``, ``std``, ``sample``, ``predict``, ``to_arviz``, ``diagnose``), the
same model on a batch's rows (what each step evaluates), the family ``q(g) prod_i q(z_i | g)``
with per-row parameters, and the row-wise optimiser (:mod:`variational.engine.local`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions.transforms import biject_to

from ..data.batching import Streamed
from ..data.columns import check_finite, num_rows, read_columns, to_device
from ..data.plan import Plan
from ..data.sources import Source
from ..data.feeder import Feeder
from ..data.rows import RowBatches, RowNumbered
from ..engine.local import AmortisedSteps, RowSteps, make_amortised_loss, make_local_loss
from ..engine.loop import Engine
from ..engine.options import Amortised
from ..errors import VariationalError
from ..families import default_method, make_family
from ..families.amortised import Amortiser, amortised_family
from ..families.local import RowLayout, local_draws, local_family, reported_globals
from ..model import LogDensity
from ..model.local import ROWS, LocalSpec, RowPlate, find_local
from .fit import Fit

__all__ = ["find", "fit_local", "check_amortised", "new_rows", "COUPLED_MAX_GLOBALS", "LOCAL_LEARNING_RATE"]

#: rows get a map from the globals (q(z_i | g)) when there are at most this many global coordinates
COUPLED_MAX_GLOBALS = 16
#: default step size of the global parameters (Adam)
LOCAL_LEARNING_RATE = 0.05
_GAUSSIAN = ("advi", "fullrank_advi", "lowrank_advi")


def find(model: Callable, data: Any, batch_size: Any, model_kwargs: Mapping[str, Any] | None = None,
         seed: int = 0) -> tuple[LocalSpec, Plan] | None:
    """The row plate and local sites of ``model`` on ``data``, and the data plan of their fit
    (None when the model has none: the fit is planned as any other)."""
    if data is None or (isinstance(data, Source) and batch_size is None):
        return None
    if isinstance(data, Source):
        n, b = data.num_rows, batch_size
        if not isinstance(n, int) or isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= n:
            return None   # (the plan explains)
        cols, categories = data.head(b), {}
    else:
        cols, categories = read_columns(data)
        if not cols:
            return None
        n = num_rows(cols)
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or not 1 <= batch_size <= n):
            return None
    try:
        spec = find_local(model, cols, n, batch_size, model_kwargs)
    except Exception:
        return None   # the model's own error: explained by the plan and the log density
    if spec is None:
        return None
    if isinstance(data, Source):
        row_bytes = sum(a[:1].nbytes for a in cols.values())
        capacity = int(np.clip((16 << 20) // max(1, b * row_bytes), 4, 4096))
        feeder = Feeder(RowNumbered(data), b, capacity, seed)
        return spec, Plan(cols, {}, n, b, False, spec.scale, [], feeder, capacity)
    check_finite(cols)
    if spec.subsampled:
        return spec, Plan(cols, {}, None, None, categories=categories)
    return spec, Plan({k: v[:batch_size] for k, v in cols.items()}, {}, n, batch_size, False, spec.scale,
                      categories=categories, columns=cols)


def _refuse(settings: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """Options the local fit does not offer, named."""
    bad = {k: v for k, v in given.items() if v}
    if settings["objective"] != "elbo" or settings["kl_weight"] != 1.0:
        bad["objective"] = settings["objective"]
    if not isinstance(settings["optimizer"], str) or settings["optimizer"] != "adam":
        bad["optimizer"] = settings["optimizer"]
    if bad:
        raise VariationalError(
            f"a model with local latent variables (one per data row) is fitted with the ELBO, Adam "
            f"and rows without replacement; {sorted(bad)} cannot be used with it. Leave them out")


def _logdensities(model: Callable, spec: LocalSpec, plan: Any, model_kwargs: Any, start: Any,
                  seed: int) -> tuple[LogDensity, LogDensity, dict]:
    """The model on all N rows (answers), on a batch's rows (steps), and the fit's device data."""
    n, b = spec.num_rows, spec.batch_size

    def with_rows(**kw: Any) -> Any:   # the batch's rows
        rows = kw.pop(ROWS)
        with RowPlate(None, spec.plate, n, rows):
            return model(**kw)

    def all_rows(**kw: Any) -> Any:
        with RowPlate(None, spec.plate, n, jnp.arange(n)):
            return model(**kw)

    if plan.feeder is not None:   # (a stream: the answers need only the shapes of the rows)
        head = plan.trace_data
        cols = {k: np.broadcast_to(v[:1], (n,) + v.shape[1:]) for k, v in head.items()}
        batch_cols = head
    else:
        cols = plan.columns if plan.columns is not None else plan.trace_data
        batch_cols = cols if spec.subsampled else {k: v[:b] for k, v in cols.items()}
    full = LogDensity(all_rows, cols, model_kwargs,
                      start=start, seed=seed)
    batch = LogDensity(with_rows, {**batch_cols, ROWS: np.arange(b, dtype=np.int32)}, model_kwargs,
                       obs_scale=spec.scale if spec.scale is not None else None, seed=seed)
    data = {} if plan.feeder is not None else to_device(cols)
    return full, batch, data


def fit_local(found: tuple[LocalSpec, Plan] | None, model: Callable, *, method: Any, method_options: dict,
              settings: dict, model_kwargs: Any, start: Any, seed: int, num_particles: int,
              learning_rate: Any, others: Mapping[str, Any], local: tuple = (None, None)) -> Fit:
    """Build the fit of a model with local latent variables (not yet run).

    ``others`` holds options given to ``vi.fit`` that this fit refuses when true (``stl``,
    ``replace``, ``devices``, ``guide``, ``init``, ``init_params``, ``score_function``);
    ``found``: what :func:`find` found (None: nothing, refused when ``local=`` is given);
    ``local``: ``vi.Batches(local=)`` (an :class:`~variational.Amortised`, or None) and whether
    the fit is checkpointed.
    """
    amortised = local[0]
    check_amortised(amortised, found, local[1])
    spec, plan = found
    _refuse(settings, others)
    full, batch, data = _logdensities(model, spec, plan, model_kwargs, start, seed)
    whole, rows = RowLayout(full.layout, spec.sites, spec.num_rows), RowLayout(batch.layout, spec.sites, spec.batch_size)
    name = default_method(whole.dg) if method == "auto" else method
    if name not in _GAUSSIAN:
        raise VariationalError(
            f"method={name!r} cannot be the family of the global sites of a model with local latent "
            f"variables; use one of {list(_GAUSSIAN)} (or 'auto')")
    gfam = make_family(name, **method_options)
    coupled = 0 < whole.dg <= COUPLED_MAX_GLOBALS
    lr = LOCAL_LEARNING_RATE if learning_rate in (None, "auto") else float(learning_rate)
    decay = max(100.0, 10.0 * spec.num_rows / spec.batch_size)
    if amortised is None:
        family = local_family(gfam, whole, coupled)
        opt: Any = RowSteps(lr, decay=decay, frozen=gfam.trainable if gfam.frozen else None, rewhiten=gfam.rewhiten)
        loss = make_local_loss(gfam, rows, batch.logp, spec.num_rows, int(num_particles))
    else:
        enc, x_all = _amortiser(amortised, plan, whole, full, coupled)
        family = amortised_family(gfam, whole, enc, x_all)
        opt = AmortisedSteps(lr, decay=decay, frozen=gfam.trainable if gfam.frozen else None, rewhiten=gfam.rewhiten)
        loss = make_amortised_loss(gfam, rows, batch.logp, spec.num_rows, enc, spec.subsampled, int(num_particles))
    if plan.feeder is not None:
        batcher: Any = Streamed(spec.num_rows, spec.batch_size)
    else:
        batcher = RowBatches(spec.num_rows, spec.batch_size, gather=not spec.subsampled)
    engine = Engine(loss, opt, batcher, capacity=plan.capacity)
    key = jax.random.PRNGKey(seed)
    state = engine.init_state(family.init(jax.random.fold_in(key, 0), full.init), key)
    # (the caller's schedule setting stays: the row steps have their own, see RowSteps)
    settings = dict(settings, method=family.name, learning_rate=lr)
    fit = Fit(model=model, logdensity=full, family=family, engine=engine, state=state, key=key,
              data=data, model_kwargs=model_kwargs or {}, settings=settings, categories=plan.categories, plan=plan)
    fit.local = spec
    if amortised is not None:
        draw = new_rows(enc, gfam, whole, full)
        fit.new_rows = lambda data, n, key: draw(fit.state.params, data, n, key)
    return fit


def check_amortised(option: Any, found: Any, checkpoint: Any) -> None:
    """``vi.Batches(local=)``: an :class:`~variational.Amortised`, for a model with local sites, no checkpoint."""
    if option is None:
        return
    if not isinstance(option, Amortised):
        raise TypeError(f"vi.Batches(local={option!r}): give vi.Amortised(...) (an encoder for the local "
                        f"latent variables), or leave local= out for per-row parameters")
    if found is None:
        raise VariationalError(
            "vi.Batches(local=vi.Amortised(...)) was given, but the model has no latent sites in a plate over the data "
            "rows that the fit subsamples; give batch_size= (the plate over the rows declared with N or "
            "len(y)) or subsample_size= in the plate, or leave local= out")
    if checkpoint:
        raise VariationalError(
            "an amortised fit (vi.Batches(local=vi.Amortised(...))) cannot be checkpointed yet: its encoder is not saved "
            "with the fit; leave checkpoint= out, or fit with per-row parameters (no local=)")


def new_rows(enc: Amortiser, gfam: Any, layout: RowLayout, ld: LogDensity) -> Callable:
    """``f(params, data, n, key)``: ``n`` joint draws of the globals (from q) and of the local
    sites of the rows of ``data`` (through the encoder), by site name in the model's space:
    globals ``(n, ...)``, local sites ``(n, rows, ...)``."""

    def draw(params: Any, x: jax.Array, key: jax.Array, n: int) -> dict:
        m = x.shape[0]
        kg, kl = jax.random.split(key)
        gp = reported_globals(params)
        g = gfam.sample_and_log_q(gp, kg, n)[0]
        z = local_draws(enc.rows(params.get("enc_avg", params["enc"]), x, gfam.mean(gp)), g, kl)[0]
        out = {}
        for site, (is_local, at, size, k) in zip(ld.layout, layout.parts):
            u = (z[:, :, at:at + k].reshape((n, m) + tuple(site.unconstrained_shape[1:])) if is_local
                 else g[:, at:at + size].reshape((n,) + tuple(site.unconstrained_shape)))
            out[site.name] = biject_to(ld.supports[site.name])(u)
        return out

    compiled = jax.jit(draw, static_argnums=3)

    def f(params: Any, data: Any, n: int, key: jax.Array) -> dict[str, np.ndarray]:
        cols, _ = read_columns(data)
        return {k: np.asarray(v) for k, v in compiled(params, enc.features(cols), key, int(n)).items()}

    return f


def _amortiser(option: Any, plan: Plan, layout: RowLayout, full: LogDensity, coupled: bool) -> tuple:
    """The encoder of an amortised fit, and its inputs for all training rows (None: a stream)."""
    if plan.feeder is not None:
        cols, x_all = dict(plan.trace_data), None
    else:
        cols = dict(plan.columns if plan.columns is not None else plan.trace_data)
    cols = {k: np.asarray(v) for k, v in cols.items() if k != ROWS}
    loc0 = np.asarray(layout.split(jnp.asarray(full.init)[None])[1][0].mean(0))
    enc = Amortiser(cols, option.inputs, option.encoder, option.hidden, layout.dl, layout.dg, coupled, loc0)
    if plan.feeder is None:
        x_all = enc.features(cols)
    return enc, x_all
