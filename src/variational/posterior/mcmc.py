"""Reference MCMC and the MAP point.

- :func:`nuts`: NumPyro's NUTS started at the VI solution, with the VI variances (or the full-rank
  covariance) as the initial inverse mass matrix, the modern form of PyMC3's
  ``pm.NUTS(scaling=means)`` started at ``means``. Returns an ``arviz.InferenceData``.
- :func:`find_map`: the posterior mode in the model's own (constrained) space, by L-BFGS
  (optax) on the flat unconstrained vector.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.distributions.transforms import biject_to
from numpyro.infer import MCMC, NUTS
from numpyro.infer.initialization import init_to_median, init_to_value
from numpyro.infer.util import constrain_fn, log_density

from ..model.threads import exclusive
from .. import data as _data
from ..errors import ModelError, user_stacklevel
from ..model import LogDensity
from . import arviz_compat
from .draws import is_fit
from .labels import plate_coords
from .predictive import site_table

if TYPE_CHECKING:  # pragma: no cover
    from .fit import Fit

__all__ = ["nuts", "find_map"]


def _columns_and_kwargs(data: Any, model_kwargs: Mapping[str, Any] | None, init: Any) -> tuple[dict, dict, dict]:
    """(data columns, model kwargs, categories of categorical columns) of a NUTS run."""
    if data is None and is_fit(init):
        cols = {k: np.asarray(v) for k, v in init.data.items()}
        categories = dict(getattr(init, "categories", {}))
    else:
        cols, categories = _data.read_columns(data)
        if cols:
            _data.num_rows(cols)
    if model_kwargs is None and is_fit(init):
        model_kwargs = init.model_kwargs
    return cols, dict(model_kwargs or {}), categories


def _vi_start(fit: "Fit", dense: bool) -> tuple[dict, jax.Array]:
    """Constrained start values (at the mean of q in unconstrained space) and inverse mass."""
    ld = fit.logdensity
    mean, std = fit.flat_moments()
    named = ld.unravel(jnp.asarray(mean))
    values = {k: biject_to(ld.supports[k])(v) for k, v in named.items()}
    inv_mass = jnp.asarray(fit.cov) if dense else jnp.asarray(std) ** 2
    return values, inv_mass


@exclusive
def nuts(
    model: Callable,
    data: Any = None,
    *,
    init: "Fit | None" = None,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 1,
    seed: int = 0,
    model_kwargs: Mapping[str, Any] | None = None,
    target_accept: float = 0.8,
    dense_mass: bool | None = None,
    adapt_mass_matrix: bool = True,
    chain_method: str | None = None,
    progress: bool = False,
    log_likelihood: bool = True,
    coords: Mapping[str, Any] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
) -> Any:
    """Reference posterior draws by NUTS, started from a variational fit.

    Parameters
    ----------
    model : callable
        The model.
    data : mapping or DataFrame, optional
        Data columns (default: ``init``'s data).
    init : Fit, optional
        Start every chain at the mean of q (mapped to the constrained space) and use q's
        variances as the initial inverse mass matrix (its covariance with ``dense_mass``).
        Without it NUTS starts at the prior median with a unit mass matrix.
    draws, tune, chains : int
        Kept draws per chain, warm-up (adaptation) steps per chain, number of chains.
    seed : int
        Seed.
    model_kwargs : mapping, optional
        Other keyword arguments of the model (default: ``init``'s).
    target_accept : float
        Target acceptance probability of the step-size adaptation.
    dense_mass : bool, optional
        Dense mass matrix; default: dense when ``init`` is a full-rank fit.
    adapt_mass_matrix : bool
        Keep adapting the mass matrix during warm-up (it starts from q's variances). With
        ``False`` q's variances are used as they are.
    chain_method : str, optional
        ``"sequential"``, ``"parallel"`` (one device per chain) or ``"vectorized"`` (all chains
        in one compiled program); default: parallel when there is a device per chain, else
        vectorized.
    progress : bool
        NumPyro's progress bar.
    log_likelihood : bool
        Store the pointwise log-likelihood (the ``log_likelihood`` group that ``az.loo`` and
        ``az.compare`` read).
    coords, dims : mapping, optional
        ArviZ coordinates and dimensions of vector sites. By default axes are named after the
        model's plates, and a plate that a categorical data column describes takes its
        categories as coordinates (the same names as ``fit.to_arviz()``).

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        ArviZ's result object (``InferenceData`` on ArviZ 0.x, ``DataTree`` on 1.x):
        ``posterior`` (deterministic sites included), ``sample_stats`` (divergences, step
        size, ...), ``log_likelihood`` and ``observed_data``.

    Examples
    --------
    >>> import numpy as np
    >>> import variational as vi
    >>> def model(y):
    ...     mu = vi.Normal("mu", 0, 10)
    ...     vi.Normal("y", mu, 1, observed=y)
    >>> data = {"y": np.array([0.5, 1.5])}
    >>> fit = vi.fit(model, data, steps=1000, progress=False)
    >>> idata = vi.nuts(model, data, init=fit, draws=200, tune=200)
    >>> idata.posterior["mu"].shape
    (1, 200)
    """
    if init is not None and not is_fit(init):
        raise TypeError(f"init= must be a Fit from vi.fit, got {type(init).__name__}")
    for name, v in (("draws", draws), ("chains", chains)):
        if int(v) < 1:
            raise ValueError(f"{name}={v!r} must be at least 1")
    if int(tune) < 0:
        raise ValueError(f"tune={tune!r} must be a non-negative number of warm-up steps")
    cols, kwargs, categories = _columns_and_kwargs(data, model_kwargs, init)
    jcols = {k: jnp.asarray(v) for k, v in cols.items()}
    if init is not None:
        table = site_table(model, jcols, kwargs)  # an abstract trace: cheap
        latent = {k: v["shape"] for k, v in sorted(table.items())
                  if v["type"] == "latent" and k not in init.logdensity.enumerated}  # (NUTS sums those out)
        fitted = {k: tuple(init.logdensity.shapes[k]) for k in init.logdensity.names}
        if latent != fitted:
            raise ModelError(f"init= was fitted to latent sites {fitted} but this model has "
                             f"{latent}; pass the fit of this model")
        model = init.logdensity.params.substitute(model)  # the model's parameters as fitted
        dense = bool(dense_mass) if dense_mass is not None else init.method == "fullrank_advi"
        values, inv_mass = _vi_start(init, dense)
        kernel = NUTS(model, inverse_mass_matrix=inv_mass, dense_mass=dense,
                      init_strategy=init_to_value(values=values), target_accept_prob=target_accept,
                      adapt_mass_matrix=adapt_mass_matrix)
    else:
        kernel = NUTS(model, dense_mass=bool(dense_mass), init_strategy=init_to_median,
                      target_accept_prob=target_accept, adapt_mass_matrix=adapt_mass_matrix)
    if chain_method is None:
        chain_method = "parallel" if jax.local_device_count() >= int(chains) else "vectorized"
    mcmc = MCMC(kernel, num_warmup=int(tune), num_samples=int(draws), num_chains=int(chains),
                chain_method=chain_method, progress_bar=progress)
    mcmc.run(jax.random.PRNGKey(seed), **kwargs, **jcols,
             extra_fields=("diverging", "num_steps", "accept_prob", "energy", "adapt_state.step_size"))
    named = {**plate_coords(site_table(model, jcols, kwargs), categories), **dict(coords or {})}
    return arviz_compat.from_numpyro(mcmc, named, dims, log_likelihood)


@exclusive
def find_map(
    model: Callable,
    data: Any = None,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    start: Mapping[str, Any] | None = None,
    max_steps: int = 500,
    tol: float = 1e-6,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The maximum a posteriori point in the model's own (constrained) space.

    The log joint is maximised over the latent sites with optax's L-BFGS on the flat
    unconstrained vector; the Jacobian of the transforms is *not* included, so the result is the
    mode of the posterior density of the constrained parameters (PyMC's ``find_MAP``).

    Parameters
    ----------
    model : callable
        The model.
    data : mapping or DataFrame, optional
        Data columns.
    model_kwargs : mapping, optional
        Other keyword arguments of the model.
    start : mapping, optional
        Initial values of some latent sites (default: prior medians).
    max_steps : int
        Largest number of L-BFGS iterations.
    tol : float
        Stop when the gradient norm is below ``tol``.
    seed : int
        Seed of the model trace.

    Returns
    -------
    dict
        name -> value at the mode, deterministic sites included.

    Examples
    --------
    >>> import variational as vi
    >>> def model():
    ...     vi.Gamma("x", 3.0, 1.0)     # mode (3 - 1) / 1 = 2
    >>> round(float(vi.find_map(model)["x"]), 3)
    2.0
    """
    cols = _data.as_columns(data)
    if cols:
        _data.num_rows(cols)
    ld = LogDensity(model, cols, model_kwargs, start=start, seed=seed)
    kwargs = {**ld.model_kwargs, **{k: jnp.asarray(v) for k, v in cols.items()}}

    def neg_log_joint(z: jax.Array) -> jax.Array:
        named = ld.unravel(z)
        values = {k: biject_to(ld.supports[k])(v) for k, v in named.items()}
        return -log_density(model, (), kwargs, values)[0]

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(neg_log_joint)

    @jax.jit
    def run(z0: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        def step(carry: tuple) -> tuple:
            z, state, _ = carry
            value, grad = value_and_grad(z, state=state)
            updates, state = opt.update(grad, state, z, value=value, grad=grad, value_fn=neg_log_joint)
            return optax.apply_updates(z, updates), state, jnp.linalg.norm(grad)

        def cont(carry: tuple) -> jax.Array:
            _, state, gnorm = carry
            count = optax.tree_utils.tree_get(state, "count")
            return (count == 0) | ((count < max_steps) & (gnorm >= tol))

        z, state, gnorm = jax.lax.while_loop(cont, step, (z0, opt.init(z0), jnp.asarray(jnp.inf, z0.dtype)))
        return z, neg_log_joint(z), gnorm

    z, value, gnorm = run(ld.init)
    if not np.isfinite(float(value)) or not np.all(np.isfinite(np.asarray(z))):
        raise ModelError("the log density has no finite maximum from this start (it diverges, "
                         "often a hierarchical scale going to zero); use vi.fit instead")
    if float(gnorm) > max(1e-3, 100 * tol):
        warnings.warn(f"find_map stopped after {max_steps} steps with gradient norm {float(gnorm):.3g}; "
                      f"raise max_steps", stacklevel=user_stacklevel())
    out = constrain_fn(model, (), kwargs, ld.unravel(z), return_deterministic=True)
    return {k: np.asarray(v) for k, v in out.items()}
