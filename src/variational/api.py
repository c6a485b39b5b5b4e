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
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import optax

from .data.sources import Source
from .engine import (arguments as _arguments, auto as _auto, checkpoint as _checkpoint, control as _control,
                     devices as _devices, keys as _keys, model_params as _model_params, notes as _notes,
                     options as _options, run as _run)
from .errors import CheckpointError, DataError
from .compilation import compiling, key_of, stats
from .engine.options import Batches, Checkpoint, Objective, Start, StepSize, Stop
from .families import FAMILIES, Family
from .families.base import is_direct
from .model import LogDensity
from .model.threads import exclusive
from .objectives import make_loss_and_grad, make_objective
from .posterior import direct as _direct
from .posterior import local as _local
from .posterior import programs as _answers
from .posterior.fit import Fit

__all__ = ["fit", "load"]

#: runs of at least this many steps compile the programs of their answers during the steps
AHEAD_STEPS = 5000


def fit(
    model: Callable,
    data: Any = None,
    *,
    method: str | Family = "auto",
    steps: int | None = None,
    learning_rate: float | str | StepSize | None = None,
    optimizer: str | optax.GradientTransformation = "adam",
    objective: str | Objective = "elbo",
    batch_size: int | Batches | None = None,
    init: Fit | str | Start | None = None,
    guide: Callable | None = None,
    callbacks: Sequence[Callable] = (),
    checkpoint: str | Path | Checkpoint | None = None,
    stop: Stop | None = None,
    seed: int = 0,
    progress: bool = True,
    model_kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> Fit:
    """Fit a variational approximation to the posterior of ``model`` given ``data``.

    Each keyword takes a plain value (a shorthand) or the settings object that holds it and its
    companions: ``objective=vi.Objective(...)``, ``learning_rate=vi.StepSize(...)``,
    ``batch_size=vi.Batches(...)``, ``stop=vi.Stop(...)``, ``checkpoint=vi.Checkpoint(...)``,
    ``init=vi.Start(...)``. The keywords ``num_particles``, ``stl``, ``alpha``, ``kl_weight``,
    ``score_function``, ``schedule``, ``replace``, ``devices``, ``max_steps``, ``max_seconds``,
    ``checkpoint_every``, ``resume``, ``start`` and ``init_params`` of earlier releases still
    work, with a ``FutureWarning`` naming their new home (``docs/api.rst``).

    Parameters
    ----------
    model : callable
        A model function: NumPyro primitives or ``variational`` site constructors.
    data : mapping, pandas.DataFrame or streaming source, optional
        Named columns with one entry per row, passed to the model as keyword arguments, or a
        source from ``vi.data.parquet`` / ``vi.data.npy`` / ``vi.data.iterable`` (needs
        ``batch_size``).
    method : str or Family
        ``"auto"`` (default): ``"fullrank_advi"`` up to 64 latent dimensions; above, ``"structured"``
        (Markov along the model's series: long vector sites coupled along their axis) or ``"lowrank_advi"``
        (:func:`variational.families.default_family`); a fit whose verdict is "bad" is followed by
        the richer family's within the budget, and the message says which was kept; or another
        registered family.
        The direct methods ``"laplace"``, ``"dadvi"`` and ``"pathfinder"`` are not run by the
        stochastic loop: each solves its own deterministic problem on all rows of the data
        (``steps``, ``optimizer`` and ``learning_rate`` are not used; ``steps=0`` builds the
        fit without solving) and reports iterations, gradient evaluations and convergence in
        ``fit.steps``, ``fit.grad_evals``, ``fit.converged`` and ``fit.solution``. See
        ``docs/fast_approximations.md``.
    steps : int or None
        Number of optimisation steps (in all, when resuming). ``None`` (default): run until
        the fit's convergence rule fires, within the budget of ``stop``: with the adaptive
        schedule, until the reported answer stops moving (:mod:`variational.engine.schedule`);
        with a constant step, Stan's ELBO rule (:class:`~variational.callbacks.ELBOConvergence`).
        ``fit.converged`` and ``fit.message`` say which rule ended it, or that the budget did.
    learning_rate : float, "auto", None or StepSize
        Step size of a named optimiser. ``None`` (default) or ``"auto"``: a trial of each value of
        a grid, scored by the ELBO where it ended (:func:`variational.engine.control.search_learning_rate`),
        picks it; the choice is in ``fit.settings["learning_rate"]`` and ``fit.notes`` (a streamed
        source, which cannot be replayed for trials, starts at 0.01). A number is used as given.
        After 10 non-finite steps in a row the fit returns to its best parameters so far and
        halves the learning rate, and says so. :class:`~variational.StepSize` also sets the
        schedule (adaptive or constant).
    optimizer : str or optax.GradientTransformation
        "sgd", "momentum", "adagrad", "rmsprop", "adam", "adamax", PyMC's "adagrad_window"
        (its ADVI default), "nesterov_momentum" and "adadelta", or any optax optimiser.
    objective : {"elbo", "renyi", "meanfield_elbo"} or Objective
        What the optimiser maximises (see :mod:`variational.objectives` and
        ``docs/objectives.md``); :class:`~variational.Objective` also sets the draws per step,
        the gradient estimator, the Renyi order and the KL weight.
    batch_size : int or Batches, optional
        Rows per step (minibatch ADVI). The same rows are taken from every column, and the
        log-likelihood of every observed site whose leading dimension is the batch is scaled
        by N/B automatically (see ``docs/data.md``). Default: all rows at every step.
        :class:`~variational.Batches` also sets sampling with replacement, the devices, and an
        encoder for latent variables with one value per row (``local=``, ``docs/local_latents.md``).
    init : Fit, str or Start, optional
        Warm start from an earlier fit of the same model: a fit of the same method gives its
        parameters (a fresh optimiser); any other fit gives the member of this family closest
        to its Gaussian moments (mean-field, full-rank and low-rank families); a direct
        method's name (``"pathfinder"``, ``"laplace"``, ``"dadvi"``) runs it first on all rows
        of the data. Direct methods start their optimisation at the fit's mean.
        :class:`~variational.Start` also gives initial values of latent sites or of the
        family's parameters.
    guide : callable, optional
        A NumPyro guide function (``numpyro.param`` + ``numpyro.sample`` sites) or autoguide
        (``AutoNormal(model)``, ``AutoDAIS(model)``...) used as the family instead of ``method``;
        ``fit.params`` then holds its parameters, constrained, under the guide's names.
        A guide with no ``numpyro.param`` is a fixed q: the fit evaluates it (ELBO estimates,
        draws, diagnostics) without changing it.
    callbacks : sequence of callables
        ``cb(fit, losses, i)`` called every ``cb.every`` steps (every step when absent), with
        ``i`` the number of steps done and ``losses`` the ``i`` losses so far; raising
        ``StopIteration`` ends the fit (see :mod:`variational.callbacks`).
    checkpoint : str, Path or Checkpoint, optional
        File the fit is saved to (atomically) at the end, also when interrupted;
        :class:`~variational.Checkpoint` also sets saves every so many steps and resuming.
    stop : Stop, optional
        The budget of steps and seconds when ``steps=None`` (:class:`~variational.Stop`).
    seed : int
        Seed of every random number in the fit; the same seed gives the same numbers.
    progress : bool
        Show a progress bar with the running average loss.
    model_kwargs : mapping, optional
        Keyword arguments of the model that are not data columns.
    **options
        Options of the family (for example ``init_scale``; ``n_particles`` and ``bandwidth``
        for ``"svgd"``; ``rank`` for ``"lowrank_advi"``; ``flow``, ``depth`` and ``width``
        for ``"flow"``). Another keyword is refused with the nearest known one.

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
    homes = dict(objective=objective, learning_rate=learning_rate, batch_size=batch_size, stop=stop,
                 checkpoint=checkpoint, init=init)
    flat, method_options = _options.resolve(homes, options)
    return _fit(model, data, method=method, steps=steps, optimizer=optimizer, seed=seed, progress=progress,
                model_kwargs=model_kwargs, callbacks=callbacks, guide=guide, **flat, **method_options)


@exclusive
@compiling
def _fit(
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
    objective: str = "elbo",
    alpha: float | None = None,
    kl_weight: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    model_kwargs: Mapping[str, Any] | None = None,
    init: Fit | str | None = None,
    start: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable] = (),
    batch_size: int | None = None,
    replace: bool = False,
    devices: Any = None,
    guide: Callable | None = None,
    init_params: Mapping[str, Any] | None = None,
    score_function: bool = False,
    max_steps: int = _control.DEFAULT_MAX_STEPS,
    max_seconds: float | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool | str | Path = False,
    local: Any = None,
    **method_options: Any,
) -> Fit:
    """:func:`fit` with every setting as its own keyword (as a checkpoint stores them)."""
    call = dict(locals())   # (method="auto" may fit a richer family with the same arguments)
    steps, num_particles = _arguments.check_arguments(steps, num_particles, checkpoint, checkpoint_every, max_steps)
    _arguments.check_method_options(method, guide, method_options, _FIT_ARGUMENTS)
    started, compiled_before = time.perf_counter(), stats()
    method = "advi" if method == "auto" and objective == "meanfield_elbo" else method
    direct = guide is None and is_direct(method)
    if direct:
        _direct.check_arguments(method, resume=resume, checkpoint=checkpoint, callbacks=callbacks,
                                devices=devices, batch_size=batch_size, num_particles=num_particles,
                                stl=stl, learning_rate=learning_rate)
    obj = make_objective(objective, alpha=alpha, kl_weight=kl_weight)
    chosen = learning_rate is None  # the library picks the step size (a direct method takes none)
    if not direct:
        learning_rate, schedule = _control.resolve_step_size(optimizer, learning_rate, schedule)
    settings = dict(method=method.name if isinstance(method, Family) else method,
                    optimizer=optimizer if isinstance(optimizer, str) else "custom",
                    learning_rate=learning_rate, schedule=schedule, num_particles=int(num_particles),
                    stl=bool(stl), objective=obj.name, alpha=obj.alpha, kl_weight=obj.kl_weight,
                    seed=seed, progress=progress, batch_size=batch_size, replace=bool(replace),
                    **{k: (v.spec() if hasattr(v, "spec") and not isinstance(v, type) else v)
                       for k, v in method_options.items()})   # a kernel object: as its spec
    run_args = dict(max_steps=max_steps, callbacks=callbacks, checkpoint=checkpoint,
                    checkpoint_every=checkpoint_every, max_seconds=max_seconds)
    if resume:
        found = _resume(resume, checkpoint, model, data, settings, model_kwargs, optimizer, method, guide)
        if found is not None:
            return _run.run(found, steps, **run_args)
    place = _devices.placement(devices, batch_size)
    found = None if guide is not None or direct else _local.find(model, data, batch_size, model_kwargs, seed)
    if found is not None or local is not None:   # latent sites in a plate over the data rows (docs/local_latents.md)
        others = dict(stl=stl, replace=replace, devices=devices, init=init, init_params=init_params)
        return _run.run(_local.fit_local(found, model, method=method, method_options=method_options, settings=settings,
                        model_kwargs=model_kwargs, start=start, seed=seed, num_particles=num_particles, others=others,
                        learning_rate=None if chosen else learning_rate, local=(local, checkpoint or resume)),
                        steps, **run_args)
    plan = _arguments.plan_data(model, data, batch_size, replace, model_kwargs, seed, place)
    if chosen and (plan.feeder is not None or (place is not None and place.multiprocess)):
        learning_rate = settings["learning_rate"] = _control.STREAM_LEARNING_RATE
        if place is not None and place.multiprocess:
            schedule = settings["schedule"] = "constant"
    ld = LogDensity(model, plan.trace_data, model_kwargs, obs_scale=plan.obs_scale, start=start, seed=seed,
                    score_function=bool(score_function))
    family = _arguments.build_family(method, guide, method_options, stl, ld, plan, seed,
                                     bool(score_function), steps)
    if method == "auto":   # what it chose, in the settings (a reload rebuilds it)
        method_options, stl = _arguments.auto_settings(family, method_options, settings, stl, obj.name)
    plan.check_observed(ld)  # every row of discrete observed sites (the trace saw one batch)
    key = key_of(seed)   # (made on the host: no operation to compile)
    if isinstance(init, str):
        init = _init_fit(init, model, data, model_kwargs, start, seed, progress)
    if direct:
        settings["method"] = family.name
        return _direct.solve(model, ld, family, plan, init, key, model_kwargs, settings, steps)
    fraction = 1.0 if plan.batch_size is None else min(1.0, plan.batch_size / max(plan.num_rows, 1))
    opt, guard, spec = _control.build_optimizer(optimizer, learning_rate, family=family, schedule=schedule,
                                                batch_fraction=fraction)
    base, name = family, family.name if method == "auto" else method
    family, loss_and_grad = _model_params.attach(
        family, ld, make_loss_and_grad(family, ld.logp, int(num_particles), bool(stl), obj, ld))
    opts = _arguments.family_options(name, method_options, steps)
    fam_key = (_keys.family_key(name if family is base else None, opts, family), ("schedule", schedule))
    engine = _keys.keyed_engine(loss_and_grad, opt, plan.batcher(ld), plan.capacity, ld, guard,
                                (fam_key, optimizer, num_particles, stl, place, obj))
    state = _direct.initial_state(engine, init, family, ld, plan, key, init_params)
    device_data = plan.device_data
    if place is not None:
        state, key, device_data = _devices.place_fit(place, engine, plan, state, key, device_data)
    settings["method"] = family.name
    result = Fit(model=model, logdensity=ld, family=family, engine=engine, state=state, key=key,
                 data=device_data, model_kwargs=model_kwargs or {}, settings=settings, schedule=spec,
                 family_key=fam_key, categories=plan.categories, plan=plan)
    _notes.setup_notes(result, renyi_minibatch=plan.batch_size is not None and obj.name == "renyi",
                       init=init, score_function=bool(score_function))
    result.timings["setup_s"] = time.perf_counter() - started
    result.timings["compilations"] += (stats() - compiled_before).compilations
    if _answers.ahead_enabled() and (steps is None or int(steps) >= AHEAD_STEPS):  # diagnose()'s, draws'
        _answers.prepare(result.approximation)       # compile on another core during the steps
    result = _run.run(result, steps, **run_args)  # (an "auto" step size is chosen on the first run)
    return _auto.settle(result, _fit, call, started, method == "auto" and plan.feeder is None and place is None)


def _resume(resume: Any, checkpoint: Any, model: Callable, data: Any, settings: dict,
            model_kwargs: Any, optimizer: Any, method: Any, guide: Any) -> Fit | None:
    """The checkpointed fit to continue (checked against this call's settings), or None."""
    where = checkpoint if resume is True else resume
    if where is None:
        raise ValueError("resume=True needs checkpoint=path (or pass the file as resume=path)")
    path = Path(where)
    if not path.exists():
        return None
    loaded = load(path, model, data, model_kwargs=model_kwargs,
                  optimizer=None if isinstance(optimizer, str) else optimizer,
                  method=method if isinstance(method, Family) else None, guide=guide)
    _checkpoint.check_resume_settings(path, loaded, {k: v for k, v in settings.items() if k != "progress"})
    loaded.settings["progress"] = settings["progress"]
    return loaded


def _init_fit(name: str, model: Callable, data: Any, model_kwargs: Any, start: Any, seed: int,
              progress: bool) -> Fit:
    """``init="pathfinder"`` (or another direct method): its fit on all rows, to start from."""
    if not is_direct(name):
        known = sorted(k for k in FAMILIES if is_direct(k))
        raise ValueError(f"init={name!r}: a method name given to init= must be a direct method, one "
                         f"of {known}; pass a Fit to start from another method's answer")
    if isinstance(data, Source):
        raise DataError(f"init={name!r} needs all rows in memory, but the data is a streaming source; "
                        f"fit {name!r} on an in-memory subset and pass that fit as init=")
    return _fit(model, data, method=name, seed=seed, progress=progress, model_kwargs=model_kwargs,
                start=start)


@exclusive
def load(
    path: str | os.PathLike,
    model: Callable,
    data: Any = None,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    optimizer: Any = None,
    method: Any = None,
    guide: Callable | None = None,
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
    guide : callable, optional
        Needed when the fit used ``guide=`` (the guide is code, which is not stored).
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
        The file is corrupt, holds a metadata field that this library does not write or of the
        wrong type (named in the message), or the model, data or settings do not match it.

    Notes
    -----
    The file is untrusted input: loading reads that one file and nothing else, never writes,
    and passes to ``fit`` only the settings it knows (see ``docs/reliability.md``).

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
    kwargs, mk = _checkpoint.fit_arguments(path, meta, arrays, optimizer=optimizer, method=method,
                                           guide=guide, model_kwargs=model_kwargs)
    given = _checkpoint.data_signature_of(data)
    if given is not None:
        _checkpoint.check_data(path, meta["data"], given, check_data)
    try:
        new = _fit(model, data, steps=0, model_kwargs=mk, **kwargs)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: the fit could not be rebuilt from the model and data given "
                              f"({type(e).__name__}: {e})") from e
    if given is not None:
        new._data_signature = given
    return _checkpoint.restore(path, meta, arrays, new)


# the words a misspelt keyword is matched against: fit's keywords and those that moved
_FIT_ARGUMENTS = sorted((set(inspect.signature(fit).parameters) - {"options", "model", "data"})
                        | set(_options.MOVED))
