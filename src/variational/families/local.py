"""The family of a model with local latent variables: a global family times per-row Gaussians.

The flat unconstrained vector of such a model holds global coordinates ``g`` (``dg`` of them,
any family: mean-field, full-rank, low-rank) and, for each of the N rows, ``dl`` local
coordinates ``z_i`` (the values of the local sites at that row). The approximation is

    q(g, z) = q_global(g) * prod_i N(z_i; loc_i + C_i (g - a), diag(s_i^2))

with per-row parameters ``loc`` (N, dl), ``log_s`` (N, dl) and, when ``coupled``, ``C``
(N, dl, dg): each row's values given the globals, as in the exact posterior of a hierarchical
Gaussian model (``z_i | mu`` is linear in ``mu``). The anchor ``a`` is a fixed point (the
globals' initial mean): a row fitted once stays right while the globals move on, as far as
its mean is linear in them. Without ``C`` it is mean-field across rows
and globals. The log-determinant of the map from noise to ``z`` is ``sum log s`` whatever ``C``,
so ``log q`` stays a sum over rows: a step reads and writes only its batch's rows.

The parameters hold the optimiser's globals ``g`` and, under ``g_avg``, the average of their
iterates that the fit reports (the answers: draws, means, sds, ``log q``).

:class:`RowLayout` moves between the model's flat vector (sites in the order of
:class:`~variational.model.LogDensity`) and the pair ``(g, z)``.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .base import LOG_2PI, Family

__all__ = ["RowLayout", "local_family", "local_draws", "conditional_mean", "reported_globals"]

Params = Any


class RowLayout:
    """Where the global and the per-row local coordinates sit in a flat vector over ``rows`` rows.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from variational.model import SiteLayout
    >>> lay = RowLayout([SiteLayout("mu", (), (), 0, 1), SiteLayout("z", (3,), (3,), 1, 3)], ["z"], 3)
    >>> lay.dg, lay.dl
    (1, 1)
    >>> flat = lay.join(jnp.ones((1, 1)), jnp.zeros((1, 3, 1)))
    >>> flat.tolist()
    [[1.0, 0.0, 0.0, 0.0]]
    """

    def __init__(self, layout: Sequence[Any], local: Sequence[str], rows: int) -> None:
        self.rows = int(rows)
        self.parts: list[tuple[bool, int, int, int]] = []   # (is local, offset in g or z_i, size, per-row size)
        dg = dl = 0
        for s in layout:
            if s.name in local:
                k = s.size // self.rows
                self.parts.append((True, dl, s.size, k))
                dl += k
            else:
                self.parts.append((False, dg, s.size, s.size))
                dg += s.size
        self.dg, self.dl = dg, dl

    def join(self, g: jax.Array, z: jax.Array) -> jax.Array:
        """``g`` (n, dg) and ``z`` (n, rows, dl) -> flat vectors (n, D)."""
        n = g.shape[0]
        pieces = [z[:, :, o:o + k].reshape(n, size) if loc else g[:, o:o + size]
                  for loc, o, size, k in self.parts]
        return jnp.concatenate(pieces, axis=1) if pieces else jnp.zeros((n, 0), g.dtype)

    def split(self, flat: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Flat vectors (n, D) -> ``g`` (n, dg) and ``z`` (n, rows, dl)."""
        n, at, gs, zs = flat.shape[0], 0, [], []
        for loc, _, size, k in self.parts:
            piece = flat[:, at:at + size]
            (zs.append(piece.reshape(n, self.rows, k)) if loc else gs.append(piece))
            at += size
        g = jnp.concatenate(gs, axis=1) if gs else jnp.zeros((n, 0), flat.dtype)
        z = jnp.concatenate(zs, axis=2) if zs else jnp.zeros((n, self.rows, 0), flat.dtype)
        return g, z


def reported_globals(p: Params) -> Params:
    """The global parameters a fit reports: their running average when the optimiser keeps one."""
    return p.get("g_avg", p["g"])


