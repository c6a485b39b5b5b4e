"""Marginals of an approximation in the model's own space: quantiles, medians, CDFs, and the
unconstrained draws under PyMC's transformed names.

Where q's marginals are Gaussian in the unconstrained space (``family.gaussian``: mean-field,
full-rank, low-rank) and a site's bijection acts element by element (log, logit, affine...),
quantiles and CDFs are exact: the bijection is monotone, so the ``p`` quantile of a constrained
element is the bijection of the ``p`` quantile of its Gaussian (the ``1 - p`` quantile where
the bijection decreases, as for an upper bound). Other sites (simplex, Cholesky factors,
deterministic sites) and other families use draws (a particle family: its particles exactly).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri
from numpyro.distributions import constraints
from numpyro.distributions.transforms import IndependentTransform, biject_to

from ..families.base import Family
from ..model import LogDensity

__all__ = ["marginal_quantiles", "marginal_cdf", "transformed_name", "transformed_draws",
           "MarginalAnswers"]


def _elementwise(support: Any) -> Any:
    """The site's bijection when it maps each element on its own, else None."""
    t = biject_to(support)
    while isinstance(t, IndependentTransform):
        t = t.base_transform
    return t if t.domain.event_dim == 0 and t.codomain.event_dim == 0 else None


def _gaussian_sites(ld: LogDensity, family: Family, params: Any) -> dict[str, tuple[Any, Any, Any]]:
    """Sites whose marginals are exact: name -> (bijection, mean, std) in the unconstrained space."""
    if not (family.gaussian and family.mean is not None and family.std is not None):
        return {}
    m, s = ld.unravel(family.mean(params)), ld.unravel(family.std(params))
    out = {}
    for lay in ld.layout:
        t = _elementwise(ld.supports[lay.name])
        if t is not None and lay.shape == lay.unconstrained_shape:
            out[lay.name] = (t, m[lay.name], s[lay.name])
    return out


def _check_probabilities(q: Any, what: str = "q") -> np.ndarray:
    a = np.asarray(q, dtype=np.float64)
    if a.ndim > 1 or a.size == 0 or not np.all((a > 0) & (a < 1)):
        raise ValueError(f"{what}={q!r} must be a probability or a list of probabilities, each "
                         f"strictly between 0 and 1")
    return a


