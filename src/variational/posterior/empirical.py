"""``Empirical``: an approximation made of given draws (for example NUTS draws).

It is a :class:`~variational.Fit` whose family is the set of draws itself, so everything that
takes a fit takes it: ``sample`` (resampling the draws), ``mean``/``std``/``cov``, ``summary``,
``to_arviz``, and the model and data for predictions. It has nothing to optimise.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from ..compilation import key_of
from .. import data as _data
from ..engine.loop import EngineState
from ..errors import DataError, VariationalError
from ..families.svgd import particle_family
from ..model import LogDensity
from .fit import Fit

__all__ = ["Empirical"]


def _as_draws(draws: Any) -> dict[str, np.ndarray]:
    """A mapping name -> (n, ...) array from a dict of arrays or an ArviZ InferenceData."""
    posterior = getattr(draws, "posterior", None)
    if posterior is not None:  # InferenceData: stack chains and draws
        return {k: np.asarray(v.values).reshape((-1,) + v.values.shape[2:])
                for k, v in posterior.data_vars.items()}
    if not isinstance(draws, Mapping) or not draws:
        raise DataError(f"draws must be a non-empty dict name -> array of shape (n_draws, ...) or an "
                        f"arviz.InferenceData, got {type(draws).__name__}")
    out = {str(k): np.asarray(v) for k, v in draws.items()}
    counts = {k: (v.shape[0] if v.ndim else None) for k, v in out.items()}
    if any(c is None for c in counts.values()) or len(set(counts.values())) != 1:
        raise DataError(f"every entry of draws needs the same number of draws on its first axis; "
                        f"got {counts}")
    return out


def _placeholder_model(shapes: Mapping[str, tuple[int, ...]]) -> Callable:
    """A model with one real-valued site per entry (its density is never used: the draws are)."""

    def model() -> None:
        for name, shape in shapes.items():
            numpyro.sample(name, dist.Normal(0.0, 1.0).expand(shape).to_event(len(shape)))

    return model


class Empirical(Fit):
    """An approximation made of given draws in the model's own (constrained) space.

    Parameters
    ----------
    draws : dict or arviz.InferenceData
        name -> array of shape ``(n_draws, *site_shape)`` (for example ``mcmc.get_samples()``),
        or an InferenceData whose posterior chains are stacked.
    model : callable, optional
        The model the draws come from. With it, the draws of its latent sites become the
        approximation, deterministic sites are recomputed, and predictions work as for any fit.
        Without it, every entry of ``draws`` is treated as an unconstrained latent variable.
    data : mapping, optional
        The model's data columns.
    model_kwargs : mapping, optional
        Other keyword arguments of the model.
    seed : int
        Seed of ``sample`` and of the summaries.

    Examples
    --------
    >>> import numpy as np
    >>> import variational as vi
    >>> draws = {"x": np.random.default_rng(0).normal(2.0, 1.0, size=(4000,))}
    >>> emp = vi.Empirical(draws)
    >>> round(float(emp.mean["x"]), 1), emp.sample(10)["x"].shape
    (2.0, (10,))
    """

    def __init__(self, draws: Any, model: Callable | None = None, data: Any = None, *,
                 model_kwargs: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        values = _as_draws(draws)
        cols = _data.as_columns(data)
        if model is None:
            if cols:
                raise VariationalError("data= needs the model= the draws come from")
            model = _placeholder_model({k: v.shape[1:] for k, v in values.items()})
            ld = LogDensity(model, start={k: v[0] for k, v in values.items()}, seed=seed)
        else:
            ld = LogDensity(model, cols, model_kwargs, seed=seed)
        z = self._unconstrain(ld, values)
        family = particle_family("empirical", lambda key, z0: {"particles": z},
                                 options={"n_draws": int(z.shape[0])})
        state = EngineState({"particles": z}, (), (), jnp.int32(0), jnp.int32(0), jnp.int32(0))
        super().__init__(model=model, logdensity=ld, family=family, engine=None, state=state,  # type: ignore[arg-type]
                         key=key_of(seed), data=_data.to_device(cols),
                         model_kwargs=model_kwargs or {},
                         settings={"method": "empirical", "seed": seed, "progress": False})

    @staticmethod
    def _unconstrain(ld: LogDensity, values: Mapping[str, np.ndarray]) -> jax.Array:
        missing = [n for n in ld.names if n not in values]
        if missing:
            raise DataError(f"draws has no entry for the latent site(s) {missing} of the model "
                            f"(draws has {sorted(values)})")
        for n in ld.names:
            if values[n].shape[1:] != tuple(ld.shapes[n]):
                raise DataError(f"draws['{n}'] has draws of shape {values[n].shape[1:]}, but the "
                                f"model's site '{n}' has shape {tuple(ld.shapes[n])}")
        z = jax.jit(jax.vmap(ld.unconstrain))({n: jnp.asarray(values[n]) for n in ld.names})
        bad = ~np.isfinite(np.asarray(z)).all(axis=1)
        if bad.any():
            first = int(np.argmax(bad))
            raise DataError(f"draw {first} (and {int(bad.sum()) - 1} more) lies outside the support "
                            f"of the model's latent sites; check that draws are in the model's "
                            f"own (constrained) space")
        return z

    def _run(self, steps: int, **_: Any) -> "Fit":
        raise VariationalError("an Empirical approximation is made of given draws; it has nothing "
                               "to optimise (use vi.fit for an approximation that can be refined)")