def local_draws(lp: Params, g: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Local values ``z`` (n, R, dl) of the rows whose parameters are ``lp`` given global draws ``g``
    (n, dg), and their log density under q, (n,)."""
    loc, log_s = lp["loc"], lp["log_s"]
    eps = jax.random.normal(key, (g.shape[0],) + loc.shape, loc.dtype)
    z = conditional_mean(lp, g) + jnp.exp(log_s) * eps
    lq = -0.5 * jnp.sum(eps * eps, (1, 2)) - jnp.sum(log_s) - 0.5 * loc.size * LOG_2PI
    return z, lq


def conditional_mean(lp: Params, g: jax.Array) -> jax.Array:
    """``E[z_i | g] = loc_i + C_i (g - anchor)`` of the rows of ``lp`` at globals ``g`` (n, dg)."""
    if "coup" not in lp:
        return jnp.broadcast_to(lp["loc"], (g.shape[0],) + lp["loc"].shape)
    return lp["loc"] + jnp.einsum("rld,nd->nrl", lp["coup"], g - lp["anchor"])


def local_family(gfam: Family, layout: RowLayout, coupled: bool, init_scale: float = 0.1,
                 rows: Any = None) -> Family:
    """The family ``q_global(g) * prod_i q(z_i | g)`` over the flat vector of all rows.

    ``gfam`` is the family of the global coordinates; ``layout`` the split of the flat vector
    of all N rows; ``coupled`` adds the per-row maps ``C_i`` from the globals. ``rows``: a
    function of the parameters that gives the rows' ``loc``, ``log_s`` (and ``coup``, ``anchor``)
    when they are not stored in them (an encoder, :mod:`variational.families.amortised`).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from variational.model import SiteLayout
    >>> from variational.families import mean_field
    >>> lay = RowLayout([SiteLayout("mu", (), (), 0, 1), SiteLayout("z", (4,), (4,), 1, 4)], ["z"], 4)
    >>> fam = local_family(mean_field(), lay, coupled=True)
    >>> @jax.jit                                     # one compiled program, not op by op
    ... def draw(key):
    ...     p = fam.init(key, jnp.zeros(5))
    ...     z, lq = fam.sample_and_log_q(p, jax.random.PRNGKey(1), 3)
    ...     return z, jnp.allclose(fam.log_q(p, z), lq, atol=1e-4)
    >>> z, same = draw(jax.random.PRNGKey(0))
    >>> z.shape, bool(same)
    ((3, 5), True)
    """
    log_s0 = float(np.log(init_scale))
    rows = rows or (lambda p: p)

    def init(key: jax.Array, z0: jax.Array) -> Params:
        g0, l0 = layout.split(jnp.asarray(z0)[None])
        gp = gfam.init(key, g0[0])
        p = {"g": gp, "g_avg": gp, "loc": l0[0], "log_s": jnp.full_like(l0[0], log_s0)}
        if coupled:   # (anchor: a fixed point of the globals' space, the initial mean)
            p["coup"] = jnp.zeros(l0[0].shape + (layout.dg,), l0.dtype)
            p["anchor"] = gfam.mean(gp)
        return p

    def sample_and_log_q(p: Params, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        kg, kl = jax.random.split(key)
        g, lqg = gfam.sample_and_log_q(reported_globals(p), kg, n)
        z, lql = local_draws(rows(p), g, kl)
        return layout.join(g, z), lqg + lql

    def log_q(p: Params, flat: jax.Array) -> jax.Array:
        flat = jnp.atleast_2d(flat)
        g, z = layout.split(flat)
        r = rows(p)
        m = conditional_mean(r, g)
        u = (z - m) * jnp.exp(-r["log_s"])
        return (gfam.log_q(reported_globals(p), g) - 0.5 * jnp.sum(u * u, (1, 2)) - jnp.sum(r["log_s"])
                - 0.5 * m.shape[-1] * m.shape[-2] * LOG_2PI)

    def mean(p: Params) -> jax.Array:
        gm = gfam.mean(reported_globals(p))[None]
        return layout.join(gm, conditional_mean(rows(p), gm))[0]

    def std(p: Params) -> jax.Array:
        r = rows(p)
        var = jnp.exp(2 * r["log_s"])
        if "coup" in r:
            gp = reported_globals(p)
            cov = gfam.cov(gp) if gfam.cov is not None else jnp.diag(gfam.std(gp) ** 2)
            var = var + jnp.einsum("rld,de,rle->rl", r["coup"], cov, r["coup"])
        return layout.join(gfam.std(reported_globals(p))[None], jnp.sqrt(var)[None])[0]

    # named as the global family (a checkpoint rebuilds it with that method); options: the global's
    return Family(name=gfam.name, init=init, sample_and_log_q=sample_and_log_q,
                  log_q=log_q if gfam.log_q is not None else None,
                  mean=mean if gfam.mean is not None else None,
                  std=std if gfam.std is not None else None,
                  options=dict(gfam.options), gaussian=gfam.gaussian)
