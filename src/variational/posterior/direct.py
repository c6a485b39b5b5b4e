"""Fits made by a direct method (Laplace, DADVI, Pathfinder): solve once, answer like any fit.

A direct family computes its parameters with ``family.solve`` (deterministic optimisation on
all rows of the data) instead of the engine's stochastic loop. :func:`direct_fit` runs it and
puts the answer into an ordinary :class:`~variational.Fit`: ``fit.steps`` is the number of
iterations, ``fit.hist`` the objective along them, ``fit.converged`` and ``fit.message`` what
the solver says, ``fit.grad_evals`` the gradients it evaluated, ``fit.solution`` the whole
record, and every question (draws, summaries, predictions, ``to_arviz``, ``diagnose``) works
as for the other methods. Such a fit has nothing to refine.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from threadpoolctl import threadpool_limits

from ..data.plan import Plan
from ..engine.keys import first_state
from ..engine.loop import Engine, EngineState
from ..engine.run import note
from ..errors import DataError, VariationalError
from ..families import with_init_params
from ..families._newton import float64
from ..families.base import Family, Problem, Solution
from ..model import LogDensity
from ..model.constants import as_arguments
from .draws import is_fit
from .fit import Fit

__all__ = ["direct_fit", "solve", "check_arguments", "flat_labels", "gaussian_of", "start_params",
           "initial_state"]


def flat_labels(ld: LogDensity) -> tuple[str, ...]:
    """The name of every coordinate of the flat unconstrained vector (``"alpha[3]"``)."""
    out: list[str] = []
    for site in ld.layout:
        shape = tuple(site.unconstrained_shape)
        if not shape:
            out.append(site.name)
            continue
        out.extend(f"{site.name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape))
    return tuple(out)


def check_arguments(method: Any, *, resume: Any, checkpoint: Any, callbacks: Any, devices: Any,
                    batch_size: Any, num_particles: int, stl: bool, learning_rate: Any) -> None:
    """Refuse, by name, the arguments of ``vi.fit`` that a direct method cannot use."""
    name = getattr(method, "name", method)
    unused = {"callbacks=": bool(callbacks), "checkpoint=/resume=": checkpoint is not None or bool(resume),
              "devices=": devices is not None, "num_particles=": int(num_particles) != 1,
              "stl=True": bool(stl), "learning_rate='auto'": learning_rate == "auto"}
    if batch_size is not None:
        raise DataError(
            f"method={name!r} needs the gradient of the log density on all rows at every "
            f"iteration, so it cannot use minibatches (batch_size={batch_size}); drop batch_size=, "
            f"or use a stochastic method (method='advi', 'fullrank_advi', ...) with batch_size=, "
            f"which can start from this method's answer (init={name!r})")
    given = [k for k, v in unused.items() if v]
    if given:
        raise VariationalError(
            f"method={name!r} is solved directly (no stochastic steps), so {', '.join(given)} "
            f"cannot be used with it; save its answer with fit.save(path)")


def solve(model: Callable, ld: LogDensity, family: Family, plan: Plan, init: Any, key: jax.Array,
          model_kwargs: Any, settings: dict, steps: Any) -> Fit:
    """``vi.fit`` for a direct method: all rows in memory, start at ``init``'s mean, solve."""
    if getattr(ld, "param_names", None):
        raise VariationalError(
            f"method={family.name!r} approximates the posterior of the latent sites only; the model's "
            f"own parameters {list(ld.param_names)} (numpyro.param) need a stochastic method that "
            f"optimises them with it (method='advi', 'fullrank_advi', ...)")
    if plan.feeder is not None:
        raise DataError(f"method={family.name!r} evaluates the log density on all rows at every "
                        f"iteration and cannot read a streaming source; load the data into memory "
                        f"(a dict of arrays) or use method='advi' with batch_size=")
    z0, scale0 = ld.init, None
    if init is not None:
        check_same_model(init, ld)
        mean, cov = gaussian_of(init)
        z0, scale0 = mean, jnp.sqrt(jnp.diag(cov))
    return direct_fit(model=model, ld=ld, family=family, data=plan.device_data,
                      model_kwargs=model_kwargs or {}, settings=settings, key=key, steps=steps,
                      z0=z0, scale0=scale0)


def _wide(a: Any) -> np.ndarray:
    """A float array in float64 (other dtypes as they are)."""
    a = np.asarray(a)
    return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a


def _narrow(a: Any, dtype: Any) -> jax.Array:
    """A float64 result back in the model's dtype."""
    a = np.asarray(a)
    return jnp.asarray(a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a)


def _state(params: Any, iterations: int) -> EngineState:
    return EngineState(params, (), (), jnp.int32(iterations), jnp.int32(0), jnp.int32(0))


