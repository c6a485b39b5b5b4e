"""The fit's approximation and its summaries: moments, marginals, discrete probabilities.

:class:`FitSummaries` is the base of :class:`~variational.Fit`: a
:class:`~variational.engine.run.Run` that builds the :class:`~.approximation.Approximation` of
its current state (``fit.approximation``), keeps the caches of its summaries (cleared when the
state changes) and the counter of the keys of successive draws.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from ..compilation import key_of, measured, run_traced
from ..engine.run import Run
from ..model.threads import exclusive_methods
from .approximation import Approximation
from .diagnostics import mcse
from .discrete import discrete_probs
from .marginals import marginal_quantiles

__all__ = ["FitSummaries"]


# every answer that may trace or run the model's Python code holds the model lock (model/threads.py)
@exclusive_methods("flat_moments", "_moment_draws", "discrete_probs", "quantiles")
class FitSummaries(Run):
    """A run with the approximation of its current state and its summaries (see :class:`~variational.Fit`)."""

    def __init__(self, *args: Any, family_key: Any = None, categories: Mapping[str, list] | None = None,
                 plan: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.family_key = family_key            # the family's compile key (None: the family itself)
        self.categories = dict(categories or {})
        self._programs: dict = {}               # compiled functions of the answers (predictive)
        if plan is not None and plan.batch_size is not None:
            self._use_plan(plan)

    @property
    def approximation(self) -> Approximation:
        """The fitted approximation of the current state, as a value (see
        :class:`~variational.posterior.approximation.Approximation`)."""
        key = ("approximation", self.steps)
        if key not in self._cache:
            # a model with parameters: its compiled answers hold them, so they go with the state
            programs = self._cache.setdefault("programs", {}) if self._logdensity.params else self._programs
            self._cache[key] = Approximation(
                logdensity=self.logdensity, raw_logdensity=self._logdensity, family=self.family,
                params=self._answer_params, key=self.key, data=self.data, model_kwargs=self.model_kwargs,
                family_key=self.family_key, plan=self._plan, categories=self.categories, programs=programs)
        return self._cache[key]

    # -- unconstrained summaries ---------------------------------------------------------------
    def flat_moments(self) -> tuple[jax.Array, jax.Array]:
        """Mean and standard deviation of q per coordinate of the flat unconstrained space
        (exact for families that give them, else from 4000 fixed draws)."""
        key = ("flat_moments", self.steps)
        if key not in self._cache:
            q = self.approximation
            fam, p = q.family, q.params
            if fam.mean is not None and fam.std is not None:
                m, s = run_traced("moments", lambda q: (fam.mean(q), fam.std(q)), p)   # (one program)
            else:
                z = q.draw(jax.random.fold_in(self.key, 2**20), 4000)
                m, s = z.mean(0), z.std(0)
            self._cache[key] = (m, s)
        return self._cache[key]

    @property
    def unconstrained_mean(self) -> dict[str, np.ndarray]:
        """Mean of q in the unconstrained space, per site."""
        return self.approximation.named(self.flat_moments()[0])

    @property
    def unconstrained_std(self) -> dict[str, np.ndarray]:
        """Standard deviation of q in the unconstrained space, per site."""
        return self.approximation.named(self.flat_moments()[1])

    @property
    def cov(self) -> np.ndarray:
        """Covariance of q in the flat unconstrained space, ``(D, D)``; see ``logdensity.layout``."""
        q = self.approximation
        if q.family.cov is not None:
            return np.asarray(q.family.cov(q.params))
        z = q.draw(jax.random.fold_in(self.key, 2**20), 4000)
        return np.cov(np.asarray(z), rowvar=False).reshape(self.logdensity.dim, self.logdensity.dim)

    @property
    def mcse(self) -> dict[str, np.ndarray]:
        """Monte Carlo standard error of DADVI's means per site (see :func:`.diagnostics.mcse`)."""
        return mcse(self.approximation, self.solution)

    # -- draws ---------------------------------------------------------------------------------
    def _next_key(self, seed: int | None) -> jax.Array:
        if seed is not None:
            return key_of(seed)
        self._draw_counter += 1
        return jax.random.fold_in(jax.random.fold_in(self.key, 2**21), self._draw_counter)

    def _moment_draws(self) -> dict[str, np.ndarray]:
        key = ("moment_draws", self.steps)
        if key not in self._cache:
            q = self.approximation
            if q.family.particles is not None:  # an empirical family: its particles, exactly
                z = q.family.particles(q.params)
            else:
                z = q.draw(jax.random.fold_in(self.key, 2**22), 4000)
            self._cache[key] = q.constrain(z)
        return self._cache[key]

    @property
    @measured("draws")
    def mean(self) -> dict[str, np.ndarray]:
        """Posterior means in the constrained space (from 4000 draws), per site."""
        return {k: v.mean(0) for k, v in self._moment_draws().items()}

    @property
    @measured("draws")
    def std(self) -> dict[str, np.ndarray]:
        """Posterior standard deviations in the constrained space (from 4000 draws), per site."""
        return {k: v.std(0) for k, v in self._moment_draws().items()}

    # -- marginals -------------------------------------------------------------------------------
    @property
    def median(self) -> dict[str, np.ndarray]:
        """Marginal medians in the constrained space, per site (see :meth:`quantiles`)."""
        return self.quantiles(0.5)

    def quantiles(self, q: Any) -> dict[str, np.ndarray]:
        """Marginal quantiles (constrained space) per site: ``{name: (len(q), *shape)}``.

        Exact for Gaussian families at sites with an elementwise bijection; else from the 4000
        summary draws (particles exactly). See :mod:`variational.posterior.marginals`.

        Examples
        --------
        >>> import variational as vi
        >>> def model():
        ...     vi.Normal("x", 1.0, 0.5)
        >>> fit = vi.fit(model, steps=3000, objective=vi.Objective(stl=True), learning_rate=0.05, progress=False)
        >>> [round(float(v), 1) for v in fit.quantiles([0.05, 0.95])["x"]]       # 1 -/+ 1.645 * 0.5
        [0.2, 1.8]
        """
        a = self.approximation
        return marginal_quantiles(a.logdensity, a.family, a.params, q, self._moment_draws, self._cache)

    def discrete_probs(self, n: int = 1000, seed: int | None = None, *, data: Any = None) -> dict[str, np.ndarray]:
        """Posterior probabilities of the values of each enumerated discrete site.

        The exact conditional probabilities ``p(z_i = k | x, draw)`` (one backward pass of the
        enumeration) averaged over ``n`` draws of q (``seed``), on the training rows or
        ``data``. Returns site name -> array ``(*site_shape, K)`` over the K values.

        Examples
        --------
        >>> import numpy as np, numpyro, numpyro.distributions as dist
        >>> import variational as vi
        >>> def mixture(y):
        ...     mu = vi.Normal("mu", 0.0, 5.0, shape=2)
        ...     with numpyro.plate("rows", len(y)):
        ...         z = numpyro.sample("z", dist.Categorical(np.array([0.5, 0.5])),
        ...                            infer={"enumerate": "parallel"})
        ...         numpyro.sample("y", dist.Normal(mu[z], 1.0), obs=y)
        >>> fit = vi.fit(mixture, {"y": np.array([-3.0, -3.1, 3.0])}, steps=500,
        ...              init=vi.Start(values={"mu": np.array([-1.0, 1.0])}), learning_rate=0.05, progress=False)
        >>> fit.discrete_probs(100)["z"].round(2)
        array([[1., 0.],
               [1., 0.],
               [0., 1.]], dtype=float32)
        """
        return discrete_probs(self.approximation, n, self._next_key(seed), data)

