"""``vsbc``: variational simulation-based calibration of a method on a model (the entry point).

It builds the fit of the first simulated dataset with :func:`variational.fit` and hands the
rest to :mod:`variational.posterior.vsbc`; it sits beside :mod:`variational.api`, above the
posterior layer.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from .api import fit
from .posterior.vsbc import VSBC, calibrate

__all__ = ["vsbc", "VSBC"]

# fit options that the restarted engine does not replay; with them every simulation is fitted anew
_REBUILD = ("guide", "callbacks", "init", "checkpoint", "resume")


def vsbc(
    model: Callable,
    data: Any = None,
    *,
    method: Any = "advi",
    observed: str | Sequence[str] | None = None,
    n_sims: int = 100,
    steps: int = 1000,
    n_draws: int = 1000,
    seed: int = 0,
    model_kwargs: Mapping[str, Any] | None = None,
    **fit_options: Any,
) -> VSBC:
    """Check that ``method`` gives unbiased marginals on ``model`` by fitting simulated data.

    Draws ``n_sims`` parameter values and datasets from the model's prior predictive, fits each
    dataset with ``vi.fit(model, ..., method=method, steps=steps, **fit_options)`` and tests,
    per scalar parameter, whether ``Pr_q(theta < theta_true)`` is symmetric about 1/2 (Yao et al.
    2018; NumPyro's ``vsbc_diagnostic``). See :mod:`variational.posterior.vsbc`.

    Parameters
    ----------
    model : callable
        A generative model: with an observed argument set to None it samples that site.
    data : mapping or DataFrame, optional
        Covariate columns (columns named like an observed site are replaced by simulations).
    method : str or Family
        The method to check (any ``vi.fit`` method).
    observed : str or sequence of str, optional
        The observed sites to simulate (default: those observed when the model runs on
        ``data``). The model takes each one's values as the argument of the same name.
    n_sims, steps, n_draws : int
        Simulations; optimisation steps per fit; draws of q per fit where ``Pr_q`` is not exact.
    seed : int
        Seed of the simulations and the fits.
    model_kwargs : mapping, optional
        Model keyword arguments that are not data columns.
    **fit_options
        Any other argument of :func:`variational.fit` (``optimizer``, ``learning_rate``,
        ``num_particles``, method options...).

    Returns
    -------
    VSBC
        ``probabilities``, ``ks_stat``, ``pvalue`` and ``truth`` per parameter; ``biased()``
        lists the asymmetric ones; ``table()``.

    Examples
    --------
    >>> import variational as vi
    >>> def model(y=None):
    ...     mu = vi.Normal("mu", 0.0, 1.0)
    ...     vi.Normal("y", mu, 1.0, shape=5, observed=y)
    >>> res = vi.vsbc(model, n_sims=20, steps=500, learning_rate=0.05, objective=vi.Objective(stl=True))
    >>> res.probabilities["mu"].shape, res.biased()
    ((20,), [])
    """
    rebuild = any(k in fit_options for k in _REBUILD) or fit_options.get("learning_rate") == "auto"

    def build(cols: dict) -> Any:
        return fit(model, cols or None, method=method, steps=0, seed=seed, progress=False,
                   model_kwargs=model_kwargs, **fit_options)

    return calibrate(build, model, data, observed=observed, n_sims=n_sims, steps=steps,
                     n_draws=n_draws, seed=seed, model_kwargs=model_kwargs, rebuild=rebuild)
