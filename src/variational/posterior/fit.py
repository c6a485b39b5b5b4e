"""The result object :class:`Fit`: one place to ask every question of a fitted approximation.

:class:`Fit` is a :class:`~variational.engine.run.Run` (the state, history and running of the
optimisation) that answers questions: draws, summaries, predictions, the diagnosis, export.
Each answer is a function of the fit's :class:`~.approximation.Approximation` (the value its
current state stands for, ``fit.approximation``) in a module below this one; ``Fit`` (with its
base :class:`~.summaries.FitSummaries`) keeps the caches and the counter of the keys of
successive draws, and delegates.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from ..compilation import key_of, measured
from ..engine.schedule import status
from ..errors import VariationalError, whole_number
from ..model.threads import exclusive_methods
from .diagnostics import check_draws, diagnose_fit, psis, resample
from .elbo import full_data_elbo
from .export import describe, summary_table, to_inference_data
from .marginals import transformed_draws
from .predictive import predict, predict_from_flat, sample_fn
from .summaries import FitSummaries

__all__ = ["Fit"]


# every answer that may trace or run the model's Python code holds the model lock (model/threads.py)
@exclusive_methods("sample", "sample_fn", "predict", "diagnose", "elbo", "to_arviz", "summary")
class Fit(FitSummaries):
    """A fitted variational approximation.

    Created by :func:`variational.fit`; not usually constructed by hand.

    Attributes
    ----------
    hist : numpy.ndarray
        Loss (negative ELBO estimate) at every step.
    skipped_steps : int
        Steps whose loss or gradient was not finite and that were therefore not applied.
    method : str
        The family or algorithm (``"advi"``, ``"fullrank_advi"``, ...).
    params : pytree
        The optimised variational parameters.
    logdensity : LogDensity
        The model as a log density (layout, constrain/unconstrain).
    interrupted, converged, message, notes
        Whether a callback or Ctrl-C stopped the fit early; whether a convergence rule fired
        (None when none was watching); what ended the last run; what the fit reported on the
        way (step-size choice, skipped steps, learning-rate reductions). See ``docs/control.md``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import variational as vi
    >>> def model(y):
    ...     mu = vi.Normal("mu", 0, 10)
    ...     vi.Normal("y", mu, 1, observed=y)
    >>> fit = vi.fit(model, {"y": jnp.full(400, 1.0)}, steps=5000, objective=vi.Objective(stl=True),
    ...              progress=False)
    >>> round(float(fit.mean["mu"]), 1), round(float(fit.std["mu"]), 2)   # exact: 1.0, 0.05
    (1.0, 0.05)
    """

    #: an amortised fit's draws for new rows, ``f(data, n, key)`` (see :meth:`local_posterior`)
    new_rows: Callable | None = None

    @measured("draws")
    def sample(self, n: int = 1000, seed: int | None = None, *, importance: bool = False,
               include_transformed: bool = False) -> dict[str, np.ndarray]:
        """Draws from the approximation in the model's own (constrained) space.

        Parameters
        ----------
        n : int
            Number of draws.
        seed : int, optional
            Seed of the draws. Without it each call draws afresh (deterministically from the
            fit's seed and the number of earlier calls).
        importance : bool
            Pareto-smoothed importance resampling: ``max(4000, 4 n)`` draws of q are weighted
            by ``p(x, z) / q(z)`` and ``n`` are resampled, which corrects the approximation
            when k-hat (see :meth:`diagnose`) is below 0.7; above it a warning is issued.
        include_transformed : bool
            Also return the unconstrained values under PyMC's names (``sigma_log__``...).

        Returns
        -------
        dict
            name -> array of shape ``(n, *site_shape)``, deterministic sites included.

        Examples
        --------
        >>> import variational as vi
        >>> def model():
        ...     vi.HalfNormal("s", 1.0)
        >>> fit = vi.fit(model, steps=500, progress=False)
        >>> bool((fit.sample(100, seed=1)["s"] > 0).all())
        True
        """
        n, q = whole_number("n", n, 1), self.approximation
        key = None if importance else self._next_key(seed)
        z = self._importance_draws(n, seed) if importance else q.draw(key, n)
        out = q.constrain(z, None if importance else jax.random.fold_in(key, 1))
        return {**out, **transformed_draws(self.logdensity, z)} if include_transformed else out

    def sample_fn(self, fn: Callable[[dict], Any], n: int = 1000, seed: int | None = None, *,
                  data: Any = None) -> Any:
        """Evaluate any function of the named parameters over ``n`` draws (vectorised, compiled).

        Parameters
        ----------
        fn : callable
            ``fn(params) -> array or pytree``; ``params`` maps site names (latent and
            deterministic) to the values of one draw. Write it with ``jax.numpy``.
        n : int
            Number of draws.
        seed : int, optional
            Seed of the draws; without it each call draws afresh.
        data : mapping, optional
            New data columns: deterministic (and predicted observed) sites are then
            recomputed on them, like ``sample_node(..., more_replacements=...)``.

        Returns
        -------
        numpy.ndarray or pytree
            ``fn``'s output with a leading axis of length ``n``.

        Examples
        --------
        >>> import variational as vi
        >>> def model():
        ...     vi.Normal("x", 1.0, 0.5)
        >>> fit = vi.fit(model, steps=5000, objective=vi.Objective(stl=True), progress=False)
        >>> x2 = fit.sample_fn(lambda p: p["x"] ** 2, 20000, seed=0)
        >>> abs(float(x2.mean()) - 1.25) < 0.05   # E[x^2] = mean^2 + sd^2
        True
        """
        n = whole_number("n", n, 1)
        return sample_fn(self.approximation, fn, self._next_key(seed), n, data)

    def predict(self, data: Any = None, n: int = 1000, seed: int | None = None, *,
                sites: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Posterior predictive draws of the observed (and deterministic) sites.

        Parameters
        ----------
        data : mapping or DataFrame, optional
            ``None``: the training data. New covariates give predictions with their number of
            rows; training columns missing from ``data`` are passed to the model as ``None``.
        n : int
            Number of draws.
        seed : int, optional
            Seed; without it each call draws afresh.
        sites : sequence of str, optional
            Sites to return.

        Returns
        -------
        dict
            Site name -> predictive draws, shape ``(n, *site_shape)``.

        Examples
        --------
        >>> import numpy as np
        >>> import variational as vi
        >>> def line(x, y=None):
        ...     slope = vi.Normal("slope", 0, 1)
        ...     vi.Normal("y", slope * x, 1.0, observed=y)
        >>> data = {"x": np.arange(5.0), "y": np.arange(5.0)}
        >>> fit = vi.fit(line, data, steps=500, progress=False)
        >>> fit.predict({"x": np.ones(2)}, n=10)["y"].shape
        (10, 2)
        """
        n = whole_number("n", n, 1)
        if data is not None and self.new_rows is not None:   # new rows through the encoder
            key = self._next_key(seed)
            latent = {k: jax.numpy.asarray(v) for k, v in self.new_rows(data, n, key).items()}
            return predict_from_flat(self.approximation, None, jax.random.fold_in(key, 1), data, sites, latent,
                                     self.model)
        return predict(self.approximation, self._next_key(seed), data, n, sites)

    def save(self, path: Any) -> Any:
        """Save the fit to one ``.npz`` file (atomically); :func:`variational.load` reads it back.

        Stores parameters, optimiser state, loss history, random key and settings (no code); an
        amortised fit is refused (its encoder is code, and a reload could not rebuild it).

        Examples
        --------
        >>> import pathlib, tempfile
        >>> import variational as vi
        >>> normal = lambda: vi.Normal("w", 1, 2)   # noqa: E731
        >>> where = pathlib.Path(tempfile.mkdtemp()) / "normal.npz"
        >>> vi.fit(normal, steps=20, progress=False).save(where) is not None
        True
        >>> vi.load(where, normal).steps
        20
        """
        if self.new_rows is not None:
            raise VariationalError("an amortised fit (vi.Batches(local=vi.Amortised(...))) cannot be saved yet: its encoder is "
                                   "code, which a saved fit does not hold; keep the fit in memory, or fit with "
                                   "per-row parameters (no local=) to save it")
        return super().save(path)

    def local_posterior(self, data: Any, n: int = 1000, seed: int | None = None) -> dict[str, np.ndarray]:
        """Posterior draws for new rows of an amortised fit (``batch_size=vi.Batches(size, local=vi.Amortised())``).

        The globals are drawn from q and each row's local sites from its q given them, which
        the encoder computes from the row's columns in ``data``.

        Parameters
        ----------
        data : mapping or DataFrame
            The new rows: at least the columns the encoder reads.
        n : int
            Number of draws.
        seed : int, optional
            Seed; without it each call draws afresh.

        Returns
        -------
        dict
            Site name -> draws: ``(n, ...)`` for global sites, ``(n, rows, ...)`` for local ones.

        Examples
        --------
        >>> import numpy as np, numpyro, numpyro.distributions as dist
        >>> import variational as vi
        >>> def model(y):
        ...     mu = numpyro.sample("mu", dist.Normal(0, 10))
        ...     with numpyro.plate("rows", len(y)):
        ...         z = numpyro.sample("z", dist.Normal(mu, 1))
        ...         numpyro.sample("y", dist.Normal(z, 0.5), obs=y)
        >>> y = np.random.default_rng(0).normal(1.0, 1.1, 200).astype(np.float32)
        >>> fit = vi.fit(model, {"y": y}, batch_size=vi.Batches(50, local=vi.Amortised(hidden=())),
        ...              steps=200, learning_rate=0.05, progress=False)
        >>> fit.local_posterior({"y": np.zeros(3)}, n=10)["z"].shape
        (10, 3)
        """
        if self.new_rows is None:
            raise VariationalError("fit.local_posterior(data) needs an amortised fit: fit with "
                                   "batch_size=vi.Batches(size, local=vi.Amortised(...)) (an encoder gives "
                                   "new rows their posterior)")
        return self.new_rows(data, whole_number("n", n, 1), self._next_key(seed))

    @measured("diagnose")
    def diagnose(self, n: int = 4000, seed: int = 0, *, data: Any = None) -> Any:
        """Whether to trust the fit: Pareto k-hat, convergence, skipped steps and a verdict.

        ``n`` draws of q (seed ``seed``) for the importance weights ``p(x, z) / q(z)`` on
        ``data`` (default: the fit's data). Returns a ``Diagnosis``: ``khat``, ``converged``,
        ``skipped_steps``, ``verdict``, ``status``, ``ess`` and the verdict's checks.

        Examples
        --------
        >>> import variational as vi
        >>> def model():
        ...     vi.Normal("x", 0, 1)
        >>> vi.fit(model, steps=3000, progress=False).diagnose().status
        'good'
        """
        n = check_draws(n)
        cache_key = ("diagnosis", self.steps, n, seed)
        if data is None and cache_key in self._cache:
            return self._cache[cache_key]
        q = self.approximation
        out = diagnose_fit(q, self, n, self._next_key(seed), data, self.flat_moments, status(self.state))
        if data is None:
            self._cache[cache_key] = out
        return out

    def _importance_draws(self, n: int, seed: int | None) -> jax.Array:
        """PSIS resampling: ``n`` of ``max(4000, 4 n)`` draws of q, resampled by their weights."""
        key, q = self._next_key(seed), self.approximation
        batch = q.training_data()
        seed_of_pool = jax.random.PRNGKey(int(jax.random.randint(key, (), 0, 2**31 - 1)))
        z, lw, _ = psis(q.logdensity, q.family, q.params, batch, seed_of_pool, max(4000, 4 * n),
                        family_key=q.compile_key())
        # diagnose()'s draws (its default seed 0): one k-hat per fit, whatever n
        khat = psis(q.logdensity, q.family, q.params, batch, key_of(0), 4000,
                    family_key=q.compile_key())[2]
        return resample(z, lw, khat, jax.random.fold_in(key, 4), n)

    def elbo(self, data: Any = None, *, num_draws: int = 100, batch_size: int | None = None,
             seed: int | None = None, return_se: bool = False) -> float | tuple[float, float]:
        """ELBO of the approximation on all rows of ``data``, evaluated in batches.

        Parameters
        ----------
        data : mapping, DataFrame or streaming source, optional
            The rows (default: the fit's in-memory data).
        num_draws : int
            Draws of q averaged.
        batch_size : int, optional
            Rows per evaluation batch (default about a million draw-rows per batch).
        seed : int, optional
            Seed of the draws.
        return_se : bool
            Also return the Monte Carlo standard error.

        Examples
        --------
        >>> import numpy as np
        >>> import variational as vi
        >>> def model(y):
        ...     vi.Normal("y", vi.Normal("mu", 0, 1), 1, observed=y)
        >>> fit = vi.fit(model, {"y": np.zeros(100)}, steps=500, progress=False)
        >>> bool(abs(fit.elbo(batch_size=30) - fit.elbo()) < 1)   # batching does not change it
        True
        """
        q = self.approximation
        if data is None and q.streamed:
            data = q.plan.feeder.source
        elif data is None:
            data = {k: np.asarray(v) for k, v in q.data.items()}
        est, se = full_data_elbo(q.logdensity, q.family, q.params, data, self._next_key(seed),
                                 num_draws=num_draws, batch_size=batch_size)
        return (est, se) if return_se else est

    # -- export ----------------------------------------------------------------------------------
    def to_arviz(self, n: int = 1000, seed: int | None = 0, *, posterior_predictive: bool | None = None,
                 log_likelihood: bool | None = None, coords: Mapping[str, Any] | None = None,
                 dims: Mapping[str, Sequence[str]] | None = None) -> Any:
        """ArviZ's result object of ``n`` draws: ``InferenceData`` (ArviZ 0.x) or ``DataTree`` (1.x).

        Groups:

        - ``posterior``: one chain of ``n`` draws of every latent and deterministic site;
        - ``posterior_predictive``, ``observed_data``: predictions of the observed sites from the
          same draws, and the data they were fitted to;
        - ``log_likelihood``: the pointwise log-likelihood of each observed site at each draw,
          so ``az.loo`` and ``az.compare`` work (see ``docs/posterior.md`` for PSIS-LOO of an
          approximation and the p/q correction);
          by default (``None``) each of these two groups is computed when it holds at most
          20 million numbers (``n`` draws of every observed value) and left out with a warning
          otherwise; ``True`` asks for it whatever its size, ``False`` leaves it out;
        - ``sample_stats``: per draw, ``lp`` (log joint on all rows, in the unconstrained space)
          and ``log_q`` (log density under q; absent for methods without one, such as SVGD);
        - ``constant_data``: the data columns that are not observed values (covariates);
        - ``optimization``: the loss per step (dimension ``step``) and what the run did
          (method, steps, skipped steps, learning rate, convergence, notes) as attributes.

        Axes are named after the model's ``numpyro.plate``s (other axes of site ``x`` are
        ``x_dim_0``, ...) exactly as ``az.from_numpyro`` names them for :func:`variational.nuts`,
        and a plate that a categorical data column describes takes its categories as
        coordinates. ``coords`` and ``dims`` override them, as in ArviZ (for example
        ``coords={"county": names}, dims={"alpha": ["county"]}``). A fit that streamed its data
        has only the ``posterior``, ``sample_stats`` without ``lp``, and ``optimization`` groups.

        Examples
        --------
        >>> import numpyro
        >>> import variational as vi
        >>> def model(y):
        ...     mu = vi.Normal("mu", 0, 1)
        ...     with numpyro.plate("obs", len(y)):
        ...         vi.Normal("y", mu, 1, observed=y)
        >>> fit = vi.fit(model, {"y": [0.1, 0.5, -0.3]}, steps=200, progress=False)
        >>> data = fit.to_arviz(n=50)
        >>> data.posterior["mu"].shape, data.log_likelihood["y"].dims
        ((1, 50), ('chain', 'draw', 'obs'))
        """
        return to_inference_data(self.approximation, self, n, self._next_key(seed), posterior_predictive, coords,
                                 dims, log_likelihood)

    @measured("draws")
    def summary(self, n: int = 4000) -> Any:
        """A pandas DataFrame of mean, sd and 3%/97% quantiles per scalar element."""
        return summary_table(self._moment_draws() if n == 4000 else self.sample(n))

    def __repr__(self) -> str:
        return describe(self)
