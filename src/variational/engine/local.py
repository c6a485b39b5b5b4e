"""Stochastic VI with local latent variables (Hoffman et al. 2013): the step and its optimiser.

Each step draws the globals from their family and the batch's local values from the batch's
rows of the per-row parameters (:mod:`variational.families.local`), evaluates the model on the
batch's rows only (:class:`~variational.model.local.RowPlate`: likelihood and local priors
scaled by N/B) and subtracts ``log q`` with the local part scaled by N/B too: an unbiased
estimate of the ELBO of all N rows. The gradient of the local parameters is taken with respect
to the batch's rows (B of them), and :class:`RowAdam` updates only those rows: Adam with a
count per row, so a row's step does not depend on how long ago it was last visited, and no
step touches the other N - B rows.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..families.base import Family
from ..families.local import RowLayout, local_draws
from ..model.local import ROWS

__all__ = ["LOCAL_KEYS", "make_local_loss", "RowAdam", "RowAdamState"]

#: entries of the parameter pytree that hold one row per data row
LOCAL_KEYS = ("loc", "log_s", "coup")


def make_local_loss(gfam: Family, layout: RowLayout, logp: Callable, num_rows: int,
                    num_particles: int = 1) -> Callable:
    """``f(params, key, batch) -> (loss, grads)``: the negative ELBO of all rows, estimated on
    the batch's rows ``batch[ROWS]``; the local gradients are those of the batch's rows, with
    the rows' numbers under ``grads[ROWS]``."""
    scale = float(num_rows) / layout.rows

    def negative_elbo(gp: Any, lp: Any, key: jax.Array, batch: Any) -> jax.Array:
        kg, kl = jax.random.split(key)
        g, lqg = gfam.sample_and_log_q(gp, kg, num_particles)
        z, lql = local_draws(gfam, gp, lp, g, kl)
        lp_ = jax.vmap(logp, in_axes=(0, None))(layout.join(g, z), batch)
        return -jnp.mean(lp_ - lqg - scale * lql)

    def loss_and_grad(params: Any, key: jax.Array, batch: Any) -> tuple[jax.Array, Any]:
        rows = batch[ROWS]
        lp = {k: params[k][rows] for k in LOCAL_KEYS if k in params}
        loss, (gg, gl) = jax.value_and_grad(negative_elbo, argnums=(0, 1))(params["g"], lp, key, batch)
        return loss, {"g": gg, **gl, ROWS: rows}

    return loss_and_grad


class RowAdamState(NamedTuple):
    """Adam's moments of the globals (``g``) and of every row's local parameters, and the
    number of times each row was updated."""

    g: Any
    m: Any
    v: Any
    count: jax.Array


class RowAdam:
    """Adam on the globals, and Adam row by row on the local parameters of the batch's rows.

    The global step is ``lr`` (``frozen``: entries of the global family's parameters left
    alone); the local step is ``local_lr``. Both decay as ``1 / sqrt(1 + t / decay)`` (``t``:
    the step for the globals, the row's own number of updates for its local parameters), so
    that the iterates settle rather than keep the noise of a constant step.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> opt = RowAdam(0.1, 0.1, decay=100.0)
    >>> p = {"g": {"loc": jnp.zeros(1)}, "loc": jnp.zeros((4, 1)), "log_s": jnp.zeros((4, 1))}
    >>> s = opt.init(p)
    >>> grads = {"g": {"loc": jnp.ones(1)}, "loc": jnp.ones((2, 1)), "log_s": jnp.ones((2, 1)),
    ...          ROWS: jnp.array([1, 3])}
    >>> p2, s2 = opt.apply(grads, s, p)
    >>> p2["loc"][:, 0].round(3).tolist(), s2.count.tolist()   # rows 1 and 3 moved, against the gradient
    ([0.0, -0.1, 0.0, -0.1], [0, 1, 0, 1])
    """

    def __init__(self, lr: float, local_lr: float, decay: float = 1000.0, frozen: Callable | None = None,
                 b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
        self.lr, self.local_lr, self.decay = float(lr), float(local_lr), float(decay)
        self.b1, self.b2, self.eps = b1, b2, eps
        sched = lambda t: self.lr / jnp.sqrt(1.0 + t / self.decay)  # noqa: E731
        inner = optax.adam(sched, b1, b2, eps)
        self.glob = inner if frozen is None else optax.masked(inner, frozen)

    def init(self, params: Any) -> RowAdamState:
        local = {k: params[k] for k in LOCAL_KEYS if k in params}
        zeros = jax.tree_util.tree_map(jnp.zeros_like, local)
        rows = params["loc"].shape[0]
        return RowAdamState(self.glob.init(params["g"]), zeros, zeros, jnp.zeros((rows,), jnp.int32))

    def update(self, grads: Any, state: Any, params: Any = None) -> Any:  # pragma: no cover
        raise TypeError("RowAdam updates only the rows of a batch: the engine calls apply()")

    def apply(self, grads: Any, state: RowAdamState, params: Any) -> tuple[Any, RowAdamState]:
        """New parameters and state after one step (only the batch's rows change)."""
        upd, gstate = self.glob.update(grads["g"], state.g, params["g"])
        new = dict(params, g=optax.apply_updates(params["g"], upd))
        rows = grads[ROWS]
        t = state.count[rows] + 1
        tf = t.astype(params["loc"].dtype)
        lr = self.local_lr / jnp.sqrt(1.0 + (tf - 1.0) / self.decay)
        m, v = dict(state.m), dict(state.v)
        for k in m:
            shape = (-1,) + (1,) * (params[k].ndim - 1)
            g = grads[k]
            mk = self.b1 * state.m[k][rows] + (1 - self.b1) * g
            vk = self.b2 * state.v[k][rows] + (1 - self.b2) * g * g
            mh = mk / (1 - self.b1 ** tf).reshape(shape)
            vh = vk / (1 - self.b2 ** tf).reshape(shape)
            step = lr.reshape(shape) * mh / (jnp.sqrt(vh) + self.eps)
            new[k] = params[k].at[rows].add(-step)
            m[k], v[k] = state.m[k].at[rows].set(mk), state.v[k].at[rows].set(vk)
        return new, RowAdamState(gstate, m, v, state.count.at[rows].set(t))
