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

__all__ = ["marginal_quantiles", "marginal_cdf", "exact_marginals", "transformed_name",
           "transformed_draws"]


def _elementwise(support: Any) -> Any:
    """The site's bijection when it maps each element on its own, else None."""
    t = biject_to(support)
    while isinstance(t, IndependentTransform):
        t = t.base_transform
    return t if t.domain.event_dim == 0 and t.codomain.event_dim == 0 else None


def _exact_sites(ld: LogDensity, family: Family) -> dict[str, Any]:
    """Sites whose marginals are exact: name -> the bijection (elementwise), else none."""
    if not (family.gaussian and family.mean is not None and family.std is not None):
        return {}
    out = {}
    for lay in ld.layout:
        t = _elementwise(ld.supports[lay.name])
        if t is not None and lay.shape == lay.unconstrained_shape:
            out[lay.name] = t
    return out


class _Exact:
    """The exact quantiles and CDFs of a (log density, family) pair, each compiled once.

    An eager evaluation runs a dozen small operations per site, each compiled on first use;
    one compiled function for all sites answers much sooner.
    """

    def __init__(self, ld: LogDensity, family: Family) -> None:
        self.sites = _exact_sites(ld, family)
        sites = self.sites

        def moments(params: Any) -> tuple[dict, dict]:
            return ld.unravel(family.mean(params)), ld.unravel(family.std(params))

        def quantiles(params: Any, qs: jax.Array) -> dict[str, jax.Array]:
            m, s = moments(params)
            out = {}
            for name, t in sites.items():
                shape = (-1,) + (1,) * m[name].ndim
                zq = m[name] + s[name] * ndtri(qs.reshape(shape))
                zr = m[name] + s[name] * ndtri(1.0 - qs.reshape(shape))
                up = t(m[name] + s[name]) >= t(m[name] - s[name])   # monotone, either way
                out[name] = jnp.where(up, t(zq), t(zr))
            return out

        def cdf(params: Any, values: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
            m, s = moments(params)
            out = {}
            for name, v in values.items():
                t = sites[name]
                p = ndtr((t.inv(v) - m[name]) / s[name])
                out[name] = jnp.where(t(m[name] + s[name]) >= t(m[name] - s[name]), p, 1.0 - p)
            return out

        self.quantiles, self.cdf = jax.jit(quantiles), jax.jit(cdf)


def exact_marginals(ld: LogDensity, family: Family, cache: dict | None = None) -> _Exact:
    """The compiled exact marginals of ``(ld, family)``, kept in ``cache`` when given."""
    if cache is None:
        return _Exact(ld, family)
    if "exact_marginals" not in cache:
        cache["exact_marginals"] = _Exact(ld, family)
    return cache["exact_marginals"]


def _check_probabilities(q: Any, what: str = "q") -> np.ndarray:
    a = np.asarray(q, dtype=np.float64)
    if a.ndim > 1 or a.size == 0 or not np.all((a > 0) & (a < 1)):
        raise ValueError(f"{what}={q!r} must be a probability or a list of probabilities, each "
                         f"strictly between 0 and 1")
    return a


def marginal_quantiles(ld: LogDensity, family: Family, params: Any, q: Any,
                       draws: Callable[[], Mapping[str, np.ndarray]],
                       cache: dict | None = None) -> dict[str, np.ndarray]:
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
    cache : dict, optional
        Where the compiled exact marginals are kept between calls (a fit's cache).

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
    >>> fit = vi.fit(model, method="advi", steps=0, progress=False, init_params={"loc": [0.0], "rho": [0.5413]})
    >>> round(float(fit.quantiles(0.5)["s"]), 4)      # exp(0): the median of LogNormal(0, 1)
    1.0
    """
    qs = _check_probabilities(q)
    flat = np.atleast_1d(qs)
    ex = exact_marginals(ld, family, cache)
    out: dict[str, np.ndarray] = {}
    if ex.sites:   # (padded to a multiple of 8 probabilities: one compilation serves most calls)
        padded = np.full(-(-flat.size // 8) * 8, 0.5)
        padded[:flat.size] = flat
        got = ex.quantiles(params, jnp.asarray(padded, ld.dtype))
        out = {k: np.asarray(v)[:flat.size] for k, v in got.items()}
    if len(ex.sites) < len(ld.names) or ld.deterministic_names:
        for name, v in draws().items():
            if name not in ex.sites:
                out[name] = np.quantile(np.asarray(v), flat, axis=0)
    return {k: (v[0] if qs.ndim == 0 else v) for k, v in out.items()}


def marginal_cdf(ld: LogDensity, family: Family, params: Any, values: Mapping[str, Any],
                 draws: Callable[[], Mapping[str, np.ndarray]],
                 cache: dict | None = None) -> dict[str, np.ndarray]:
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
    ex = exact_marginals(ld, family, cache)
    exact = {n: jnp.asarray(v, ld.dtype) for n, v in values.items() if n in ex.sites}
    out = {k: np.asarray(v) for k, v in ex.cdf(params, exact).items()} if exact else {}
    rest = None
    for name, v in values.items():
        if name not in ex.sites:
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