def direct_fit(*, model: Callable, ld: LogDensity, family: Family, data: Mapping[str, Any],
               model_kwargs: Mapping[str, Any], settings: dict, key: jax.Array, steps: int | None,
               z0: jax.Array, scale0: jax.Array | None = None) -> Fit:
    """Solve ``family`` on ``data`` (all rows) and return the :class:`Fit`.

    ``steps=0`` builds the fit without solving (its parameters are the family's placeholder at
    ``z0``); :func:`variational.load` uses it before putting a saved answer in.
    """
    fit = Fit(model=model, logdensity=ld, family=family, engine=None, state=_state(family.init(key, z0), 0),  # type: ignore[arg-type]
              key=key, data=data, model_kwargs=model_kwargs, settings=settings)
    if steps == 0:
        return fit
    t0 = time.perf_counter()
    # in float64: second-order steps and curvatures need it on badly scaled posteriors (a
    # regression on the dollar scale stopped 6 sds from the answer in float32). The solvers'
    # host side is many tiny linear-algebra calls, for which a threaded BLAS only adds
    # hand-offs (L-BFGS-B was 30x slower under load): one thread.
    with threadpool_limits(limits=1, user_api="blas"), float64():
        # (the model's numbers made arguments here, in float64 as the model's own would be)
        lift = None if ld.lift is None else (ld.lift[0], as_arguments(ld.lift[0]))
        problem = Problem(ld.logp, {k: _wide(v) for k, v in dict(data).items()}, jnp.asarray(_wide(z0)),
                          flat_labels(ld), key, None if scale0 is None else jnp.asarray(_wide(scale0)), lift)
        solution = family.solve(problem)
    solution = solution._replace(params=jax.tree_util.tree_map(lambda a: _narrow(a, ld.dtype), solution.params))
    seconds = time.perf_counter() - t0
    absorb(fit, solution, seconds)
    return fit


def absorb(fit: Fit, solution: Solution, seconds: float) -> None:
    """Put a solver's answer into ``fit``: parameters, trace as ``hist``, convergence, notes."""
    trace = np.asarray(solution.trace, dtype=float).reshape(-1)
    fit._set_state(_state(solution.params, trace.shape[0]))
    fit._hist = [trace]
    fit.solution = solution
    fit.converged = bool(solution.converged)
    fit.message = solution.message
    fit.timings.update(run_s=seconds, steps=int(trace.shape[0]), grad_evals=int(solution.grad_evals))
    note(fit, f"{fit.method}: {solution.message}; {solution.grad_evals} gradient evaluations "
              f"in {seconds:.2f} s", warn=False)
    if not solution.converged:
        note(fit, f"{fit.method} did not converge ({solution.message}); see fit.solution")


# -- starting one method from another's answer (init=) -------------------------------------------
def gaussian_of(fit: Fit) -> tuple[jax.Array, jax.Array]:
    """Mean and covariance of ``fit``'s approximation in the flat unconstrained space.

    A covariance estimated from draws that is not positive definite (Pathfinder's resampled
    draws with few distinct values) gets a small ridge, and falls back to its diagonal.
    """
    mean = jnp.asarray(fit.flat_moments()[0])
    cov = np.asarray(fit.cov, dtype=np.float64)
    cov = 0.5 * (cov + cov.T)
    scale = float(np.max(np.abs(np.diag(cov)))) or 1.0
    for ridge in (0.0, 1e-8, 1e-5, 1e-3):
        try:
            np.linalg.cholesky(cov + ridge * scale * np.eye(cov.shape[0]))
            return mean, jnp.asarray(cov + ridge * scale * np.eye(cov.shape[0]), mean.dtype)
        except np.linalg.LinAlgError:
            continue
    return mean, jnp.asarray(np.diag(np.maximum(np.diag(cov), 1e-12 * scale)), mean.dtype)


def check_same_model(init: Any, ld: LogDensity) -> None:
    """``init`` must be a fit of a model with the same latent sites and shapes."""
    if not is_fit(init):
        raise TypeError(f"init= must be a Fit from an earlier vi.fit or the name of a direct method "
                        f"('pathfinder', 'laplace', 'dadvi'), got {type(init).__name__}")
    if init.logdensity.dim != ld.dim or init.logdensity.names != ld.names:
        raise ValueError(
            f"init= comes from a model with latent sites {init.logdensity.names} "
            f"(dimension {init.logdensity.dim}), but this model has {ld.names} (dimension {ld.dim}); "
            f"warm starts need the same latent sites and shapes")


def start_params(init: Any, ld: LogDensity, family: Family) -> Any:
    """The parameters of ``family`` that start from the fit ``init`` (``vi.fit(..., init=fit)``).

    A fit of the same method gives its parameters; any other fit (Laplace, Pathfinder, DADVI,
    mean-field...) gives the member of ``family`` closest to its Gaussian moments
    (``family.from_gaussian``).
    """
    check_same_model(init, ld)
    if init.family.name == family.name:
        return jax.tree_util.tree_map(lambda x: x, init.approximation.params)   # the answer it reported
    if family.from_gaussian is None:
        raise ValueError(f"method={family.name!r} cannot start from a {init.family.name!r} fit (it has no "
                         f"from_gaussian); warm-start it from a fit of the same method")
    return family.from_gaussian(*gaussian_of(init))


def initial_state(engine: Engine, init: Any, family: Family, ld: LogDensity, plan: Plan,
                  key: jax.Array, init_params: Any = None) -> Any:
    """The engine's first state: from the fit ``init`` (``vi.fit(..., init=fit)``), from
    ``init_params``, from the family's own start (SVGD's needs the log density), or, by default,
    the family's start around the model's initial point in one compiled call."""
    if init is None and init_params is None and family.init_with_logp is None:
        return first_state(engine, family, ld.init, key)
    if init is not None:
        if init_params is not None:
            raise VariationalError("give either init= (a warm start from a fit) or init_params=, not both")
        return engine.init_state(start_params(init, ld, family), key)
    if family.init_with_logp is not None:  # e.g. SVGD's importance-resampled start
        head = plan.head_on_device()  # all rows, or the first batch (scaled by N/B)
        params = family.init_with_logp(jax.random.fold_in(key, 0), ld.init, lambda z: ld.logp(z, head))
    else:
        params = family.init(jax.random.fold_in(key, 0), ld.init)
    return engine.init_state(params if init_params is None else with_init_params(family, params, init_params), key)
