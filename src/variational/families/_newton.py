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

__all__ = ["Newton", "ScipyDriver", "compile_fgh", "compile_vg", "compile_batch", "minimize", "hessian",
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


class ScipyDriver:
    """Drives ``scipy.optimize.minimize`` with a compiled ``vg(x) -> (f, grad)`` from the host.

    It counts the calls of the model's gradient (:attr:`calls`), remembers the gradient at
    every point scipy asked for (so that the iterates' gradients, read in a callback, cost
    nothing more), and with ``guard`` hands scipy ``(inf, 0)`` where the value or gradient is
    not finite, so that a line search backs off instead of failing.

    Examples
    --------
    >>> d = ScipyDriver(lambda x: (float(x @ x), 2 * x))
    >>> res = d.minimize(np.ones(2), method="L-BFGS-B")
    >>> bool(np.allclose(res.x, 0.0, atol=1e-6)), d.calls > 0
    (True, True)
    """

    def __init__(self, vg: Callable[[np.ndarray], tuple[float, np.ndarray]], guard: bool = False) -> None:
        self.vg, self.guard, self.calls = vg, guard, 0
        self.seen: dict[bytes, np.ndarray] = {}

    def fun(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """The value and gradient at ``x`` (counted and remembered)."""
        self.calls += 1
        f, g = self.vg(x)
        self.seen[np.asarray(x, np.float64).tobytes()] = g
        if self.guard and not (np.isfinite(f) and np.all(np.isfinite(g))):
            return np.inf, np.zeros_like(g)
        return f, g

    def gradient_at(self, x: np.ndarray) -> np.ndarray:
        """The gradient at a point scipy reached: remembered, or computed (and counted)."""
        g = self.seen.get(np.asarray(x, np.float64).tobytes())
        if g is None:
            self.calls += 1
            g = self.vg(x)[1]
        return g

    def minimize(self, x0: np.ndarray, *, method: str, callback: Callable | None = None,
                 options: dict | None = None, **kwargs: Any) -> Any:
        """``scipy.optimize.minimize`` from ``x0`` (scipy's warnings silenced: its message is reported)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return scipy.optimize.minimize(self.fun, np.asarray(x0, np.float64), jac=True, method=method,
                                           callback=callback, options=options or {}, **kwargs)


def minimize(fgh: Callable, x0: Any, *, maxiter: int, gtol: float) -> Newton:
    """Trust-region Newton-CG (scipy) on ``fgh`` from ``x0``; records the objective per iteration."""
    trace: list[float] = []
    driver = ScipyDriver(lambda x: fgh(x)[:2])

    def hessp(x: np.ndarray, v: np.ndarray) -> np.ndarray:
        driver.calls += 1
        return fgh(x, v)[2]

    x0 = np.asarray(x0, np.float64)
    f0, g0 = driver.fun(x0)
    if not np.isfinite(f0) or not np.all(np.isfinite(g0)):
        raise VariationalError("the objective or its gradient is not finite at the starting point; "
                               "give init=vi.Start(values=...) inside the support (or init= a fit)")
    res = driver.minimize(x0, method="trust-ncg", hessp=hessp, options={"maxiter": int(maxiter), "gtol": float(gtol)},
                          callback=lambda intermediate_result: trace.append(intermediate_result.fun))
    f, g, _ = fgh(res.x)
    return Newton(np.asarray(res.x), f, g, np.asarray(trace, np.float64), int(res.nit), driver.calls + 1,
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
