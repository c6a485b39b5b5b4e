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

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..families.base import Family
from ..families.local import RowLayout, conditional_mean, local_draws
from ..model.local import ROWS

__all__ = ["LOCAL_KEYS", "make_local_loss", "row_targets", "RowSteps", "RowState", "make_amortised_loss",
           "AmortisedSteps"]

#: entries of the parameter pytree that hold one row per data row
LOCAL_KEYS = ("loc", "log_s", "coup")
#: the reported globals average the iterates with weights growing as t**AVERAGE_POWER
AVERAGE_POWER = 3.0


def _row_curvature(f_z: Callable, g: jax.Array, z: jax.Array, coupled: bool) -> tuple[jax.Array, jax.Array]:
    """Per-row Hessian blocks of the batch's log joint: ``H_zz`` (B, dl, dl) and ``H_zg``
    (B, dl, dg), from ``dl`` (+ ``dg``) forward derivatives of its gradient ``f_z(g, z)``.

    Rows share no factor of the model except through the globals, so the derivative of every
    row's gradient along the direction "coordinate j of every row" is column j of its block.
    """
    dl, dg = z.shape[1], g.shape[0]
    dz = jnp.broadcast_to(jnp.eye(dl, dtype=z.dtype)[:, None, :], (dl,) + z.shape)
    col = lambda vg, vz: jax.jvp(f_z, (g, z), (vg, vz))[1]  # noqa: E731
    h_zz = jnp.moveaxis(jax.vmap(col)(jnp.zeros((dl, dg), g.dtype), dz), 0, -1)
    if not coupled:
        return h_zz, jnp.zeros(z.shape + (0,), z.dtype)
    h_zg = jax.vmap(col)(jnp.eye(dg, dtype=g.dtype), jnp.zeros((dg,) + z.shape, z.dtype))
    return h_zz, jnp.moveaxis(h_zg, 0, -1)


def row_targets(lp: Any, grad: jax.Array, h_zz: jax.Array, h_zg: jax.Array, scale: float) -> dict:
    """Where each row's parameters should go: the fixed point of Gaussian VI for that row.

    With the precision ``P = -H_zz`` of the row (``grad`` and the Hessians are expectations under
    q, of the log joint with its N/B scale ``scale``): the mean takes a Newton step
    ``loc + P^-1 grad``, each local sd is ``1 / sqrt(P_jj / scale)`` (mean-field within the row),
    and the map from the globals is ``C = P^-1 H_zg`` (the exact ``E[z_i | g]`` of a Gaussian
    row). A row whose precision is not positive keeps its parameters.
    """
    prec = -h_zz
    diag = jnp.diagonal(prec, axis1=-2, axis2=-1)
    ok = jnp.all(diag > 0, -1) & jnp.all(jnp.isfinite(prec), (-2, -1))
    safe = jnp.where(ok[:, None, None], prec, jnp.eye(prec.shape[-1], dtype=prec.dtype))
    chol = jnp.linalg.cholesky(safe)
    ok = ok & jnp.all(jnp.isfinite(chol), (-2, -1))
    chol = jnp.where(ok[:, None, None], chol, jnp.eye(prec.shape[-1], dtype=prec.dtype))
    solve = jax.vmap(lambda c, b: jax.scipy.linalg.cho_solve((c, True), b))
    out = {"loc": lp["loc"] + solve(chol, grad[..., None])[..., 0],
           "log_s": 0.5 * (jnp.log(scale) - jnp.log(jnp.where(diag > 0, diag, 1.0)))}
    if "coup" in lp:
        out["coup"] = solve(chol, h_zg)
    return {k: jnp.where(ok.reshape((-1,) + (1,) * (v.ndim - 1)), v, lp[k]) for k, v in out.items()}


