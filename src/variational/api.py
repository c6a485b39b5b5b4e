"""The entry points: :func:`fit` (model + data + method -> :class:`~variational.Fit`) and :func:`load`.

``fit`` is a short sequence of named steps: check the arguments, resume from a checkpoint when
asked, plan the data (columns -> rows, scaling, batcher), build the log density, the family and
the engine, start the state, choose the step size when asked, and run. ``load`` reads a saved
file (:mod:`variational.engine.checkpoint`), rebuilds the fit from the model and data the user
passes, and puts the saved state into it.

This is the top of the library: it may import every layer below it.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
import optax

from .data import plan as _plan
from .data.sources import Source
from .engine import checkpoint as _checkpoint
from .engine import control as _control
from .engine import devices as _devices
from .engine import run as _run
from .engine.loop import Engine
from .errors import CheckpointError, DataError, VariationalError
from .families import Family, default_method, guide_family, make_family
from .model import LogDensity
from .objectives import make_loss_and_grad
from .posterior.fit import Fit

__all__ = ["fit", "load"]


def fit(
    model: Callable,
    data: Any = None,
    *,
    method: str | Family = "auto",
    steps: int | None = None,
    optimizer: str | optax.GradientTransformation = "adam",
    learning_rate: float | str | None = None,
    schedule: str | None = None,
    num_particles: int = 1,
    stl: bool = False,
    seed: int = 0,
    progress: bool = True,
    model_kwargs: Mapping[str, Any] | None = None,
    init: Fit | None = None,
    start: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable] = (),
    batch_size: int | None = None,
    replace: bool = False,
    devices: Any = None,
    guide: Callable | None = None,
    max_steps: int = _control.DEFAULT_MAX_STEPS,
    max_seconds: float | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool | str | Path = False,
    **method_options: Any,
) -> Fit:
    """Fit a variational approximation to the posterior of ``model`` given ``data``.

    Parameters
    ----------
    model : callable
        A model function: NumPyro primitives or ``variational`` site constructors.
    data : mapping, pandas.DataFrame or streaming source, optional
        Named columns with one entry per row, passed to the model as keyword arguments, or a
        source from ``vi.data.parquet`` / ``vi.data.npy`` / ``vi.data.iterable`` (needs
        ``batch_size``).
    method : str or Family
        ``"auto"`` (default): ``"fullrank_advi"`` up to 64 latent dimensions, ``"advi"``
        (mean-field Gaussian) above (see :func:`variational.families.default_method`); or ``"advi"``,
        ``"fullrank_advi"``, or another registered family.
    steps : int or None
        Number of optimisation steps (in all, when resuming). ``None`` (default): run until
        the fit's convergence rule fires, up to ``max_steps`` (and ``max_seconds``): with the
        adaptive schedule, until the reported answer stops moving
        (:mod:`variational.engine.schedule`); with a constant step, Stan's ELBO rule
        (:class:`~variational.callbacks.ELBOConvergence`). ``fit.converged`` and
        ``fit.message`` say which rule ended it, or that the budget did.
    optimizer : str or optax.GradientTransformation
        "sgd", "momentum", "adagrad", "rmsprop", "adam", "adamax", or any optax optimiser.
    learning_rate : float, "auto" or None
        Step size of a named optimiser. ``None`` (default) or ``"auto"``: a trial of each value
        of a grid, scored by the ELBO where it ended
        (:func:`variational.engine.control.search_learning_rate`), picks it before the main
        run; the choice is in ``fit.settings["learning_rate"]`` and ``fit.notes`` (a streamed
        data source, which cannot be replayed for trials, starts at 0.01). A number is used as
        given. After 10 non-finite steps in a row the fit returns to its best parameters so
        far and halves the learning rate, and says so.
    schedule : {"adaptive", "constant"} or None
        ``"adaptive"``: decrease the step size once the iterates are stationary, report the
        average of the iterates, and rewhiten Gaussian families so that steps scale with q
        (:mod:`variational.engine.schedule`). ``"constant"``: the step stays what it is and the
        last iterate is reported (PyMC's ``pm.fit``). ``None`` (default): ``"adaptive"`` when the
        step size is chosen automatically, ``"constant"`` when a number (or an optax object) is
        given.
    num_particles : int
        Draws per step in the ELBO estimate.
    stl : bool
        Use the sticking-the-landing gradient estimator.
    seed : int
        Seed of every random number in the fit; the same seed gives the same numbers.
    progress : bool
        Show a progress bar with the running average loss.
    model_kwargs : mapping, optional
        Keyword arguments of the model that are not data columns.
    init : Fit, optional
        Warm start from an earlier fit of the same model (the approximation it reports; a fresh
        optimiser).
    start : mapping, optional
        Initial values of some latent sites (constrained space).
    callbacks : sequence of callables
        ``cb(fit, losses, i)`` called every ``cb.every`` steps (every step when absent), with
        ``i`` the number of steps done and ``losses`` the ``i`` losses so far; raising
        ``StopIteration`` ends the fit (see :mod:`variational.callbacks`).
    batch_size : int, optional
        Rows per step (minibatch ADVI). The same rows are taken from every column, and the
        log-likelihood of every observed site whose leading dimension is the batch is scaled
        by N/B automatically (see ``docs/data.md``). Default: all rows at every step.
    replace : bool
        Draw each minibatch's rows with replacement (default: without, a fresh permutation
        of the rows each epoch).
    devices : "all" or list of jax devices, optional
        Split each batch across these devices (data parallelism with JAX sharding; the
        variational parameters are replicated). ``batch_size`` must divide evenly. See
        ``docs/devices.md``.
    guide : callable, optional
        A NumPyro guide function (``numpyro.param`` + ``numpyro.sample`` sites) or autoguide
        (``AutoNormal(model)``, ``AutoDAIS(model)``...) used as the family instead of ``method``;
        ``fit.params`` then holds its parameters, constrained, under the guide's names.
    max_steps : int
        Budget of steps when ``steps=None``.
    max_seconds : float, optional
        Budget of seconds of optimisation (the step-size trials and compilation not counted);
        the fit stops at the first chunk of steps that ends after it.
    checkpoint : str or Path, optional
        File the fit is saved to (atomically) every ``checkpoint_every`` steps and at the end,
        also when interrupted.
    checkpoint_every : int, optional
        Steps between checkpoints (only the final save when absent).
    resume : bool or str or Path
        ``True``: continue from ``checkpoint`` when that file exists (else start afresh); a
        path: continue from that file. The settings must match the checkpoint's; ``steps``
        counts all steps, so the result equals an uninterrupted run exactly.
    **method_options
        Options of the family (for example ``init_scale``; ``n_particles`` and ``bandwidth``
        for ``"svgd"``; ``rank`` for ``"lowrank_advi"``; ``flow``, ``depth`` and ``width``
        for ``"flow"``).

    Returns
    -------
    Fit
        The result object.

    Examples
    --------
    >>> import numpy as np
    >>> import variational as vi
    >>> y = np.random.default_rng(0).normal(1.0, 1.0, size=100)
    >>> def model(y):
    ...     mu = vi.Normal("mu", 0, 10)
    ...     vi.Normal("y", mu, 1.0, observed=y)
    >>> fit = vi.fit(model, {"y": y}, progress=False)
    >>> fit.converged
    True
    >>> exact = y.sum() / (len(y) + 1 / 10**2)    # the conjugate posterior mean
    >>> bool(abs(float(fit.mean["mu"]) - exact) < 0.02)
    True
    """
    _check_arguments(steps, num_particles, checkpoint, checkpoint_every)
    chosen = learning_rate is None  # the library picks the step size
    learning_rate, schedule = _control.resolve_step_size(optimizer, learning_rate, schedule)
    settings = dict(method=method.name if isinstance(method, Family) else method,
                    optimizer=optimizer if isinstance(optimizer, str) else "custom",
                    learning_rate=learning_rate, schedule=schedule, num_particles=int(num_particles),
                    stl=bool(stl), seed=seed, progress=progress, batch_size=batch_size,
                    replace=bool(replace), **method_options)
    run_args = dict(max_steps=max_steps, callbacks=callbacks, checkpoint=checkpoint,
                    checkpoint_every=checkpoint_every, max_seconds=max_seconds)
    if resume:
        found = _resume(resume, checkpoint, model, data, settings, model_kwargs, optimizer, method)
        if found is not None:
            return _run.run(found, steps, **run_args)
    place = _devices.placement(devices, batch_size)
    plan = _plan_data(model, data, batch_size, replace, model_kwargs, seed, place)
    if chosen and (plan.feeder is not None or (place is not None and place.multiprocess)):
        # a streamed source cannot be replayed for the step-size trials, and processes must agree
        # on every step: a fixed start (and, across processes, a constant step)
        learning_rate = settings["learning_rate"] = _control.STREAM_LEARNING_RATE
        if place is not None and place.multiprocess:
            schedule = settings["schedule"] = "constant"
    ld = LogDensity(model, plan.trace_data, model_kwargs, obs_scale=plan.obs_scale, start=start, seed=seed)
    family = _family(method, guide, method_options, stl, ld, plan, seed)
    opt, guard, spec = _control.build_optimizer(optimizer, learning_rate, family=family, schedule=schedule)
    loss_and_grad = make_loss_and_grad(family, ld.logp, int(num_particles), bool(stl))
    engine = Engine(loss_and_grad, opt, plan.batcher(ld), capacity=plan.capacity, guard=guard)
    key = jax.random.PRNGKey(seed)
    state = engine.init_state(_initial_params(init, family, ld, plan, key), key)
    device_data = plan.device_data
    if place is not None:
        state, key, device_data = _place(place, engine, plan, state, key, device_data)
    settings["method"] = family.name
    result = Fit(model=model, logdensity=ld, family=family, engine=engine, state=state, key=key,
                 data=device_data, model_kwargs=model_kwargs or {}, settings=settings, schedule=spec)
    if plan.batch_size is not None:
        result._use_plan(plan)
    return _run.run(result, steps, **run_args)  # (an "auto" step size is chosen on the first run)


# -- the steps of fit -------------------------------------------------------------------------
def _check_arguments(steps: Any, num_particles: Any, checkpoint: Any, checkpoint_every: Any) -> None:
    if steps is not None and int(steps) < 0:
        raise ValueError(f"steps={steps!r} must be a non-negative integer, or None to run until convergence")
    if checkpoint_every is not None and checkpoint is None:
        raise ValueError("checkpoint_every= needs checkpoint=path, the file to write")
    if int(num_particles) < 1:
        raise ValueError(f"num_particles={num_particles!r} must be at least 1")


def _resume(resume: Any, checkpoint: Any, model: Callable, data: Any, settings: dict,
            model_kwargs: Any, optimizer: Any, method: Any) -> Fit | None:
    """The checkpointed fit to continue (checked against this call's settings), or None."""
    where = checkpoint if resume is True else resume
    if where is None:
        raise ValueError("resume=True needs checkpoint=path (or pass the file as resume=path)")
    path = Path(where)
    if not path.exists():
        return None
    loaded = load(path, model, data, model_kwargs=model_kwargs,
                  optimizer=None if isinstance(optimizer, str) else optimizer,
                  method=method if isinstance(method, Family) else None)
    expect = {k: v for k, v in settings.items() if k != "progress"}
    _checkpoint.check_resume_settings(path, loaded, expect)
    loaded.settings["progress"] = settings["progress"]
    return loaded


def _plan_data(model: Callable, data: Any, batch_size: Any, replace: bool, model_kwargs: Any,
               seed: int, place: Any) -> _plan.Plan:
    if place is not None and place.multiprocess:
        return _devices_plan(model, data, batch_size, model_kwargs, seed)
    return _plan.plan(model, data, batch_size=batch_size, replace=replace,
                      model_kwargs=model_kwargs, seed=seed)


def _family(method: Any, guide: Any, options: dict, stl: bool, ld: LogDensity, plan: _plan.Plan,
            seed: int) -> Family:
    if guide is None:
        return make_family(default_method(ld.dim) if method == "auto" else method, **options)
    if method not in ("auto", "advi", "guide") or options or stl:
        raise VariationalError(
            f"guide= replaces method= (got {method!r}), method options (got {sorted(options)}) "
            f"and stl=; give either a guide or a method")
    return guide_family(guide, ld, plan.trace_data, seed=seed)


def _initial_params(init: Any, family: Family, ld: LogDensity, plan: _plan.Plan, key: jax.Array) -> Any:
    if init is not None:
        return _warm_params(init, ld, family)
    if family.init_with_logp is not None:  # e.g. SVGD's importance-resampled start
        head = plan.head_on_device()  # all rows, or the first batch (scaled by N/B)
        return family.init_with_logp(jax.random.fold_in(key, 0), ld.init, lambda z: ld.logp(z, head))
    return family.init(jax.random.fold_in(key, 0), ld.init)


def _place(place: Any, engine: Engine, plan: _plan.Plan, state: Any, key: jax.Array,
           device_data: Any) -> tuple[Any, jax.Array, Any]:
    """Replicate the state and shard the rows across the devices of ``place``."""
    engine.shard_batch, engine.adaptive = place.constrain_batch, not place.multiprocess
    state, key = place.replicate(state), place.replicate(key)
    if device_data:
        device_data = place.shard_rows(device_data, plan.num_rows or len(next(iter(device_data.values()))))
    if plan.feeder is not None:
        local_feed = plan.feeder.feed
        plan.feeder.feed = lambda n: place.place_fed(local_feed(n), plan.batch_size)
    return state, key, device_data


def _devices_plan(model: Callable, data: Any, batch_size: int | None, model_kwargs: Any, seed: int) -> Any:
    """Multi-process plan: this process streams ``batch_size / processes`` rows of its own shards.

    N is the total over processes, and per-row sites are scaled by N / batch_size (global).
    """
    if not isinstance(data, Source) or batch_size is None:
        raise DataError(
            "a multi-process fit (jax.distributed) reads a streaming source on each process "
            "(vi.data.parquet(...) of that process's own shards) with a global batch_size=")
    procs = jax.process_count()
    plan = _plan.plan(model, data, batch_size=batch_size // procs, model_kwargs=model_kwargs,
                      seed=seed + jax.process_index())
    local_scale = plan.num_rows / plan.batch_size
    n_total = _devices.global_rows(plan.num_rows)
    plan.obs_scale = {k: (n_total / batch_size if k in plan.per_row and np.isclose(f, local_scale) else f)
                      for k, f in plan.obs_scale.items()}
    plan.num_rows, plan.batch_size = n_total, int(batch_size)
    return plan


def _warm_params(init: Fit, ld: LogDensity, family: Family) -> Any:
    if not isinstance(init, Fit):
        raise TypeError(f"init= must be a Fit from an earlier vi.fit, got {type(init).__name__}")
    if init.logdensity.dim != ld.dim or init.logdensity.names != ld.names:
        raise ValueError(
            f"init= comes from a model with latent sites {init.logdensity.names} "
            f"(dimension {init.logdensity.dim}), but this model has {ld.names} (dimension {ld.dim}); "
            f"warm starts need the same latent sites and shapes")
    if init.family.name != family.name:
        raise ValueError(f"init= was fitted with method={init.family.name!r}; warm-start with the same method")
    return jax.tree_util.tree_map(lambda x: x, init._answer_params)  # the answer it reported


# -- load -------------------------------------------------------------------------------------
def load(
    path: str | os.PathLike,
    model: Callable,
    data: Any = None,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    optimizer: Any = None,
    method: Any = None,
    check_data: bool = True,
) -> Fit:
    """Load a fit saved with :meth:`Fit.save` (or a checkpoint) for ``model`` and ``data``.

    Parameters
    ----------
    path : str or path-like
        The saved file.
    model : callable
        The model function the fit was made with (code is not stored in the file).
    data : mapping or pandas.DataFrame, optional
        The data the fit was made with (checked against a fingerprint in the file).
    model_kwargs : mapping, optional
        Model keyword arguments; by default those stored in the file.
    optimizer : optax.GradientTransformation, optional
        Needed when the fit used an optax object rather than an optimiser's name.
    method : Family, optional
        Needed when the fit used a custom :class:`~variational.Family` object.
    check_data : bool
        Refuse data whose contents differ from those the fit was made with.

    Returns
    -------
    Fit
        The fit, with its parameters, optimiser state, loss history and random key; ``refine``
        continues it exactly where it stopped.

    Raises
    ------
    CheckpointError
        The file is corrupt, or the model, data or settings do not match it.

    Examples
    --------
    >>> import tempfile, os
    >>> import variational as vi
    >>> def model():
    ...     vi.Normal("x", 0, 1)
    >>> path = os.path.join(tempfile.mkdtemp(), "fit.npz")
    >>> _ = vi.fit(model, steps=100, progress=False).save(path)
    >>> vi.load(path, model).refine(50).steps
    150
    """
    path = Path(path)
    meta, arrays = _checkpoint.read(path)
    kwargs, mk = _checkpoint.fit_arguments(path, meta, arrays, _FIT_ARGUMENTS, optimizer=optimizer,
                                           method=method, model_kwargs=model_kwargs)
    given = _checkpoint.data_signature_of(data)
    if given is not None:
        _checkpoint.check_data(path, meta["data"], given, check_data)
    try:
        new = fit(model, data, steps=0, model_kwargs=mk, **kwargs)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: the fit could not be rebuilt from the model and data given "
                              f"({type(e).__name__}: {e})") from e
    if given is not None:
        new._data_signature = given
    return _checkpoint.restore(path, meta, arrays, new)


_FIT_ARGUMENTS = set(inspect.signature(fit).parameters)