def marginal_quantiles(ld: LogDensity, family: Family, params: Any, q: Any,
                       draws: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Marginal quantiles of every site (deterministics included) in the constrained space.

    Parameters
    ----------
    ld, family, params
        The model's log density, the family and its parameters.
    q : float or sequence of float
        Probabilities in (0, 1).
    draws : callable
        ``draws() -> {name: (n, *shape)}``: constrained draws, used for the sites whose
        quantiles are not exact (called only when needed).

    Returns
    -------
    dict
        name -> array ``(len(q), *shape)``, or ``shape`` for a scalar ``q``.

    Examples
    --------
    >>> import numpy as np
    >>> import variational as vi
    >>> def model():
    ...     vi.LogNormal("s", 0.0, 1.0)
    >>> fit = vi.fit(model, steps=0, progress=False, init_params={"loc": [0.0], "rho": [0.5413]})
    >>> round(float(fit.quantiles(0.5)["s"]), 4)      # exp(0): the median of LogNormal(0, 1)
    1.0
    """
    qs = _check_probabilities(q)
    flat = np.atleast_1d(qs)
    exact = _gaussian_sites(ld, family, params)
    out: dict[str, np.ndarray] = {}
    for name, (t, m, s) in exact.items():
        shape = (-1,) + (1,) * m.ndim
        zq = m + s * ndtri(jnp.asarray(flat).reshape(shape))
        zr = m + s * ndtri(jnp.asarray(1.0 - flat).reshape(shape))
        up = t(m + s) >= t(m - s)          # monotone: increasing or decreasing element by element
        out[name] = np.asarray(jnp.where(up, t(zq), t(zr)))
    if len(exact) < len(ld.names) or ld.deterministic_names:
        for name, v in draws().items():
            if name not in exact:
                out[name] = np.quantile(np.asarray(v), flat, axis=0)
    return {k: (v[0] if qs.ndim == 0 else v) for k, v in out.items()}


def marginal_cdf(ld: LogDensity, family: Family, params: Any, values: Mapping[str, Any],
                 draws: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``Pr_q(theta < value)`` element by element for the latent sites in ``values``.

    Exact where :func:`marginal_quantiles` is; otherwise the share of draws below the value.

    Examples
    --------
    >>> import variational as vi
    >>> def model():
    ...     vi.HalfNormal("s", 1.0)
    >>> fit = vi.fit(model, steps=0, progress=False, init_params={"loc": [0.0]})
    >>> float(marginal_cdf(fit.logdensity, fit.family, fit.state.params, {"s": 1.0}, None)["s"])
    0.5
    """
    exact = _gaussian_sites(ld, family, params)
    out, rest = {}, None
    for name, v in values.items():
        if name in exact:
            t, m, s = exact[name]
            p = ndtr((t.inv(jnp.asarray(v, m.dtype)) - m) / s)
            out[name] = np.asarray(jnp.where(t(m + s) >= t(m - s), p, 1.0 - p))
        else:
            rest = rest if rest is not None else draws()
            out[name] = np.mean(np.asarray(rest[name]) < np.asarray(v), axis=0)
    return out


def transformed_name(name: str, support: Any) -> str | None:
    """PyMC's name of a site's unconstrained value (``sigma`` -> ``sigma_log__``), or None.

    Examples
    --------
    >>> from numpyro.distributions import constraints
    >>> transformed_name("sigma", constraints.positive), transformed_name("mu", constraints.real)
    ('sigma_log__', None)
    """
    c = support
    while isinstance(c, constraints._IndependentConstraint):
        c = c.base_constraint
    if isinstance(c, constraints._Real):
        return None
    if isinstance(c, constraints._UnitInterval):
        kind = "logodds"
    elif isinstance(c, constraints._Interval):
        kind = "interval"
    elif isinstance(c, constraints._GreaterThan):
        bound = np.asarray(c.lower_bound) if not isinstance(c.lower_bound, jax.core.Tracer) else None
        kind = "log" if bound is not None and np.all(bound == 0) else "lowerbound"
    elif isinstance(c, constraints._LessThan):
        kind = "upperbound"
    elif isinstance(c, constraints._SoftplusPositive):
        kind = "log_exp_m1"
    elif isinstance(c, constraints._OrderedVector):
        kind = "ordered"
    else:
        kind = type(c).__name__.strip("_").lower()
    return f"{name}_{kind}__"


def transformed_draws(ld: LogDensity, z: jax.Array) -> dict[str, np.ndarray]:
    """The unconstrained values of flat draws ``z`` (n, D) under PyMC's transformed names."""
    named = jax.vmap(ld.unravel)(jnp.asarray(z))
    out = {}
    for n in ld.names:
        t = transformed_name(n, ld.supports[n])
        if t is not None:
            out[t] = np.asarray(named[n])
    return out


class MarginalAnswers:
    """Medians and quantiles of a fit (mixed into :class:`~variational.Fit`, which supplies
    ``logdensity``, ``family``, its parameters and its 4000 summary draws)."""

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
        >>> fit = vi.fit(model, steps=3000, stl=True, progress=False)
        >>> fit.quantiles([0.05, 0.95])["x"].round(1).tolist()       # 1 -/+ 1.645 * 0.5
        [0.2, 1.8]
        """
        return marginal_quantiles(self.logdensity, self.family, self._state.params, q,  # type: ignore[attr-defined]
                                  self._moment_draws)  # type: ignore[attr-defined]