def make_local_loss(gfam: Family, layout: RowLayout, logp: Callable, num_rows: int,
                    num_particles: int = 1) -> Callable:
    """``f(params, key, batch) -> (loss, grads)``: the negative ELBO of all rows, estimated on
    the batch's rows ``batch[ROWS]``, the gradient of the global parameters, and for the batch's
    rows their targets (:func:`row_targets`, under ``grads["rows"]``) and numbers (``grads[ROWS]``).

    The row targets average the gradient over an antithetic pair of local draws (``z = m +- s
    eps``: exact for a Gaussian row whatever the draw) and take the Hessian blocks at the first;
    the loss and the globals' gradient are those of the ELBO with the batch's rows at their
    targets (first the local step, then the global one, as in Hoffman et al.'s SVI).
    """
    scale = float(num_rows) / layout.rows

    def negative_elbo(gp: Any, lp: Any, key: jax.Array, batch: Any) -> jax.Array:
        kg, kl = jax.random.split(key)
        g, lqg = gfam.sample_and_log_q(gp, kg, num_particles)
        z, lql = local_draws(lp, g, kl)
        lp_ = jax.vmap(logp, in_axes=(0, None))(layout.join(g, z), batch)
        return -jnp.mean(lp_ - lqg - scale * lql)

    def targets(gp: Any, lp: Any, key: jax.Array, batch: Any) -> dict:
        kg, kl = jax.random.split(key)
        g = gfam.sample_and_log_q(gp, kg, 1)[0]
        z = local_draws(lp, g, kl)[0]
        f_z = lambda g1, z1: jax.grad(lambda z2: logp(layout.join(g1[None], z2[None])[0], batch))(z1)  # noqa: E731
        mirrored = 2 * conditional_mean(lp, g)[0] - z[0]   # the antithetic draw given g
        grad = 0.5 * (f_z(g[0], z[0]) + f_z(g[0], mirrored))
        h_zz, h_zg = _row_curvature(f_z, g[0], z[0], "coup" in lp)
        return row_targets(lp, grad, h_zz, h_zg, scale)

    def loss_and_grad(params: Any, key: jax.Array, batch: Any) -> tuple[jax.Array, Any]:
        rows = batch[ROWS]
        lp = jax.lax.stop_gradient({k: params[k][rows] for k in LOCAL_KEYS if k in params})
        if "anchor" in params:
            lp["anchor"] = jax.lax.stop_gradient(params["anchor"])
        k_rows, k_elbo = jax.random.split(key)
        moved = targets(jax.lax.stop_gradient(params["g"]), lp, k_rows, batch)
        # the globals' gradient sees the batch's rows where this step puts them (a row seen for
        # the first time would otherwise pull the globals towards its initial values)
        loss, gg = jax.value_and_grad(negative_elbo)(params["g"], {**lp, **moved}, k_elbo, batch)
        return loss, {"g": gg, "rows": moved, ROWS: rows}

    return loss_and_grad


def _pick(ok: jax.Array, a: Any, b: Any) -> Any:
    """Tree ``a`` where the step is finite (``ok``), else tree ``b`` (the step is skipped)."""
    return jax.tree_util.tree_map(lambda x, y: jnp.where(ok, x, y), a, b)


def _finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


class RowState(NamedTuple):
    """Adam's state of the globals, the number of times each row was updated, the steps done."""

    g: Any
    count: jax.Array
    step: jax.Array
    since: jax.Array     # steps since the globals were last rewhitened (the average's window)


