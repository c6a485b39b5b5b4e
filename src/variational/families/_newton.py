"""Second-order minimisation for the direct methods: one compiled function, scipy's trust region.

What a direct method pays for is mostly compilation: every compiled copy of the model's
gradient costs about as much as the engine's whole step. So Laplace and DADVI compile exactly
one function of the model, ``fgh(x, v) -> (f(x), grad f(x), H(x) v)`` (forward over reverse),
and drive scipy's trust-region Newton-CG (``trust-ncg``, what the DADVI paper and pymc-extras
use) from the host with it: the Hessian-vector products that steer the search are the same ones
that then build the exact Hessian at the optimum, one coordinate at a time. Every accepted step
lowers the objective, so the recorded trace decreases monotonically.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from ..errors import VariationalError
from ._fixed import named_directions

__all__ = ["Newton", "compile_fgh", "compile_vg", "compile_batch", "minimize", "hessian",
           "covariance_from_precision", "distance", "as_jax", "seed_of"]


class Newton(NamedTuple):
    """The result of :func:`minimize`."""

    x: np.ndarray        # the optimum (float64)
    f: float
    g: np.ndarray        # gradient there
    trace: np.ndarray    # objective after each iteration
    iterations: int
    calls: int           # calls of fgh (each: one gradient and one Hessian-vector product)
    message: str


def compile_fgh(objective: Callable[[jax.Array, Any], jax.Array], x: jax.Array, data: Any) -> Callable:
    """``fgh(x, v) -> (f, grad, Hv)`` of ``objective(x, data)``, compiled once (numpy in and out)."""
    def fgh(x: jax.Array, v: jax.Array, data: Any) -> tuple:
        (f, g), (_, hv) = jax.jvp(lambda y: jax.value_and_grad(objective)(y, data), (x,), (v,))
        return f, g, hv

    compiled = jax.jit(fgh).lower(x, x, data).compile()
    dtype = x.dtype

    def call(x: np.ndarray, v: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
        xx = np.asarray(x, dtype)
        f, g, hv = compiled(xx, np.zeros_like(xx) if v is None else np.asarray(v, dtype), data)
        return float(f), np.asarray(g, np.float64), np.asarray(hv, np.float64)

    return call


def compile_vg(objective: Callable[[jax.Array, Any], jax.Array], x: jax.Array, data: Any) -> Callable:
    """``vg(x) -> (f, grad)`` of ``objective(x, data)``, compiled once (numpy float64 out)."""
    compiled = jax.jit(jax.value_and_grad(objective)).lower(x, data).compile()
    dtype = x.dtype

    def call(x: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = compiled(np.asarray(x, dtype), data)
        return float(f), np.asarray(g, np.float64)

    return call


def compile_batch(fn: Callable[[jax.Array, Any], jax.Array], x: jax.Array, data: Any, rows: int = 256) -> Callable:
    """``batch(xs) -> fn(x, data)`` for every row of ``xs`` (any number), one compilation.

    Rows go through a compiled ``vmap`` of ``rows`` points at a time (the last block padded).
    """
    block = jnp.zeros((rows,) + x.shape, x.dtype)
    compiled = jax.jit(jax.vmap(fn, in_axes=(0, None))).lower(block, data).compile()

    def call(xs: np.ndarray) -> np.ndarray:
        xs = np.asarray(xs, x.dtype)
        out = []
        for start in range(0, xs.shape[0], rows):
            part = xs[start:start + rows]
            pad = rows - part.shape[0]
            if pad:
                part = np.concatenate([part, np.repeat(part[:1], pad, axis=0)])
            out.append(np.asarray(compiled(part, data), np.float64)[:rows - pad])
        return np.concatenate(out) if out else np.empty(0)

    return call


def seed_of(key: jax.Array) -> np.random.Generator:
    """A numpy generator determined by a JAX key (host-side randomness of a direct method)."""
    raw = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(raw, np.uint32).ravel().tolist())


def minimize(fgh: Callable, x0: Any, *, maxiter: int, gtol: float) -> Newton:
    """Trust-region Newton-CG (scipy) on ``fgh`` from ``x0``; records the objective per iteration."""
    calls, trace = [0], []
    last: dict = {}

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        calls[0] += 1
        f, g, _ = fgh(x)
        last.update(x=np.array(x), f=f, g=g)
        return f, g

    def hessp(x: np.ndarray, v: np.ndarray) -> np.ndarray:
        calls[0] += 1
        return fgh(x, v)[2]

    x0 = np.asarray(x0, np.float64)
    f0, _ = fun(x0)
    if not np.isfinite(f0) or not np.all(np.isfinite(last["g"])):
        raise VariationalError("the objective or its gradient is not finite at the starting point; "
                               "give start= values inside the support (or init= a fit)")
    with warnings.catch_warnings():   # scipy warns when float precision ends the search; we report it
        warnings.simplefilter("ignore")
        res = scipy.optimize.minimize(fun, x0, jac=True, hessp=hessp, method="trust-ncg",
                                      callback=lambda intermediate_result: trace.append(intermediate_result.fun),
                                      options={"maxiter": int(maxiter), "gtol": float(gtol)})
    f, g, _ = fgh(res.x)
    return Newton(np.asarray(res.x), f, g, np.asarray(trace, np.float64), int(res.nit), calls[0] + 1,
                  _message(res))


def _message(res: Any) -> str:
    text = str(res.message).rstrip(".")
    if "bad approximation" in text.lower():
        text = "stopped where float precision no longer predicts a decrease"
    return f"{text} after {int(res.nit)} iteration(s)"


def hessian(fgh: Callable, x: np.ndarray) -> np.ndarray:
    """The Hessian at ``x``, one Hessian-vector product per coordinate (symmetrised)."""
    eye = np.eye(x.shape[0])
    h = np.stack([fgh(x, e)[2] for e in eye])
    return 0.5 * (h + h.T)


def distance(g: np.ndarray, cov: np.ndarray) -> float:
    """How far the optimum still is, in posterior sds, by the local quadratic (Newton decrement)."""
    return float(np.sqrt(max(float(g @ cov @ g), 0.0)))


def covariance_from_precision(h: Any, labels: tuple[str, ...], what: str) -> np.ndarray:
    """``h^-1`` (float64) for a symmetric positive definite ``h``, else an error naming the sites.

    Definiteness is judged on ``h`` scaled to a unit diagonal (so a well-identified coordinate
    on the scale of dollars, with a curvature of 1e-8 next to others of 1e3, is not mistaken
    for a flat one); the directions whose curvature is not positive there are named by the
    coordinates that carry them.
    """
    h = np.asarray(h, dtype=np.float64)
    if not np.all(np.isfinite(h)):
        bad = sorted({labels[i] for i in np.argwhere(~np.isfinite(h))[:, 0]})
        raise VariationalError(f"{what} is not finite in the coordinates of {bad}; the log density is "
                               f"not twice differentiable there (or overflows); use method='advi'")
    d = np.diag(h)
    flat = d <= 0
    scale = 1.0 / np.sqrt(np.where(flat, 1.0, d))
    lam, vec = np.linalg.eigh(h * np.outer(scale, scale))
    bad = lam <= 1e-10 * max(abs(lam).max(), 1e-300)
    if flat.any() or bad.any():
        if flat.any():   # no curvature at all along these coordinates
            where, values = [labels[i] for i in np.flatnonzero(flat)], list(d[flat])
        else:
            where, values = named_directions(vec[:, bad], labels), list(lam[bad])
        shown = "; ".join(f"{w} (curvature {v:.3g})" for w, v in list(zip(where, values))[:4])
        raise VariationalError(
            f"{what} is not positive definite (the log density is not strictly concave there) "
            f"along {len(values)} direction(s): {shown}. The posterior is flat, improper or "
            f"multimodal along these sites, or the search stopped early; give them proper "
            f"priors, or use method='advi' or 'pathfinder'")
    return (scale[:, None] * (vec / lam) @ vec.T) * scale[None, :]


def as_jax(x: np.ndarray, dtype: Any) -> jax.Array:
    """A host array in the model's dtype."""
    return jnp.asarray(np.asarray(x), dtype)
