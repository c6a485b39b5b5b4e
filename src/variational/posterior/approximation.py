"""The fitted approximation as a value: what every answer of a fit is a function of.

An :class:`Approximation` holds the model as a log density, the family, the reported
parameters, the fit's key and the data it was fitted to; it never changes. Its methods are
pure: :meth:`~Approximation.draw` (``n`` draws of q in the unconstrained space, one compiled
program per model program, family and ``n``), :meth:`~Approximation.constrain` (flat draws ->
named values in the model's space) and :meth:`~Approximation.log_q`. Predictions
(:mod:`.predictive`), the diagnosis (:mod:`.diagnostics`) and export (:mod:`.export`) are
functions of it; :class:`~variational.Fit` builds one for its current state
(``fit.approximation``) and keeps the caches, the key counter and the user's methods.

This is the bottom of the posterior layer: it imports no other module of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import jax
import numpy as np

from ..compilation import freeze, run_traced
from ..data.plan import Plan
from ..engine.model_params import MODEL
from ..errors import DataError
from ..families.base import Family
from ..model import RNG_KEY, LogDensity
from ..model.params import PARAMS

__all__ = ["Approximation"]


@dataclass(frozen=True, eq=False)
class Approximation:
    """A fitted q with its model and data; the answers of a fit are functions of it.

    Attributes
    ----------
    logdensity : LogDensity
        The model as a log density, with the model's own parameters (if any) at their fitted
        values (what ``fit.logdensity`` gives).
    raw_logdensity : LogDensity
        The same before binding the model's parameters (they are inputs of its programs).
    family : Family
        The variational family.
    params : pytree
        The family's raw parameters of the reported answer (with the adaptive schedule, the
        average of iterates).
    key : jax.Array
        The fit's key; the fixed draws of summaries fold in from it.
    data : mapping
        The training columns on the device (empty when the fit streamed its data).
    model_kwargs : mapping
        The model's other keyword arguments.
    family_key : hashable, optional
        The family's compile key (programs are shared by the fits of one key).
    plan : Plan, optional
        The data plan of a minibatch or streamed fit.
    categories : mapping
        Categorical data column -> its categories.
    programs : dict
        Compiled functions of this fit's answers, kept by the fit across its approximations.

    Examples
    --------
    >>> import jax
    >>> import variational as vi
    >>> def model():
    ...     vi.Normal("x", 3.0, 1.0)
    >>> q = vi.fit(model, steps=2000, learning_rate=0.05, progress=False).approximation
    >>> z = q.draw(jax.random.PRNGKey(0), 4000)
    >>> z.shape, round(float(q.constrain(z)["x"].mean()))
    ((4000, 1), 3)
    """

    logdensity: LogDensity
    raw_logdensity: LogDensity
    family: Family
    params: Any
    key: jax.Array
    data: Mapping[str, Any]
    model_kwargs: Mapping[str, Any]
    family_key: Any = None
    plan: Plan | None = None
    categories: Mapping[str, list] = field(default_factory=dict)
    programs: dict = field(default_factory=dict, repr=False)

    # -- the data -------------------------------------------------------------------------------
    @property
    def model(self) -> Callable:
        """The model function."""
        return self.logdensity.model

    @property
    def streamed(self) -> bool:
        """Whether the fit read its rows from a streaming source (they are not in memory)."""
        return self.plan is not None and self.plan.feeder is not None

    def training_data(self) -> dict:
        """The fit's data columns in memory; a clear error for a fit that streamed its data."""
        if self.streamed:
            raise DataError("this fit streamed its data, so the rows are not in memory; pass the "
                            "rows to use as data= (for example a sample of them)")
        return dict(self.data)

    def trace_data(self) -> dict:
        """The rows the model is traced with: all of them, or one batch of a minibatch fit."""
        return dict(self.data if self.plan is None else self.plan.trace_data)

    # -- q ----------------------------------------------------------------------------------------
    @property
    def has_density(self) -> bool:
        """Whether q has a density (particle methods and empirical draws have none)."""
        return self.family.particles is None

    def compile_key(self) -> Any:
        """The family's compile key (the family object itself when the fit gave none)."""
        return self.family_key if self.family_key is not None else freeze(self.family)

    def draws_program(self, n: int, key: jax.Array) -> tuple[Any, ...]:
        """The program of :meth:`draw`: its kind, its function and its arguments (for
        :func:`variational.compilation.run_traced`, which finds it by its own trace)."""
        family = self.family
        return "draws", lambda p, k: family.draw(p, k, n), self.params, key

    def draw(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` draws of q in the flat unconstrained space, shape ``(n, D)``."""
        return run_traced(*self.draws_program(int(n), key))

    def log_q(self, z: jax.Array) -> jax.Array | None:
        """The log density of flat draws ``z`` under q (None when the family gives none)."""
        return None if self.family.log_q is None else self.family.log_q(self.params, z)

    def draws_and_log_q(self, key: jax.Array, n: int) -> tuple[jax.Array, Any]:
        """``n`` draws with their log density under q (None when q has no density)."""
        if not self.has_density:
            return self.draw(key, n), None
        if self.family.sample is None:   # draw() gives sample_and_log_q's own draws
            return self.family.sample_and_log_q(self.params, key, n)
        z = self.draw(key, n)
        return z, self.log_q(z)

    def named(self, flat: jax.Array) -> dict[str, np.ndarray]:
        """A flat unconstrained vector ``(D,)`` -> name -> its values, per site."""
        return {k: np.asarray(v) for k, v in self.logdensity.unravel(flat).items()}

    # -- the model's space ---------------------------------------------------------------------------
    def model_batch(self, data: Any = None) -> dict:
        """The data the model sees (the rows it was traced with, or ``data``), with the fitted
        values of the model's own parameters."""
        batch = self.trace_data() if data is None else dict(data)
        if self.raw_logdensity.params:
            batch[PARAMS] = self.params[MODEL]
        return batch

    def constrain_program(self, z: Any, key: jax.Array | None = None) -> tuple[Any, ...]:
        """The program of :meth:`constrain` for draws like ``z``: its kind, its function and its
        arguments (for :func:`variational.compilation.run_traced`)."""
        ld = self.raw_logdensity
        one = lambda zz, kk, batch: ld.constrain(zz, batch if kk is None else {**batch, RNG_KEY: kk})  # noqa: E731
        keys = None
        if ld.enumerated:
            key = jax.random.fold_in(self.key, 2**23) if key is None else key
            keys = jax.random.split(key, z.shape[0])
        return "constrain", jax.vmap(one, in_axes=(0, 0, None)), z, keys, self.model_batch()

    def constrain(self, z: jax.Array, key: jax.Array | None = None) -> dict[str, np.ndarray]:
        """Flat draws ``(n, D)`` -> name -> values in the model's space ``(n, ...)``.

        Deterministic sites are included, with the model's parameters at their fitted values;
        each enumerated discrete site is drawn from its exact conditional posterior given the
        draw (from ``key``). Per-row deterministic sites of a minibatch fit are left out.
        """
        drop = () if self.plan is None else self.plan.per_row
        found = run_traced(*self.constrain_program(z, key), lift=self.raw_logdensity.lift)
        return {k: np.asarray(v) for k, v in found.items() if k not in drop}
