"""The settings of a fit as values: small frozen dataclasses that group ``vi.fit``'s knobs.

``vi.fit`` keeps a dozen keywords; each of the rest has a home in one of these objects
(:class:`Objective`, :class:`StepSize`, :class:`Batches`, :class:`Stop`, :class:`Checkpoint`,
:class:`Start`), passed where its shorthand goes (``objective=``, ``learning_rate=``,
``batch_size=``, ``stop=``, ``checkpoint=``, ``init=``). They check their fields when made
and are hashable (a list of devices becomes a tuple), so that equal settings are equal keys of
the compile layer. :class:`Start` holds arrays and is hashed by identity.

:data:`MOVED` says where each earlier keyword of ``vi.fit`` went; :func:`resolve` turns the
call's keywords (shorthands, objects and moved keywords) into the flat settings the engine reads.

May import: :mod:`variational.errors`, :mod:`.control` (its default budget).
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..errors import user_stacklevel, whole_number
from .control import DEFAULT_MAX_STEPS

__all__ = ["Objective", "StepSize", "Batches", "Stop", "Checkpoint", "Start", "Amortised", "MOVED", "resolve",
           "unknown_keyword", "DEFAULT_MAX_STEPS"]


@dataclass(frozen=True)
class Objective:
    """What the optimiser maximises, and how its gradient is estimated (``vi.fit(objective=)``).

    Parameters
    ----------
    kind : {"elbo", "renyi", "meanfield_elbo"}
        The ELBO; the Renyi bound of order ``alpha`` (needs ``num_particles >= 2``); the ELBO
        with closed-form KL terms where the priors allow (``method="advi"``).
    num_particles : int
        Draws of q per step in the estimate.
    stl : bool
        The sticking-the-landing gradient estimator.
    alpha : float, optional
        Order of the Renyi bound (default 0, the importance-weighted bound).
    kl_weight : float
        Weight of ``KL(q || prior)`` against the expected log-likelihood (the beta-ELBO).
    score_function : bool
        With ``guide=``: accept discrete latent sites that cannot be summed out, with the
        score-function term for guide sites without a reparameterised sampler.

    Examples
    --------
    >>> import variational as vi
    >>> vi.Objective(num_particles=4, stl=True) == vi.Objective("elbo", 4, True)
    True
    """

    kind: str = "elbo"
    num_particles: int = 1
    stl: bool = False
    alpha: float | None = None
    kl_weight: float = 1.0
    score_function: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_particles", whole_number("num_particles", self.num_particles, 1))
        object.__setattr__(self, "stl", bool(self.stl))
        object.__setattr__(self, "score_function", bool(self.score_function))
        object.__setattr__(self, "kl_weight", float(self.kl_weight))
        if self.alpha is not None:
            object.__setattr__(self, "alpha", float(self.alpha))


@dataclass(frozen=True)
class StepSize:
    """The optimiser's step size and its schedule (``vi.fit(learning_rate=)``).

    Parameters
    ----------
    learning_rate : float, "auto" or None
        A number is used as given; ``None`` or ``"auto"``: chosen by a short trial of a grid.
    schedule : {"adaptive", "constant"} or None
        ``"adaptive"`` lowers the step once the iterates are stationary and reports their
        average; ``"constant"`` reports the last iterate. ``None``: adaptive when the step size
        is chosen, constant when given.

    Examples
    --------
    >>> import variational as vi
    >>> vi.StepSize(0.01, schedule="adaptive").schedule
    'adaptive'
    """

    learning_rate: float | str | None = None
    schedule: str | None = None

    def __post_init__(self) -> None:
        if self.schedule not in (None, "adaptive", "constant"):
            raise ValueError(f"StepSize(schedule={self.schedule!r}): use 'adaptive' (lower the step once "
                             f"the iterates are stationary, report their average), 'constant' or None")


@dataclass(frozen=True)
class Batches:
    """Minibatches, the devices they are split across, and how the rows' own latent variables
    are held (``vi.fit(batch_size=)``).

    Parameters
    ----------
    size : int, optional
        Rows per step (all rows when absent; a model that subsamples itself sets its own).
    replace : bool
        Draw each batch's rows with replacement (default: a fresh permutation each epoch).
    devices : "all" or sequence of jax devices, optional
        Split each batch across these devices (``size`` must divide evenly).
    local : Amortised, optional
        Latent sites in the plate over the data rows get their q from an encoder of each row's
        data (:class:`Amortised`) instead of parameters for each row (``docs/local_latents.md``).

    Examples
    --------
    >>> import variational as vi
    >>> vi.Batches(64, replace=True)
    Batches(size=64, replace=True, devices=None, local=None)
    """

    size: int | None = None
    replace: bool = False
    devices: Any = None
    local: Any = None

    def __post_init__(self) -> None:
        # (the size is checked against the rows of the data when the fit plans them)
        object.__setattr__(self, "replace", bool(self.replace))
        if isinstance(self.devices, list):
            object.__setattr__(self, "devices", tuple(self.devices))


@dataclass(frozen=True)
class Stop:
    """The budget of a fit run until convergence (``vi.fit(stop=)``, with ``steps=None``).

    Parameters
    ----------
    max_steps : int
        Most steps.
    max_seconds : float, optional
        Most seconds of optimisation (step-size trials and compilation not counted).

    Examples
    --------
    >>> import variational as vi
    >>> vi.Stop(max_steps=2e4).max_steps
    20000
    """

    max_steps: int = DEFAULT_MAX_STEPS
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_steps", whole_number("max_steps", self.max_steps, 1))
        if self.max_seconds is not None:
            if not float(self.max_seconds) > 0:
                raise ValueError(f"Stop(max_seconds={self.max_seconds!r}) must be a positive number")
            object.__setattr__(self, "max_seconds", float(self.max_seconds))


@dataclass(frozen=True)
class Checkpoint:
    """Where and how often a fit is saved, and whether it continues a saved run (``checkpoint=``).

    Parameters
    ----------
    path : str or Path, optional
        The file, written atomically every ``every`` steps and at the end (also when interrupted).
    every : int, optional
        Steps between saves (only the final save when absent).
    resume : bool or str or Path
        ``True``: continue from ``path`` when it exists; a path: continue from that file.

    Examples
    --------
    >>> import variational as vi
    >>> vi.Checkpoint("fit.npz", every=500, resume=True).every
    500
    """

    path: Any = None
    every: int | None = None
    resume: Any = False

    def __post_init__(self) -> None:
        if self.every is not None:
            if self.path is None:
                raise ValueError("Checkpoint(every=...) needs path=, the file to write")
            object.__setattr__(self, "every", whole_number("checkpoint_every", self.every, 1))


@dataclass(frozen=True, eq=False)
class Start:
    """Where the optimisation starts (``vi.fit(init=)``); hashed by identity (it holds arrays).

    Parameters
    ----------
    fit : Fit or str, optional
        An earlier fit of the same model, or a direct method's name (``"pathfinder"``...) run first.
    values : mapping, optional
        Initial values of some latent sites (constrained space).
    params : mapping, optional
        Initial values of the family's parameters by name, as ``fit.params`` shows them.

    Examples
    --------
    >>> import variational as vi
    >>> vi.Start(values={"mu": 1.0}).values
    {'mu': 1.0}
    """

    fit: Any = None
    values: Mapping[str, Any] | None = None
    params: Mapping[str, Any] | None = None


@dataclass(frozen=True, eq=False)
class Amortised:
    """Local latent variables through an encoder (``vi.fit(batch_size=vi.Batches(size, local=))``).

    Instead of parameters for each data row, a network maps a row's data (its columns, observed
    and covariates) to that row's ``q(z_i | g)``: a mean and a log-sd per local coordinate and,
    with at most 16 global coordinates, the map from the globals. New rows get a posterior
    (``fit.local_posterior(data)``, ``fit.predict(data)``). Hashed by identity (it may hold a
    module). See ``docs/local_latents.md``.

    Parameters
    ----------
    encoder : flax (linen or nnx) or equinox module, optional
        Maps the rows' inputs ``(B, F)`` to features ``(B, H)`` (an equinox module maps one row
        ``(F,)`` to ``(H,)``); a linear head from the features and from the inputs themselves
        gives q. Default: a small multilayer perceptron in plain JAX with ``hidden`` units.
    hidden : tuple of int
        Hidden layer sizes (tanh) of the default encoder; ``()`` is a linear encoder.
    inputs : tuple of str, optional
        The data columns the encoder reads (default: every column of the data).

    Examples
    --------
    >>> import variational as vi
    >>> vi.Amortised(hidden=(16,), inputs=("y",)).hidden
    (16,)
    """

    encoder: Any = None
    hidden: tuple[int, ...] = (32,)
    inputs: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        hidden = tuple(self.hidden)
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"Amortised(hidden={self.hidden!r}): give positive whole numbers of units, "
                             f"for example hidden=(32,), or hidden=() for a linear encoder")
        object.__setattr__(self, "hidden", hidden)
        if self.inputs is not None:
            inputs = (self.inputs,) if isinstance(self.inputs, str) else tuple(self.inputs)
            object.__setattr__(self, "inputs", inputs)


# earlier keyword of vi.fit -> (its home: the keyword that takes the object, the class, the field)
MOVED: dict[str, tuple[str, type, str]] = {
    "num_particles": ("objective", Objective, "num_particles"),
    "stl": ("objective", Objective, "stl"),
    "alpha": ("objective", Objective, "alpha"),
    "kl_weight": ("objective", Objective, "kl_weight"),
    "score_function": ("objective", Objective, "score_function"),
    "schedule": ("learning_rate", StepSize, "schedule"),
    "replace": ("batch_size", Batches, "replace"),
    "devices": ("batch_size", Batches, "devices"),
    "max_steps": ("stop", Stop, "max_steps"),
    "max_seconds": ("stop", Stop, "max_seconds"),
    "checkpoint_every": ("checkpoint", Checkpoint, "every"),
    "resume": ("checkpoint", Checkpoint, "resume"),
    "start": ("init", Start, "values"),
    "init_params": ("init", Start, "params"),
}
# the shorthand each home keyword takes, as the object's field
_SHORTHAND = {"objective": (Objective, "kind"), "learning_rate": (StepSize, "learning_rate"),
              "batch_size": (Batches, "size"), "stop": (Stop, None), "checkpoint": (Checkpoint, "path"),
              "init": (Start, "fit")}


def _home(keyword: str, value: Any) -> tuple[Any, bool]:
    """The object that ``keyword=value`` stands for, and whether the user gave the object itself."""
    cls, field = _SHORTHAND[keyword]
    if isinstance(value, cls):
        return value, True
    if field is None:  # stop= takes only its object
        if value is not None:
            raise TypeError(f"stop={value!r}: give vi.Stop(max_steps=..., max_seconds=...), or "
                            f"steps= for a fixed number of steps")
        return cls(), False
    return (cls() if value is None else cls(**{field: value})), False


def resolve(homes: Mapping[str, Any], options: dict) -> tuple[dict, dict]:
    """The flat settings of a fit from its option objects, shorthands and moved keywords.

    ``homes`` are the values of ``vi.fit``'s keywords ``objective``, ``learning_rate``,
    ``batch_size``, ``stop``, ``checkpoint`` and ``init``; ``options`` the other keywords, of
    which those in :data:`MOVED` are taken out (with a ``FutureWarning`` naming their new home,
    at the user's line that led to the call: through ``vi.vsbc`` too). Returns ``(settings, family_options)``: the settings by their
    earlier keyword names, and what is left for the method.

    Examples
    --------
    >>> flat, rest = resolve({"objective": Objective(num_particles=4)}, {"init_scale": 0.1})
    >>> flat["num_particles"], flat["objective"], rest
    (4, 'elbo', {'init_scale': 0.1})
    """
    objects = {k: _home(k, homes.get(k)) for k in _SHORTHAND}
    rest = dict(options)
    for name in [k for k in options if k in MOVED]:
        home, cls, field = MOVED[name]
        value = rest.pop(name)
        obj, given = objects[home]
        if given and getattr(obj, field) != getattr(cls(), field):
            raise TypeError(f"vi.fit() got {name}= and {home}={obj!r}, which sets {field} too; give it once, "
                            f"in {home}=vi.{cls.__name__}({field}=...)")
        warnings.warn(f"vi.fit({name}=...) is deprecated and will be removed in the next release: write "
                      f"{home}=vi.{cls.__name__}({field}=...)", FutureWarning, stacklevel=user_stacklevel())
        objects[home] = (dataclasses.replace(obj, **{field: value}), given)
    o, s, b, st, c, i = (objects[k][0] for k in ("objective", "learning_rate", "batch_size", "stop",
                                                 "checkpoint", "init"))
    flat = dict(objective=o.kind, num_particles=o.num_particles, stl=o.stl, alpha=o.alpha,
                kl_weight=o.kl_weight, score_function=o.score_function, learning_rate=s.learning_rate,
                schedule=s.schedule, batch_size=b.size, replace=b.replace, devices=b.devices, local=b.local,
                max_steps=st.max_steps, max_seconds=st.max_seconds, checkpoint=c.path,
                checkpoint_every=c.every, resume=c.resume, init=i.fit, start=i.values, init_params=i.params)
    return flat, rest


def unknown_keyword(name: str, known: Iterable[str]) -> str:
    """The hint for a keyword that nothing takes: the nearest known word, ignoring case.

    Examples
    --------
    >>> unknown_keyword("Steps", ["steps", "seed"])
    " (did you mean 'steps'?)"
    >>> unknown_keyword("max_step", ["steps", "max_steps"])
    " (did you mean 'max_steps'? it moved to stop=vi.Stop(max_steps=...))"
    """
    by_lower = {k.lower(): k for k in sorted(known)}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    if not close:
        return ""
    word = by_lower[close[0]]
    if word in MOVED:
        home, cls, field = MOVED[word]
        return f" (did you mean {word!r}? it moved to {home}=vi.{cls.__name__}({field}=...))"
    return f" (did you mean {word!r}?)"