class RowSteps:
    """Adam on the globals; each batch row moves towards its target (:func:`row_targets`).

    The global step is ``lr / sqrt(1 + t / decay)`` at step ``t``, and the parameters keep
    under ``g_avg`` an average of the global iterates with weights growing as ``t**AVERAGE_POWER``
    (the later iterates count most; the minibatch noise of the globals averages out);
    ``frozen``: entries of the global family's parameters left alone. With ``rewhiten`` (the
    global family's), at steps 64, 128, 256, ... the globals restart from their average,
    reparameterised so that a step is measured in q's own sds (a global whose posterior sd is
    0.001 is not moved by steps of 0.05), with a fresh Adam and a fresh average. A row updated for the ``k``-th time moves the
    fraction ``max(1 / sqrt(k), min_rate)`` of the way to its target: all of it on its first
    visit (a Gaussian row is then exact given the globals), less later, so that noisy targets
    average out while the globals move.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> opt = RowSteps(0.1)
    >>> p = {"g": {"loc": jnp.zeros(1)}, "g_avg": {"loc": jnp.zeros(1)}, "loc": jnp.zeros((4, 1)), "log_s": jnp.zeros((4, 1))}
    >>> s = opt.init(p)
    >>> grads = {"g": {"loc": jnp.ones(1)}, ROWS: jnp.array([1, 3]),
    ...          "rows": {"loc": jnp.ones((2, 1)), "log_s": jnp.zeros((2, 1))}}
    >>> p2, s2, _ = jax.jit(opt.apply)(grads, s, p)   # as in the compiled loop: one program
    >>> p2["loc"][:, 0].tolist(), s2.count.tolist(), round(float(p2["g"]["loc"][0]), 3)
    ([0.0, 1.0, 0.0, 1.0], [0, 1, 0, 1], -0.1)
    """

    def __init__(self, lr: float, decay: float = 1000.0, frozen: Callable | None = None,
                 min_rate: float = 0.05, rewhiten: Callable | None = None) -> None:
        self.lr, self.decay, self.min_rate = float(lr), float(decay), float(min_rate)
        self.rewhiten = rewhiten
        inner = optax.adam(lambda t: self.lr / jnp.sqrt(1.0 + t / self.decay))
        self.glob = inner if frozen is None else optax.masked(inner, frozen)

    def init(self, params: Any) -> RowState:
        zero = jnp.zeros((), jnp.int32)
        return RowState(self.glob.init(params["g"]), jnp.zeros((params["loc"].shape[0],), jnp.int32), zero, zero)

    def update(self, grads: Any, state: Any, params: Any = None) -> Any:  # pragma: no cover
        raise TypeError("RowSteps updates only the rows of a batch: the engine calls apply()")

    def apply(self, grads: Any, state: RowState, params: Any, ok: Any = True) -> tuple[Any, RowState, jax.Array]:
        """New parameters and state after one step (only the batch's rows change), and whether the
        step was applied: with ``ok`` false, or a non-finite new value, everything stays as it was."""
        upd, gstate = self.glob.update(grads["g"], state.g, params["g"])
        g = optax.apply_updates(params["g"], upd)
        step, since = state.step + 1, state.since + 1
        w = (AVERAGE_POWER + 1.0) / (since.astype(jnp.float32) + AVERAGE_POWER)
        avg = jax.tree_util.tree_map(lambda a, b: a + (b - a) * w.astype(a.dtype), params["g_avg"], g)
        if self.rewhiten is not None:
            redo = (step >= 64) & ((step & (step - 1)) == 0)
            g, avg, gstate, since = jax.lax.cond(redo, self._restart, lambda *a: a, g, avg, gstate, since)
        rows = grads[ROWS]
        t = state.count[rows] + 1
        rate = jnp.maximum(jax.lax.rsqrt(t.astype(params["loc"].dtype)), self.min_rate)
        old = {k: params[k][rows] for k in grads["rows"]}
        rowvals = {k: v + rate.reshape((-1,) + (1,) * (v.ndim - 1)) * (grads["rows"][k] - v) for k, v in old.items()}
        ok = jnp.asarray(ok) & _finite((g, avg, rowvals))
        pick = functools.partial(_pick, ok)
        new = dict(params, g=pick(g, params["g"]), g_avg=pick(avg, params["g_avg"]))
        for k, v in pick(rowvals, old).items():
            new[k] = params[k].at[rows].set(v)
        count = state.count.at[rows].set(jnp.where(ok, t, t - 1))
        return new, RowState(pick(gstate, state.g), count, jnp.where(ok, step, state.step),
                             jnp.where(ok, since, state.since)), ok

    def _restart(self, g: Any, avg: Any, gstate: Any, since: jax.Array) -> tuple:
        start = self.rewhiten(avg)
        return start, start, self.glob.init(start), jnp.zeros_like(since)


def make_amortised_loss(gfam: Family, layout: RowLayout, logp: Callable, num_rows: int, amortiser: Any,
                        subsampled: bool, num_particles: int = 1) -> Callable:
    """``f(params, key, batch) -> (loss, grads)`` of an amortised fit: the negative ELBO of all
    rows estimated on the batch's rows (local terms scaled by N/B), whose rows' q comes from the
    encoder (:class:`~variational.families.amortised.Amortiser`) at their data; the gradient
    of the global family's (``g``) and the encoder's (``enc``) parameters.

    The draws come in four antithetic pairs, ``g = m_g +- L eps_g`` and, given each, the rows'
    ``z = m +- s eps``: the terms of the globals' gradient that are odd in either noise cancel,
    among them the batch's spread of the rows' means times ``eps_g`` and ``s eps`` times
    ``eps_g``, each N/B times a sum over the batch, which at N = 10^5 rows swamp the gradient
    of a global's scale."""
    scale = float(num_rows) / layout.rows

    def loss_and_grad(params: Any, key: jax.Array, batch: Any) -> tuple[jax.Array, Any]:
        x = amortiser.features(batch, batch[ROWS] if subsampled else None)
        anchor = jax.lax.stop_gradient(gfam.mean(params["g"]))   # (C moves the rows with g about its mean)

        def negative_elbo(gp: Any, enc: Any) -> jax.Array:
            kg, kl = jax.random.split(key)
            g, lqg = gfam.sample_and_log_q(gp, kg, num_particles)
            rows = amortiser.rows(enc, x, anchor)
            z, lql = local_draws(rows, g, kl)
            noise = z - conditional_mean(rows, g)
            gs = jnp.concatenate([g, 2 * gfam.mean(gp)[None] - g])   # (Gaussian q: the same log q at all four)
            m = conditional_mean(rows, gs)
            both = jnp.tile(noise, (2, 1, 1))
            flat = layout.join(jnp.concatenate([gs, gs]), jnp.concatenate([m + both, m - both]))
            lp_ = jax.vmap(logp, in_axes=(0, None))(flat, batch)   # (one trace of the model)
            return -(jnp.mean(lp_) - jnp.mean(lqg) - scale * jnp.mean(lql))

        loss, (gg, ge) = jax.value_and_grad(negative_elbo, argnums=(0, 1))(params["g"], params["enc"])
        return loss, {"g": gg, "enc": ge}

    return loss_and_grad


