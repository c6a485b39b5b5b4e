"""``vi.summary``: mean, sd and HDI per parameter, and for MCMC draws ESS and R-hat, through ArviZ.

May import: :mod:`.arviz_compat`, :mod:`.draws`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from . import arviz_compat
from .draws import is_fit

__all__ = ["summary"]



def _is_vi(idata: Any) -> bool:
    """Independent draws of an approximation (``fit.to_arviz()``), not MCMC chains."""
    return "variational" in str(getattr(idata, "attrs", {}).get("inference_library", ""))


def summary(obj: Any, *, var_names: Sequence[str] | None = None, hdi_prob: float = 0.94,
            n: int = 4000, seed: int = 0) -> Any:
    """Mean, sd and HDI per parameter; for MCMC draws also ESS and R-hat (ArviZ).

    Parameters
    ----------
    obj : Fit, InferenceData or dict
        A fit (``n`` draws are summarised), an ``InferenceData`` (from ``fit.to_arviz()`` or
        :func:`variational.nuts`) or a dict name -> draws.
    var_names : sequence of str, optional
        Parameters to include.
    hdi_prob : float
        Probability mass of the highest-density interval.
    n : int
        Draws of a fit.
    seed : int
        Seed of a fit's draws.

    Returns
    -------
    pandas.DataFrame
        ArviZ's summary table: ``mean, sd, hdi_3%, hdi_97%`` and, for MCMC draws, ``mcse``,
        ``ess_bulk``, ``ess_tail`` and ``r_hat`` (ESS and R-hat are meaningless for independent
        draws of an approximation, so they are left out there).

    Examples
    --------
    >>> import variational as vi
    >>> def model():
    ...     vi.Normal("x", 0, 1)
    >>> table = vi.summary(vi.fit(model, steps=2000, learning_rate=0.05, progress=False))
    >>> list(table.columns)
    ['mean', 'sd', 'hdi_3%', 'hdi_97%']
    """
    if is_fit(obj):
        idata, kind = obj.to_arviz(n, seed=seed, posterior_predictive=False, log_likelihood=False), "stats"
    elif hasattr(obj, "posterior"):
        idata, kind = obj, ("stats" if _is_vi(obj) else "all")
    elif isinstance(obj, Mapping):
        idata, kind = arviz_compat.from_draws(obj), "stats"
    else:
        raise TypeError(f"summary() takes a Fit, an InferenceData or a dict of draws, got {type(obj).__name__}")
    return arviz_compat.summary(idata, var_names, kind, hdi_prob)
