"""The amortised family of a model with local latent variables: an encoder gives each row its q.

Instead of parameters for each of the N rows (:mod:`.local`), a network maps the data of row
``i`` (its columns, standardised, as a vector ``x_i``) to that row's factor of

    q(g, z) = q_global(g) * prod_i N(z_i; m(x_i) + C(x_i) (g - E[g]), diag(s(x_i)^2))

The network is a *body* (the user's flax or equinox module, or a small perceptron in plain
JAX) and a linear head from the body's features **and from ``x_i`` itself** to the means and
the log-sds; the maps ``C`` (when ``coupled``) are linear in ``x_i``. An encoder linear in the
data is always in the family (exact for a Gaussian hierarchical model, where
``E[z_i | g, y_i]`` is linear in ``y_i`` and in ``g``). The maps are kept linear because their
gradient is faint (it scales with the globals' posterior sd): a network there drifts with the
noise of the steps and widens or narrows ``q(g)``.
The parameters are those of the global family and of the encoder: their size does not depend
on N, and a new row gets its posterior by passing its data through the encoder.

:class:`Amortiser` holds the encoder of a fit: how a batch becomes inputs, the initial
parameters and the rows' parameters from inputs; :func:`amortised_family` the family over the
flat vector of the N training rows (what ``fit.mean``, ``std`` and ``sample`` read).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import VariationalError
from .base import Family
from .local import RowLayout, local_family, reported_globals

__all__ = ["Amortiser", "amortised_family", "encoder_body"]

Params = Any
#: scale of the initial weights of the head from the body's features
HEAD_INIT = 0.01


def _mlp(hidden: Sequence[int]) -> tuple[Callable, Callable]:
    """A perceptron with tanh layers of ``hidden`` units: ``(init(key, x), apply(params, x))``."""

    def init(key: jax.Array, x: jax.Array) -> Params:
        sizes, layers = [x.shape[-1], *hidden], []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            w = jax.random.normal(jax.random.fold_in(key, i), (a, b), x.dtype) / np.sqrt(a)
            layers.append({"w": w, "b": jnp.zeros((b,), x.dtype)})
        return layers

    def apply(params: Params, x: jax.Array) -> jax.Array:
        for layer in params:
            x = jnp.tanh(x @ layer["w"] + layer["b"])
        return x

    return init, apply


def encoder_body(encoder: Any, hidden: Sequence[int]) -> tuple[Callable, Callable] | None:
    """``(init(key, x), apply(params, x))`` of the body: ``x`` (B, F) -> features (B, H).

    ``encoder`` None: the default perceptron (None when ``hidden`` is empty: no body, a linear
    encoder); a flax linen module (``init``/``apply``), a flax nnx module (split into its
    parameters and the rest) or an equinox module (applied to each row).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> init, apply = encoder_body(None, (3,))
    >>> apply(init(jax.random.PRNGKey(0), jnp.ones((2, 5))), jnp.ones((2, 5))).shape
    (2, 3)
    """
    if encoder is None:
        return _mlp(hidden) if hidden else None
    kinds = {".".join(c.__module__.split(".")[:2]) for c in type(encoder).__mro__}   # (a user's subclass too)
    if "flax.linen" in kinds:
        return (lambda key, x: encoder.init(key, x)), (lambda p, x: encoder.apply(p, x))
    if "flax.nnx" in kinds:   # a stateful object: its Param leaves are trained
        from flax import nnx
        graph, params, rest = nnx.split(encoder, nnx.Param, ...)
        return (lambda key, x: params), (lambda p, x: nnx.merge(graph, p, rest)(x))
    if any(k.split(".")[0] == "equinox" for k in kinds):
        import equinox as eqx
        params, static = eqx.partition(encoder, eqx.is_inexact_array)
        return (lambda key, x: params), (lambda p, x: jax.vmap(eqx.combine(p, static))(x))
    raise TypeError(f"Amortised(encoder={type(encoder).__name__}): give a flax (linen or nnx) or equinox "
                    f"module, or leave encoder out for the default perceptron (hidden=)")


class Amortiser:
    """The encoder of a fit with local latent variables: inputs, parameters and rows' q.

    ``columns``: the training columns (name -> array, one entry per row; a sample of the rows
    is enough) that fix the inputs' names, widths and standardisation; ``inputs``: the names
    read (default all); ``dl``/``dg``: local and global coordinates per row; ``coupled``: give
    each row a map from the globals; ``loc0``: the initial mean of a row's local values.

    Examples
    --------
    >>> import jax, numpy as np
    >>> am = Amortiser({"y": np.arange(4.0)}, None, None, (), dl=1, dg=1, coupled=True)
    >>> x = am.features({"y": np.arange(4.0)})
    >>> p = am.init(jax.random.PRNGKey(0), x)
    >>> {k: v.shape for k, v in am.rows(p, x, np.zeros(1)).items() if k != "anchor"}
    {'loc': (4, 1), 'log_s': (4, 1), 'coup': (4, 1, 1)}
    """

    def __init__(self, columns: Mapping[str, Any], inputs: Sequence[str] | None, encoder: Any,
                 hidden: Sequence[int], dl: int, dg: int, coupled: bool, loc0: Any = None,
                 init_scale: float = 0.1) -> None:
        names = sorted(columns) if inputs is None else list(inputs)
        missing = [n for n in names if n not in columns]
        if missing or not names:
            raise VariationalError(f"Amortised(inputs={inputs!r}): the encoder reads data columns, and "
                                   f"{missing or 'none'} are not among the data's {sorted(columns)}")
        self.names, self.dl, self.dg, self.coupled = names, int(dl), int(dg), bool(coupled)
        x = self._raw(columns)
        self.shift = x.mean(0)
        self.scale = np.where(x.std(0) > 0, x.std(0), 1.0).astype(np.float32)
        self.body = encoder_body(encoder, hidden)
        self.loc0 = np.zeros(self.dl, np.float32) if loc0 is None else np.asarray(loc0, np.float32)
        self.log_s0 = float(np.log(init_scale))

    @property
    def width(self) -> int:
        """Outputs of the head: means, log-sds and the maps from the globals."""
        return self.dl * (2 + (self.dg if self.coupled else 0))

    def _raw(self, columns: Mapping[str, Any]) -> np.ndarray:
        pieces = [np.asarray(columns[n], np.float32) for n in self.names]
        return np.concatenate([p.reshape(p.shape[0], -1) for p in pieces], axis=1)

    def features(self, columns: Mapping[str, Any], rows: Any = None) -> jax.Array:
        """The standardised inputs (B, F) of the rows of ``columns`` (at ``rows`` when given: a
        model that subsamples itself gets whole columns and the batch's row numbers)."""
        missing = [n for n in self.names if n not in columns]
        if missing:
            raise VariationalError(f"the encoder reads the columns {self.names}; {missing} are not in the "
                                   f"data given (columns: {sorted(k for k in columns if not k.startswith('_'))})")
        pieces = [jnp.asarray(columns[n], jnp.float32) for n in self.names]
        if rows is not None:
            pieces = [p[rows] for p in pieces]
        x = jnp.concatenate([p.reshape(p.shape[0], -1) for p in pieces], axis=1)
        return (x - self.shift) / self.scale

    def init(self, key: jax.Array, x: jax.Array) -> Params:
        """Initial encoder parameters: every row at ``loc0`` with sd ``init_scale``, no map."""
        bias = jnp.concatenate([jnp.asarray(self.loc0), jnp.full((self.dl,), self.log_s0),
                                jnp.zeros((self.width - 2 * self.dl,))])
        p = {"lin": jnp.zeros((x.shape[1], self.width)), "bias": bias}
        if self.body is not None:
            p["body"] = self.body[0](jax.random.fold_in(key, 0), x)
            h = self.body[1](p["body"], x)
            p["head"] = HEAD_INIT * jax.random.normal(jax.random.fold_in(key, 1), (h.shape[-1], 2 * self.dl))
        return p

    def rows(self, p: Params, x: jax.Array, anchor: Any = None) -> Params:
        """The rows' ``loc`` (B, dl), ``log_s`` (B, dl) and, when coupled, ``coup`` (B, dl, dg)
        and ``anchor``, from the encoder's parameters ``p`` and the inputs ``x`` (B, F)."""
        out = x @ p["lin"] + p["bias"]
        dl = self.dl
        if "body" in p:   # (means and log-sds; the maps C stay linear in the inputs)
            out = out.at[:, :2 * dl].add(self.body[1](p["body"], x) @ p["head"])
        r = {"loc": out[:, :dl], "log_s": out[:, dl:2 * dl]}
        if self.coupled:
            r["coup"] = out[:, 2 * dl:].reshape(x.shape[0], dl, self.dg)
            r["anchor"] = anchor
        return r


def amortised_family(gfam: Family, layout: RowLayout, amortiser: Amortiser, x_all: Any) -> Family:
    """``q_global(g) * prod_i q(z_i | g, x_i)`` over the flat vector of the N training rows, whose
    inputs are ``x_all`` (N, F); None (a streamed source): the answers about the training rows'
    local sites are refused (their data is not in memory), new rows' are not.

    The parameters hold ``g`` and ``enc`` (optimised) and their reported averages ``g_avg`` and
    ``enc_avg``. The anchor of the maps ``C`` is the mean of ``q_global``: the encoder's mean is
    each row's mean, and ``C`` only its covariance with the globals.
    """

    def rows(p: Params) -> Params:
        if x_all is None:
            raise VariationalError(
                "the training rows of a streamed source are not in memory, so their local posteriors "
                "cannot be given; pass rows through the encoder with fit.local_posterior(data)")
        return amortiser.rows(p.get("enc_avg", p["enc"]), x_all, gfam.mean(reported_globals(p)))

    family = local_family(gfam, layout, amortiser.coupled, rows=rows)

    def init(key: jax.Array, z0: jax.Array) -> Params:
        g0, l0 = layout.split(jnp.asarray(z0)[None])
        gp = gfam.init(key, g0[0])
        x = jnp.asarray(np.zeros((1, amortiser.shift.shape[0]), np.float32))
        enc = amortiser.init(jax.random.fold_in(key, 7), x)
        return {"g": gp, "g_avg": gp, "enc": enc, "enc_avg": enc}

    return dataclasses.replace(family, init=init)
