"""Minimisation by optax's L-BFGS in one compiled loop, shared by the direct methods.

:func:`minimize` runs ``optax.lbfgs`` (zoom line search) inside ``lax.while_loop`` and keeps
what the direct methods report: the objective after every iteration, the number of gradient
evaluations (one per line-search trial), and why it stopped. An optional observer sees every
accepted step (Pathfinder builds its Gaussian approximations there). Every accepted step
decreases the objective: a line search that does not is refused and ends the run.

It is traced by its caller (which compiles and may ``vmap`` it), so it takes no data argument:
close over traced values.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax import tree_utils as otu

__all__ = ["LBFGSState", "minimize", "STATUS", "status_message"]

RUNNING, GTOL, FTOL, MAXITER, LINESEARCH, NONFINITE = 0, 1, 2, 3, 4, 5
STATUS = {
    RUNNING: "running",
    GTOL: "converged: the gradient is below gtol",
    FTOL: "converged: the relative decrease of the objective is below ftol",
    MAXITER: "stopped at maxiter before converging",
    LINESEARCH: "stopped: the line search found no decrease (at the optimum to float precision, "
                "or a badly scaled problem)",
    NONFINITE: "stopped: the objective or its gradient is not finite at the start",
}


def status_message(code: int, iterations: int) -> str:
    """Plain words for a stop code."""
    return f"{STATUS.get(int(code), 'unknown')} after {iterations} iteration(s)"


class LBFGSState(NamedTuple):
    """The carry of the loop (and its result)."""

    x: jax.Array         # current point
    f: jax.Array         # objective at x
    g: jax.Array         # gradient at x
    opt_state: Any       # optax's L-BFGS state
    it: jax.Array        # iterations done
    n_grad: jax.Array    # gradient evaluations so far
    status: jax.Array    # a key of STATUS
    trace: jax.Array     # (maxiter,) objective (or the observer's value) after each iteration
    extra: Any           # the observer's state


def minimize(
    fun: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    *,
    maxiter: int,
    gtol: float,
    ftol: float,
    memory: int = 10,
    maxls: int = 25,
    observe: Callable[..., tuple[Any, jax.Array]] | None = None,
    extra: Any = None,
) -> LBFGSState:
    """Minimise ``fun`` from ``x0``; returns the final :class:`LBFGSState`.

    Stops when ``max|grad| <= gtol``, when an accepted step lowers the objective by no more
    than ``ftol * max(|f|, 1)``, at ``maxiter`` iterations, or when the line search fails to
    decrease the objective (the last point is then kept). ``observe(extra, x_prev, g_prev,
    x, f, g, it) -> (extra, value)`` is called after every accepted step; ``value`` goes into
    ``trace`` (default: the objective).
    """
    opt = optax.lbfgs(memory_size=memory, linesearch=optax.scale_by_zoom_linesearch(
        max_linesearch_steps=maxls, initial_guess_strategy="one"))
    f0, g0 = jax.value_and_grad(fun)(x0)
    ok0 = jnp.isfinite(f0) & jnp.all(jnp.isfinite(g0))
    start = jnp.where(ok0, jnp.where(jnp.max(jnp.abs(g0)) <= gtol, GTOL, RUNNING), NONFINITE)
    state = LBFGSState(x0, f0, g0, opt.init(x0), jnp.int32(0), jnp.int32(1), jnp.int32(start),
                       jnp.full((maxiter,), jnp.nan, f0.dtype), extra)

    def step(s: LBFGSState) -> LBFGSState:
        updates, opt_state = opt.update(s.g, s.opt_state, s.x, value=s.f, grad=s.g, value_fn=fun)
        x = optax.apply_updates(s.x, updates)
        f, g = otu.tree_get(opt_state, "value"), otu.tree_get(opt_state, "grad")
        n_ls = otu.tree_get(opt_state, "num_linesearch_steps")
        good = jnp.isfinite(f) & jnp.all(jnp.isfinite(g)) & (f <= s.f)
        it = s.it + 1
        status = jnp.where(~good, LINESEARCH,
                           jnp.where(jnp.max(jnp.abs(g)) <= gtol, GTOL,
                                     jnp.where(s.f - f <= ftol * jnp.maximum(jnp.abs(s.f), 1.0), FTOL,
                                               jnp.where(it >= maxiter, MAXITER, RUNNING))))
        extra, value = s.extra, f
        if observe is not None:
            extra, value = observe(s.extra, s.x, s.g, x, f, g, it)
        new = LBFGSState(x, f, g, opt_state, it, s.n_grad + n_ls.astype(jnp.int32), status.astype(jnp.int32),
                         s.trace.at[s.it].set(value.astype(s.trace.dtype)), extra)
        # a refused step keeps the last point (its line-search evaluations still count)
        kept = s._replace(status=jnp.int32(LINESEARCH), n_grad=new.n_grad)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(good, a, b), new, kept)

    return jax.lax.while_loop(lambda s: s.status == RUNNING, step, state)
