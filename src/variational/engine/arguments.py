"""Checks of ``vi.fit``'s arguments, made before anything is traced or run.

A number of steps must be a whole number (``steps=10.7`` is refused, not run as 10; see
:func:`variational.errors.whole_number`), an option
the method does not take is a misspelt argument (named, with the nearest known word), and a
checkpoint path must be writable before the fit starts (see
:func:`variational.engine.checkpoint.check_target`).

The data plan of a fit (one process or several) is made here too.

May import: :mod:`variational.data`, :mod:`variational.families`, :mod:`.checkpoint`,
:mod:`.devices`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from ..data import plan as _plan
from ..errors import VariationalError, whole_number
from ..families import default_family, find_chains, guide_family, make_family
from ..families.base import Family, method_options
from . import devices as _devices
from .checkpoint import check_target
from .options import unknown_keyword

__all__ = ["whole_number", "check_arguments", "check_method_options", "family_options", "plan_data",
           "build_family", "auto_options", "auto_stl", "auto_settings"]


def check_arguments(steps: Any, num_particles: Any, checkpoint: Any, checkpoint_every: Any,
                    max_steps: Any) -> tuple[int | None, int]:
    """``(steps, num_particles)`` as ints after checking the counts and the checkpoint path.

    Examples
    --------
    >>> check_arguments(1e3, 1, None, None, 10_000)
    (1000, 1)
    """
    steps = None if steps is None else whole_number("steps", steps)
    if steps is None:
        whole_number("max_steps", max_steps, 1)
    if checkpoint_every is not None:
        if checkpoint is None:
            raise ValueError("Checkpoint(every=...) needs the file to write: checkpoint=vi.Checkpoint(path, every=...)")
        whole_number("checkpoint_every", checkpoint_every, 1)
    if checkpoint is not None:
        check_target(checkpoint)  # a folder, or no permission: say so before running
    return steps, whole_number("num_particles", num_particles, 1)


def check_method_options(method: Any, guide: Any, options: Mapping[str, Any], arguments: Iterable[str]) -> None:
    """An option the method does not take is a misspelt argument: name it, suggest the nearest.

    ``arguments`` are the other keyword arguments of the call (``vi.fit``'s parameters).

    Examples
    --------
    >>> check_method_options("advi", None, {"init_scale": 0.1}, ["steps"])
    >>> check_method_options("advi", None, {"n_steps": 5}, ["steps"])
    Traceback (most recent call last):
    ...
    TypeError: vi.fit() got an unexpected keyword argument 'n_steps' (did you mean 'steps'?); method 'advi' takes the options ['init_scale']
    """
    if guide is not None or not options:
        return  # guide= with options is refused with its own message
    # ("auto" builds a mean-field or full-rank Gaussian: their options are the same)
    known = set() if isinstance(method, Family) else method_options("advi" if method == "auto" else method)
    if known is None:
        return  # an unknown method: make_family lists the known ones
    unknown = [k for k in options if k not in known]
    if unknown:
        hint = unknown_keyword(unknown[0], set(arguments) | known)
        name = method.name if isinstance(method, Family) else method
        raise TypeError(f"vi.fit() got an unexpected keyword argument {unknown[0]!r}{hint}; method "
                        f"{name!r} takes the options {sorted(known) if known else 'none'}")


def family_options(method: Any, options: dict, steps: Any) -> dict:
    """The options the family of ``method`` is built with: ``asvgd``'s schedule spans the fit.

    Examples
    --------
    >>> family_options("asvgd", {}, 300)
    {'anneal_steps': 300}
    """
    if method == "asvgd" and "anneal_steps" not in options and steps is not None:
        return {**options, "anneal_steps": max(int(steps), 1)}   # the schedule spans the fit
    return options


def plan_data(model: Callable, data: Any, batch_size: Any, replace: bool, model_kwargs: Any,
              seed: int, place: Any) -> _plan.Plan:
    """The data plan of a fit: this process's shards across processes, else all of ``data``."""
    if place is not None and place.multiprocess:
        return _devices.multiprocess_plan(model, data, batch_size, model_kwargs, seed)
    return _plan.plan(model, data, batch_size=batch_size, replace=replace,
                      model_kwargs=model_kwargs, seed=seed)


def build_family(method: Any, guide: Any, options: dict, stl: bool, ld: Any, plan: Any,
                 seed: int, score_function: bool = False, steps: Any = None) -> Family:
    """The family of a fit: ``method``'s (``"auto"``: :func:`~variational.families.default_family`
    of the model's layout; ``"structured"`` along the model's series) or ``guide``'s."""
    if guide is None:
        if score_function:
            raise VariationalError(
                "score_function=True needs guide=: a guide supplies the distribution of the "
                "discrete sites (the families of method= are continuous)")
        if method == "auto":
            name, chosen = default_family(ld.dim, ld.layout, ld.logp, ld.init, plan.trace_data)
            return make_family(name, **{**chosen, **options})
        if method == "structured" and "chains" not in options:   # the model's series
            options = {**options, "chains": find_chains(ld.layout, logp=ld.logp, at=ld.init, data=plan.trace_data)}
        return make_family(method, **family_options(method, options, steps))
    if method not in ("auto", "advi", "guide") or options or stl:
        raise VariationalError(
            f"guide= replaces method= (got {method!r}), method options (got {sorted(options)}) "
            f"and stl=; give either a guide or a method")
    return guide_family(guide, ld, plan.trace_data, seed=seed, score_function=score_function)


def auto_options(family: Family) -> dict:
    """The options ``method="auto"`` chose for ``family`` that the model does not determine (a
    saved fit rebuilds its family from them; the model's series are found again from the model).

    Examples
    --------
    >>> from variational.families import low_rank
    >>> auto_options(low_rank(rank=8))
    {'rank': 8}
    """
    return {"rank": family.options["rank"]} if family.name == "lowrank_advi" else {}


def auto_stl(family: Family, objective: str) -> bool:
    """Whether ``method="auto"`` draws its ELBO gradients with sticking-the-landing for ``family``.

    The structured family holds the exact posterior of a linear Gaussian state-space model;
    there the sticking-the-landing gradient vanishes, so a long series converges in a few
    thousand steps to sds within a few percent (``docs/families.md``), where the plain gradient
    leaves Monte Carlo noise of several percent in some of them.

    Examples
    --------
    >>> from variational.families import structured, full_rank
    >>> auto_stl(structured(), "elbo"), auto_stl(full_rank(), "elbo")
    (True, False)
    """
    return family.name == "structured" and objective == "elbo"


def auto_settings(family: Family, options: dict, settings: dict, stl: bool, objective: str) -> tuple[dict, bool]:
    """``(options, stl)`` of a fit whose family ``method="auto"`` chose; its choices go into
    ``settings`` too (a saved fit rebuilds the same family from them)."""
    settings.update(auto_options(family))
    return {**options, **auto_options(family)}, bool(stl) or auto_stl(family, objective)
