"""A Gaussian that follows the model's chains (``method="structured"``).

The flat unconstrained vector is split into *chains* (the coordinates of the model's long
vector sites, each read along its longest axis, as a latent series) and *globals* (the rest).
The family is the Gaussian

    w_g = u_g + S_g eps_g                        (full-rank over the globals)
    w_c = u_c + B (w_g - u_g) + x,  x_t = a_t x_{t-1} + sigma_t eps_t   (a Markov chain)

in whitened coordinates ``w = (z - c) / s`` (``c``, ``s`` a diagonal preconditioner held fixed
by the optimiser, reset by :meth:`Family.rewhiten`). Its precision is dense over the globals,
dense between globals and chain steps, and tridiagonal within each chain: every Gaussian with
that sparsity is a member. So it is exact for a linear Gaussian state-space model of first
order, whatever its length, and a draw, ``log q`` and the marginal sds cost time linear in the
length of the series (the recursions run as parallel prefix scans).

``S_g = diag(softplus(rho_g)) (I + tril(L, -1))`` is the scaled unit lower Cholesky factor of
:func:`~variational.families.full_rank`; ``sigma = softplus(rho_c)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from ..compilation import run_traced
from ..errors import VariationalError
from ._checks import positive_float
from .base import LOG_2PI, Family, Params, register_family, softplus_inv
from .gaussian import _ONE, softplus_inverse

__all__ = ["structured", "find_chains", "coupled_chains", "CHAIN_MIN_SIZE", "Chains"]

CHAIN_MIN_SIZE = 16
"""A latent site with at least this many unconstrained coordinates is a candidate series (a chain)."""

Chains = tuple[tuple[int, tuple[int, ...]], ...]
_FROZEN = ("pre_loc", "pre_scale")


def find_chains(layout: Sequence[Any], min_size: int = CHAIN_MIN_SIZE, logp: Any = None,
                at: Any = None, data: Any = None) -> Chains:
    """The chains of a model's flat layout: ``(offset, unconstrained shape)`` of each series.

    Every latent site with at least ``min_size`` unconstrained coordinates is a candidate,
    read along its longest axis (the last of equals), one chain per index of its other axes.
    Given the model's log density ``logp(z, data)`` of the flat vector and a point ``at``, a candidate
    is a series only where the log density couples neighbours along that axis (see
    :func:`coupled_chains`): exchangeable group effects are not a series, a random walk is. When
    no candidate is coupled, all candidates are returned (``method="structured"`` asked for).

    Examples
    --------
    >>> from variational.model.handlers import SiteLayout
    >>> find_chains([SiteLayout("s", (), (), 0, 1), SiteLayout("x", (100,), (100,), 1, 100)])
    ((1, (100,)),)
    """
    chains = tuple((int(s.offset), tuple(int(n) for n in s.unconstrained_shape)) for s in layout
                   if len(s.unconstrained_shape) >= 1 and int(s.size) >= int(min_size))
    if logp is None or not chains:
        return chains
    return coupled_chains(chains, logp, at, data) or chains


def _series_axis(shape: tuple[int, ...]) -> int:
    """The axis a chain runs along: the longest, the last of equals."""
    return len(shape) - 1 - int(np.argmax(np.asarray(shape)[::-1]))


def _probe_hvp(logp: Any, z: jax.Array, vs: jax.Array, data: Any) -> jax.Array:
    grad = jax.grad(lambda x: logp(x, data))
    return jax.vmap(lambda v: jax.jvp(grad, (z,), (v,))[1])(vs)


def coupled_chains(chains: Chains, logp: Any, at: Any, data: Any = None, tol: float = 1e-6) -> Chains:
    """The chains along which ``logp`` couples step ``t`` with its neighbours, from one
    Hessian-vector product per chain at the point ``at``.

    A chain's probe vector is 1 at its own even steps and 0 elsewhere, so the product at its odd
    steps sums the Hessian's entries between them and its even steps: exactly zero for
    exchangeable coordinates (group effects given their hyperparameters), not for a random walk,
    an autoregression or a state-space path. (One probe for all chains at once read a coupling
    between two sites as one along each: an item-response model's person effects, each coupled
    to every item, became a series.) A chain couples when its largest such entry exceeds
    ``tol`` times the largest entry at its even steps. ``logp(z, data)`` is a traceable function
    of the flat vector and the data; the product is one compiled program
    (:func:`variational.compilation.run_traced`).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> walk = lambda z, data: -0.5 * jnp.sum(jnp.diff(z[:20]) ** 2) - 0.5 * jnp.sum(z[20:] ** 2)
    >>> coupled_chains(((0, (20,)), (20, (20,))), walk, jnp.zeros(40))
    ((0, (20,)),)
    """
    at = np.asarray(at)
    probes, sites = np.zeros((len(chains),) + at.shape, at.dtype), []
    for i, (offset, shape) in enumerate(chains):
        idx = offset + np.arange(int(np.prod(shape))).reshape(shape)
        even = np.indices(shape)[_series_axis(shape)] % 2 == 0
        probes[i, idx[even]] = 1.0
        sites.append((idx[even], idx[~even]))
    lift = getattr(getattr(logp, "__self__", None), "lift", None)   # (a LogDensity's model's numbers)
    hv = np.abs(np.asarray(run_traced("series probe", functools.partial(_probe_hvp, logp), at, probes,
                                      {} if data is None else data, lift=lift)))
    return tuple(c for i, (c, (even, odd)) in enumerate(zip(chains, sites))
                 if odd.size and np.max(hv[i, odd]) > tol * np.max(hv[i, even]) and np.isfinite(hv[i, odd]).all())


@functools.lru_cache(maxsize=64)
def _index(chains: Chains | None, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(perm, inverse, link)``: the flat coordinates in the order globals then chain steps, its
    inverse, and for each chain step 1.0 where it follows the step before it in its chain."""
    if chains is None:
        chains = ((0, (d,)),)
    steps, link = [], []
    for offset, shape in chains:
        if offset < 0 or offset + int(np.prod(shape)) > d:
            raise VariationalError(f"chains={chains!r} do not fit in the model's {d} latent dimensions")
        idx = offset + np.arange(int(np.prod(shape))).reshape(shape)
        axis = _series_axis(shape)
        series = np.moveaxis(idx, axis, -1).reshape(-1, shape[axis])
        steps.append(series.ravel())
        link.append(np.tile(np.r_[0.0, np.ones(shape[axis] - 1)], series.shape[0]))
    chain = np.concatenate(steps) if steps else np.zeros(0, int)
    if len(np.unique(chain)) != len(chain):
        raise VariationalError(f"chains={chains!r} overlap; each coordinate may be in one chain")
    glob = np.setdiff1d(np.arange(d), chain)
    perm = np.concatenate([glob, chain]).astype(np.int32)
    return perm, np.argsort(perm).astype(np.int32), (np.concatenate(link) if link else np.zeros(0))


