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

from ..data.batching import Streamed
from ..data.columns import check_finite, num_rows, read_columns, to_device
from ..data.plan import Plan
from ..data.sources import Source
from ..data.feeder import Feeder
from ..data.rows import RowBatches, RowNumbered
from ..engine.local import RowSteps, make_local_loss
from ..engine.loop import Engine
from ..errors import VariationalError
from ..families import default_method, make_family
from ..families.local import RowLayout, local_family
from ..model import LogDensity
from ..model.local import ROWS, LocalSpec, RowPlate, find_local
from .fit import Fit

__all__ = ["find", "fit_local", "COUPLED_MAX_GLOBALS", "LOCAL_LEARNING_RATE"]

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


def fit_local(spec: LocalSpec, plan: Plan, model: Callable, *, method: Any, method_options: dict,
              settings: dict, model_kwargs: Any, start: Any, seed: int, num_particles: int,
              learning_rate: Any, others: Mapping[str, Any]) -> Fit:
    """Build the fit of a model with local latent variables (not yet run).

    ``others`` holds options given to ``vi.fit`` that this fit refuses when true (``stl``,
    ``replace``, ``devices``, ``guide``, ``init``, ``init_params``, ``score_function``).
    """
    _refuse(settings, others)
    full, batch, data = _logdensities(model, spec, plan, model_kwargs, start, seed)
    whole, rows = RowLayout(full.layout, spec.sites, spec.num_rows), RowLayout(batch.layout, spec.sites, spec.batch_size)
    name = default_method(whole.dg) if method == "auto" else method
    if name not in _GAUSSIAN:
        raise VariationalError(
            f"method={name!r} cannot be the family of the global sites of a model with local latent "
            f"variables; use one of {list(_GAUSSIAN)} (or 'auto')")
    gfam = make_family(name, **method_options)
    family = local_family(gfam, whole, coupled=0 < whole.dg <= COUPLED_MAX_GLOBALS)
    lr = LOCAL_LEARNING_RATE if learning_rate in (None, "auto") else float(learning_rate)
    decay = max(100.0, 10.0 * spec.num_rows / spec.batch_size)
    opt = RowSteps(lr, decay=decay, frozen=gfam.trainable if gfam.frozen else None, rewhiten=gfam.rewhiten)
    loss = make_local_loss(gfam, rows, batch.logp, spec.num_rows, int(num_particles))
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
    return fit