class AmortisedSteps:
    """Adam on the global family's and the encoder's parameters, with the step
    ``lr / sqrt(1 + t / decay)``; the parameters keep under ``g_avg`` and ``enc_avg`` averages
    of the iterates weighted as ``t**AVERAGE_POWER`` (what the fit reports). ``frozen``: the
    global family's ``trainable`` (entries it leaves alone). With ``rewhiten`` (the global
    family's), at steps 64, 128, 256, ... both restart from their averages, the globals
    reparameterised so that a step is measured in q's own sds (as :class:`RowSteps` does: a
    global whose posterior sd is 0.003 is not moved by steps of 0.02), with a fresh Adam and
    fresh averages. The state is ``(Adam's, steps done, steps since the last restart)``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> p = {"g": {"loc": jnp.zeros(1)}, "enc": {"w": jnp.zeros(2)}}
    >>> p = dict(p, g_avg=p["g"], enc_avg=p["enc"])
    >>> opt = AmortisedSteps(0.1)
    >>> step = jax.jit(opt.apply)                    # as in the compiled loop: one program
    >>> p2, s2, ok = step({"g": {"loc": jnp.ones(1)}, "enc": {"w": -jnp.ones(2)}}, opt.init(p), p)
    >>> round(float(p2["g"]["loc"][0]), 3), [round(float(w), 3) for w in p2["enc_avg"]["w"]], int(s2[1])
    (-0.1, [0.1, 0.1], 1)
    """

    def __init__(self, lr: float, decay: float = 1000.0, frozen: Callable | None = None,
                 rewhiten: Callable | None = None) -> None:
        self.lr, self.decay, self.rewhiten = float(lr), float(decay), rewhiten
        inner = optax.adam(lambda t: self.lr / jnp.sqrt(1.0 + t / self.decay))
        self.opt = inner if frozen is None else optax.masked(
            inner, lambda p: {"g": frozen(p["g"]), "enc": jax.tree_util.tree_map(lambda _: True, p["enc"])})

    def init(self, params: Any) -> tuple:
        zero = jnp.zeros((), jnp.int32)
        return self.opt.init({"g": params["g"], "enc": params["enc"]}), zero, zero

    def update(self, grads: Any, state: Any, params: Any = None) -> Any:  # pragma: no cover
        raise TypeError("AmortisedSteps keeps averages of the iterates: the engine calls apply()")

    def apply(self, grads: Any, state: tuple, params: Any, ok: Any = True) -> tuple[Any, tuple, jax.Array]:
        """New parameters and state after one step; with ``ok`` false or a non-finite result,
        everything stays as it was."""
        trained, before = {"g": params["g"], "enc": params["enc"]}, {"g": params["g_avg"], "enc": params["enc_avg"]}
        upd, inner = self.opt.update(grads, state[0], trained)
        new = optax.apply_updates(trained, upd)
        step, since = state[1] + 1, state[2] + 1
        w = (AVERAGE_POWER + 1.0) / (since.astype(jnp.float32) + AVERAGE_POWER)
        avg = jax.tree_util.tree_map(lambda a, b: a + (b - a) * w.astype(a.dtype), before, new)
        if self.rewhiten is not None:
            redo = (step >= 64) & ((step & (step - 1)) == 0)
            new, avg, inner, since = jax.lax.cond(redo, self._restart, lambda *a: a, new, avg, inner, since)
        ok = jnp.asarray(ok) & _finite((new, avg))
        pick = functools.partial(_pick, ok)
        new, avg = pick(new, trained), pick(avg, before)
        out = dict(params, g=new["g"], enc=new["enc"], g_avg=avg["g"], enc_avg=avg["enc"])
        return out, (pick(inner, state[0]), jnp.where(ok, step, state[1]), jnp.where(ok, since, state[2])), ok

    def _restart(self, new: Any, avg: Any, inner: Any, since: jax.Array) -> tuple:
        start = {"g": self.rewhiten(avg["g"]), "enc": avg["enc"]}
        return start, start, self.opt.init(start), jnp.zeros_like(since)