def _recurrence(a: jax.Array, b: jax.Array) -> jax.Array:
    """``y`` with ``y_t = a_t y_{t-1} + b_t`` along the last axis (``y_{-1} = 0``), as a prefix scan."""
    def combine(x, y):
        return y[0] * x[0], y[0] * x[1] + y[1]

    a = jnp.broadcast_to(a, b.shape)
    return jax.lax.associative_scan(combine, (a, b), axis=b.ndim - 1)[1]


@dataclass(frozen=True)
class _Markov:
    """The functions of :func:`structured` for the series ``chains`` (see the module's docstring)."""

    chains: Chains | None
    rho0: float

    def parts(self, p: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        perm, inv, link = _index(self.chains, int(p["loc"].shape[0]))
        return perm, inv, link, int(len(perm) - len(link))

    def init(self, key: jax.Array, z0: jax.Array) -> Params:
        z0 = jnp.asarray(z0)
        _, _, link, g = self.parts({"loc": z0})
        t = len(link)
        return {"loc": jnp.zeros_like(z0), "rho": jnp.full_like(z0, self.rho0),
                "L": jnp.zeros((g, g), z0.dtype), "B": jnp.zeros((t, g), z0.dtype),
                "a": jnp.zeros((t,), z0.dtype), "pre_loc": z0, "pre_scale": jnp.ones_like(z0)}

    def pre(self, p: Params) -> tuple[jax.Array, jax.Array]:
        return jax.lax.stop_gradient(p["pre_loc"]), jax.lax.stop_gradient(p["pre_scale"])

    def factors(self, p: Params) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
        """In the order globals, chain: ``(u, S_g, sigma, a, B)``."""
        perm, _, link, g = self.parts(p)
        u, sd = p["loc"][perm], jax.nn.softplus(p["rho"][perm])
        s_g = sd[:g, None] * (jnp.tril(p["L"], -1) + jnp.eye(g, dtype=sd.dtype))
        return u, s_g, sd[g:], p["a"] * jnp.asarray(link, sd.dtype), p["B"]

    def logdet(self, p: Params) -> jax.Array:
        return jnp.sum(jnp.log(jax.nn.softplus(p["rho"]))) + jnp.sum(jnp.log(self.pre(p)[1]))

    def sample_and_log_q(self, p: Params, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        _, inv, _, g = self.parts(p)
        u, s_g, sig, a, b = self.factors(p)
        eps = jax.random.normal(key, (n,) + p["loc"].shape, p["loc"].dtype)
        dg = eps[:, :g] @ s_g.T
        wc = u[g:] + dg @ b.T + _recurrence(a, sig * eps[:, g:])
        c, s = self.pre(p)
        z = c + s * jnp.concatenate([u[:g] + dg, wc], axis=1)[:, inv]
        lq = -0.5 * jnp.sum(eps * eps, -1) - self.logdet(p) - 0.5 * z.shape[-1] * LOG_2PI
        return z, lq

    def log_q(self, p: Params, z: jax.Array) -> jax.Array:
        perm, _, _, g = self.parts(p)
        u, s_g, sig, a, b = self.factors(p)
        c, s = self.pre(p)
        w = ((z - c) / s)[..., perm] - u
        eg = solve_triangular(s_g, w[..., :g].T, lower=True).T if g else w[..., :0]
        r = w[..., g:] - w[..., :g] @ b.T
        prev = jnp.concatenate([jnp.zeros_like(r[..., :1]), r[..., :-1]], axis=-1)
        ec = (r - a * prev) / sig
        return (-0.5 * (jnp.sum(eg * eg, -1) + jnp.sum(ec * ec, -1)) - self.logdet(p)
                - 0.5 * z.shape[-1] * LOG_2PI)

    def mean(self, p: Params) -> jax.Array:
        c, s = self.pre(p)
        return c + s * p["loc"]

    def whitened_sd(self, p: Params) -> jax.Array:
        """Marginal sds of ``w`` in the order globals, chain."""
        _, s_g, sig, a, b = self.factors(p)
        var_c = jnp.sum((b @ s_g) ** 2, axis=1) + _recurrence(a * a, sig * sig)
        return jnp.sqrt(jnp.concatenate([jnp.sum(s_g * s_g, axis=1), var_c]))

    def std(self, p: Params) -> jax.Array:
        return self.pre(p)[1] * self.whitened_sd(p)[self.parts(p)[1]]

    def cov(self, p: Params) -> jax.Array:
        _, inv, _, g = self.parts(p)
        _, s_g, sig, a, b = self.factors(p)
        t = sig.shape[0]
        # x = A^{-1} diag(sigma) eps with A unit lower bidiagonal (-a below the diagonal)
        amat = jnp.eye(t, dtype=sig.dtype) - jnp.diag(a[1:], -1) if t else jnp.zeros((0, 0))
        fx = solve_triangular(amat, jnp.diag(sig), lower=True) if t else amat
        top = jnp.concatenate([s_g, jnp.zeros((g, t), s_g.dtype)], axis=1)
        bottom = jnp.concatenate([b @ s_g, fx], axis=1)
        f = jnp.concatenate([top, bottom], axis=0)[inv] * self.pre(p)[1][:, None]
        return f @ f.T

    def rewhiten(self, p: Params) -> Params:
        # the same q in coordinates centred at its mean and scaled by its marginal sds
        perm, inv, _, g = self.parts(p)
        d = self.whitened_sd(p)
        dg, dc = d[:g], d[g:]
        rho = softplus_inverse(jax.nn.softplus(p["rho"][perm]) / d)[inv]
        a = p["a"] * jnp.concatenate([jnp.ones_like(dc[:1]), dc[:-1]]) / dc
        return {**p, "loc": jnp.zeros_like(p["loc"]), "rho": rho, "a": a,
                "B": p["B"] * dg[None, :] / dc[:, None],
                "pre_loc": self.mean(p), "pre_scale": self.pre(p)[1] * d[inv]}

    def from_gaussian(self, m: jax.Array, cmat: jax.Array) -> Params:
        # the member with the same marginals, global block, regression of the chain on the
        # globals, and lag-one covariances of the chain given the globals (the Markov chain
        # closest to the Gaussian's conditional, in KL from it)
        m, cmat = jnp.asarray(m), jnp.asarray(cmat, jnp.asarray(m).dtype)
        perm, inv, link, g = self.parts({"loc": m})
        s = jnp.sqrt(jnp.diag(cmat))
        r = (cmat / s[:, None] / s[None, :])[perm][:, perm]
        chol = jnp.linalg.cholesky(r[:g, :g]) if g else jnp.zeros((0, 0), m.dtype)
        b = jnp.linalg.solve(r[:g, :g], r[:g, g:]).T if g else jnp.zeros((len(link), 0), m.dtype)
        rc = r[g:, g:] - b @ r[:g, g:]
        lag = jnp.concatenate([jnp.zeros(1, m.dtype), jnp.diagonal(rc, -1)]) * link
        var_prev = jnp.concatenate([jnp.ones(1, m.dtype), jnp.diag(rc)[:-1]])
        a = lag / var_prev
        sig = jnp.sqrt(jnp.maximum(jnp.diag(rc) - a * lag, 1e-12))
        dg = jnp.diag(chol) if g else jnp.zeros(0, m.dtype)
        return {"loc": jnp.zeros_like(m), "rho": softplus_inverse(jnp.concatenate([dg, sig]))[inv],
                "L": chol / dg[:, None] if g else chol, "B": b, "a": a, "pre_loc": m, "pre_scale": s}

    def step_scale(self, p: Params) -> Params:
        # as full-rank's: a row of L or of B moves a marginal sd by about one learning rate
        g = p["L"].shape[0]
        f = {"L": 1.0 / float(np.sqrt(max(g - 1, 1))), "B": 1.0 / float(np.sqrt(max(g, 1)))}
        return {k: jax.tree_util.tree_map(lambda _, x=f.get(k, 1.0): x, v) for k, v in p.items()}


def structured(chains: Chains | None = None, init_scale: float = 0.1) -> Family:
    """Gaussian whose precision is tridiagonal along the model's latent series (``method="structured"``).

    Parameters
    ----------
    chains : tuple of (offset, shape), optional
        Where the series lie in the flat unconstrained vector (:func:`find_chains` of the
        model's layout; ``vi.fit`` finds them). None: the whole vector is one chain.
    init_scale : float
        The standard deviation q starts with, in every direction.

    Returns
    -------
    Family
        Gaussian, with ``log_q``, moments, rewhitening and ``from_gaussian``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> fam = structured(chains=((1, (4,)),))        # one global, a series of 4 steps
    >>> @jax.jit                                     # one compiled program, not op by op
    ... def draw(key):
    ...     p = fam.init(key, jnp.zeros(5))
    ...     z, lq = fam.sample_and_log_q(p, jax.random.PRNGKey(1), 3)
    ...     return z, jnp.allclose(lq, fam.log_q(p, z), atol=1e-5)
    >>> z, same = draw(jax.random.PRNGKey(0))
    >>> z.shape, bool(same)
    ((3, 5), True)
    """
    rho0 = softplus_inv(positive_float("init_scale", init_scale))
    if chains is not None:
        chains = tuple((int(o), tuple(int(n) for n in s)) for o, s in chains)
    f = _Markov(chains, rho0)
    return Family("structured", f.init, f.sample_and_log_q, f.log_q, mean=f.mean, std=f.std, cov=f.cov,
                  options={"init_scale": init_scale}, frozen=_FROZEN,   # (chains: found from the model)
                  rewhiten=f.rewhiten, step_scale=f.step_scale, from_gaussian=f.from_gaussian, gaussian=True)


register_family("structured", structured)
