"""Normalizing-flow families in the unconstrained space (``method="flow"``).

A draw is ``z = loc + scale * T_K(... T_1(eps))`` with ``eps ~ N(0, I)``: a standard Gaussian
base, ``depth`` invertible layers, then a learnable diagonal affine map (so ``depth=0`` is
mean-field ADVI, and the flow layers only have to learn the *shape* of the posterior). Its log
density follows from the change of variables,
``log q(z) = log N(eps) - sum_k log|det J_k| - sum log scale``.

Layers:

- ``"planar"``: ``f(x) = x + u_hat tanh(w.x + b)`` (Rezende & Mohamed 2015; PyMC's planar flow),
  with ``u_hat`` constrained so that ``f`` stays invertible;
- ``"iaf"``: inverse autoregressive flow (NumPyro's ``InverseAutoregressiveTransform`` with a
  MADE network of two hidden layers of ``width`` units);
- ``"bnaf"``: block neural autoregressive flow (NumPyro's ``BlockNeuralAutoregressiveTransform``
  with hidden factors ``(width, width)``).

Autoregressive layers alternate the order of the coordinates (a reversal, volume preserving).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.example_libraries import stax
from numpyro.distributions.flows import BlockNeuralAutoregressiveTransform, InverseAutoregressiveTransform
from numpyro.nn import AutoregressiveNN, BlockNeuralAutoregressiveNN

from ..errors import whole_number
from ._checks import positive_float
from ..errors import VariationalError
from .base import LOG_2PI, Family, register_family, softplus_inv

__all__ = ["flow", "FLOW_KINDS"]

# a layer: init(key, d) -> params ; apply(params, x (n, d)) -> (y, log|det J| (n,))
Layer = tuple[Callable[[jax.Array, int], Any], Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]]


def _planar_stack(x: jax.Array, p: Any) -> tuple[jax.Array, jax.Array]:
    """All planar layers in one ``lax.scan`` (parameters stacked on a leading axis of length depth)."""

    def layer(x: jax.Array, q: Any) -> tuple[jax.Array, jax.Array]:
        u, w = q["u"], q["w"]
        wu = w @ u
        # u_hat: w.u_hat >= -1 keeps the map invertible
        u_hat = u + (jax.nn.softplus(wu) - 1.0 - wu) * w / (w @ w + 1e-12)
        t = jnp.tanh(x @ w + q["b"])
        return x + t[:, None] * u_hat, jnp.log(jnp.abs(1.0 + (1.0 - t * t) * (w @ u_hat)))

    y, ladj = jax.lax.scan(layer, x, p)
    return y, jnp.sum(ladj, axis=0)


def _iaf(d: int, width: int) -> Layer:
    if d < 2:
        raise VariationalError(
            "flow='iaf' needs at least 2 latent dimensions (with 1 it is just an affine map); "
            "this model has 1: use flow='planar' or flow='bnaf', or method='advi'")
    if width < d:
        raise VariationalError(f"width={width} must be at least the number of latent dimensions ({d}) "
                               f"for flow='iaf'")
    net = AutoregressiveNN(d, [width, width], permutation=jnp.arange(d), nonlinearity=stax.Elu)
    return _numpyro_layer(d, net, InverseAutoregressiveTransform)


def _bnaf(d: int, width: int, residual: str | None) -> Layer:
    return _numpyro_layer(d, BlockNeuralAutoregressiveNN(d, [width, width], residual),
                          BlockNeuralAutoregressiveTransform)


def _numpyro_layer(d: int, net: tuple[Callable, Callable], transform: type) -> Layer:
    """A NumPyro flow transform around a stax network (``init_fn``, ``apply_fn``)."""
    net_init, net_apply = net

    def init(key: jax.Array, d: int) -> Any:
        return net_init(key, (d,))[1]

    def apply(p: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        t = transform(lambda v: net_apply(p, v))
        y, intermediates = t.call_with_intermediates(x)
        return y, t.log_abs_det_jacobian(x, y, intermediates)

    return init, apply


def _layers(flow: str, d: int, width: int, depth: int) -> list[Layer]:
    """``depth`` autoregressive layers of kind ``flow`` for dimension ``d``."""
    if flow == "iaf":
        return [_iaf(d, width) for _ in range(depth)]
    # gated residual connections between stacked BNAF layers, as NumPyro does
    return [_bnaf(d, width, "gated" if i < depth - 1 else None) for i in range(depth)]


FLOW_KINDS = {
    # kind: (default depth, default width(d))
    "planar": (8, lambda d: 1),
    "iaf": (2, lambda d: max(16, 2 * d)),
    "bnaf": (1, lambda d: 8),
}


def flow(flow: str = "iaf", depth: int | None = None, width: int | None = None,
         init_scale: float = 0.1) -> Family:
    """A normalizing flow with a Gaussian base (``method="flow"``).

    Parameters
    ----------
    flow : {"iaf", "bnaf", "planar"}
        The kind of layer.
    depth : int, optional
        Number of layers (default 2 for IAF, 1 for BNAF, 8 for planar).
    width : int, optional
        Hidden units per layer of IAF's network (default ``max(16, 2 D)``), or the hidden
        factor of BNAF's blocks (default 8). Planar layers have no width.
    init_scale : float
        Initial scale of the final affine map (the flow starts close to ``N(z0, init_scale^2)``).

    Returns
    -------
    Family

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> fam = flow("planar", depth=2)
    >>> p = fam.init(jax.random.PRNGKey(0), jnp.zeros(2))
    >>> z, lq = fam.sample_and_log_q(p, jax.random.PRNGKey(1), 4)
    >>> z.shape, lq.shape
    ((4, 2), (4,))
    """
    if flow not in FLOW_KINDS:
        raise VariationalError(f"flow={flow!r} is not known; choose one of {sorted(FLOW_KINDS)}")
    default_depth, default_width = FLOW_KINDS[flow]
    k = default_depth if depth is None else whole_number("depth", depth, minimum=0)
    if width is not None:
        width = whole_number("width", width, 1)
    rho0 = softplus_inv(positive_float("init_scale", init_scale))
    built: dict[int, list[Layer]] = {}

    def nets(d: int) -> list[Layer]:
        """The autoregressive layers for dimension ``d`` (built once per dimension)."""
        if d not in built:
            w = default_width(d) if width is None else width
            with jax.ensure_compile_time_eval():   # the masks are constants, even when first
                built[d] = _layers(flow, d, w, k)  # built inside a trace (no leaked tracers)
        return built[d]

    def init(key: jax.Array, z0: jax.Array) -> Any:
        d = z0.shape[0]
        if flow == "planar":
            ku, kw = jax.random.split(key)
            stack: Any = {"u": 0.01 * jax.random.normal(ku, (k, d), z0.dtype),
                          "w": 0.01 * jax.random.normal(kw, (k, d), z0.dtype),
                          "b": jnp.zeros((k,), z0.dtype)}
        else:
            keys = jax.random.split(key, max(k, 1))
            stack = [net[0](kk, d) for net, kk in zip(nets(d), keys)]
        return {"loc": jnp.asarray(z0), "rho": jnp.full_like(z0, rho0), "layers": stack}

    def forward(p: Any, eps: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Base draws ``eps`` (n, D) -> draws ``z`` (n, D) and their ``log q``."""
        d = p["loc"].shape[0]
        log_q = -0.5 * jnp.sum(eps * eps, -1) - 0.5 * d * LOG_2PI
        x = eps
        if flow == "planar":
            if k > 0:
                x, ladj = _planar_stack(x, p["layers"])
                log_q = log_q - ladj
        else:
            for i, ((_, apply), lp) in enumerate(zip(nets(d), p["layers"])):
                if i > 0:
                    x = x[:, ::-1]
                x, ladj = apply(lp, x)
                log_q = log_q - ladj
        scale = jax.nn.softplus(p["rho"])
        return p["loc"] + scale * x, log_q - jnp.sum(jnp.log(scale))

    def sample_and_log_q(p: Any, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        return forward(p, jax.random.normal(key, (n,) + p["loc"].shape, p["loc"].dtype))

    sample_and_log_q.forward = forward  # type: ignore[attr-defined]  (the map itself, for checks)

    return Family("flow", init, sample_and_log_q,
                  options={"flow": flow, "depth": k, "width": width, "init_scale": init_scale})


register_family("flow", flow)
