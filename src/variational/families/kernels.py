"""Stein kernels: the SVGD direction for a kernel ``k``.

For particles ``x_1..x_P`` with scores ``g_j = grad log p(x_j)``,

    phi(x_i) = 1/P sum_j [ drive * k(x_j, x_i) g_j + grad_{x_j} k(x_j, x_i) ]

(``drive`` is 1 for SVGD; annealing and PyMC's temperature scale the driving term). Each kernel
computes both sums in closed form as matrix products:

- :class:`RBF` ``exp(-|x - y|^2 / h)``, ``h`` by the median heuristic (Liu & Wang 2016);
- :class:`IMQ` ``(c^2 + |x - y|^2)^beta`` with ``beta`` in (-1, 0) (Gorham & Mackey 2017);
- :class:`Linear` ``x . y + c``: for a Gaussian target the fixed points match its mean and
  covariance exactly when there are more particles than dimensions (Liu & Wang 2018);
- :class:`RandomFeatures` ``1/L sum_l f_l(x) f_l(y)``, ``f_l(x) = sqrt(2) cos(w_l . x / s + b_l)``
  with fixed draws ``w_l ~ N(0, I)``, ``b_l ~ U(0, 2 pi)`` and ``s = sqrt(h / 2)``: a rank-L
  approximation of the RBF kernel at O(P L D) per step instead of O(P^2 D) (Liu & Wang 2018).

NumPyro's SteinVI kernels of the same names (``RBFKernel``, ``IMQKernel``, ``LinearKernel``,
``RandomFeatureKernel``) define the same functions; see ``docs/objectives.md`` for what differs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import VariationalError

__all__ = ["Kernel", "RBF", "IMQ", "Linear", "RandomFeatures", "KERNELS", "make_kernel",
           "median_bandwidth"]


def _sq_dists(x: jax.Array) -> jax.Array:
    sq = jnp.sum(x * x, axis=1)
    return jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)


def _kth_smallest_nonneg(a: jax.Array, k: int) -> jax.Array:
    """Exact k-th smallest (0-based) of a 1-D non-negative float array.

    Binary search on the float's bit pattern (monotonic for non-negative floats): 32 fused
    counting passes, far cheaper on CPU than sorting the pairwise distances. Counts are summed
    as floats (exact below 2**24 elements; XLA vectorises float sums better than integer ones).
    """
    bits = jax.lax.bitcast_convert_type(a, jnp.int32)
    count_dtype = jnp.float32 if a.size < 2**24 else jnp.int32

    def body(i: jax.Array, lo_hi: tuple) -> tuple:
        lo, hi = lo_hi
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(jnp.where(bits <= mid, 1, 0).astype(count_dtype)) >= k + 1
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    lo, _ = jax.lax.fori_loop(0, 32, body, (jnp.int32(0), jnp.int32(0x7F800000)))
    return jax.lax.bitcast_convert_type(lo, a.dtype)


def _pairwise_median(d2: jax.Array) -> jax.Array:
    """``numpy.median(d2)`` of a symmetric (P, P) distance matrix with a zero diagonal.

    Only the P(P-1)/2 upper-triangle values are searched: the full matrix holds P zeros and
    each of them twice, so its order statistics are theirs.
    """
    p = d2.shape[0]
    rows, cols = np.triu_indices(p, 1)
    t = d2[rows, cols]
    n = p * p
    ranks = [(n - 1) // 2] if n % 2 else [n // 2 - 1, n // 2]
    ks = [(r - p) // 2 for r in ranks]        # rank in t (r < p: one of the zeros)
    values = []
    for r, k in zip(ranks, ks):
        if r < p:
            values.append(jnp.zeros((), d2.dtype))
        elif values and r - 1 >= p and ks[0] == k:
            values.append(values[-1])
        elif values and r - 1 >= p:           # the next order statistic after the previous one
            prev = values[-1]
            nxt = jnp.min(jnp.where(t > prev, t, jnp.inf))
            values.append(jnp.where(jnp.sum(jnp.where(t <= prev, 1.0, 0.0)) >= k + 1, prev, nxt))
        else:
            values.append(_kth_smallest_nonneg(t, k))
    return sum(values) / len(values)


def median_bandwidth(d2: jax.Array) -> jax.Array:
    """The median heuristic ``median(|x_i - x_j|^2) / log(P + 1)`` (1 when all particles agree)."""
    h = _pairwise_median(d2) / jnp.log(d2.shape[0] + 1.0)
    return jax.lax.stop_gradient(jnp.where(h > 0, h, 1.0))


class Kernel:
    """A Stein kernel: ``direction(x, g, drive)`` is the SVGD direction ``phi`` (P, D)."""

    name = "kernel"

    def direction(self, x: jax.Array, g: jax.Array, drive: Any = 1.0) -> jax.Array:  # pragma: no cover
        raise NotImplementedError

    def spec(self) -> dict:
        """The kernel as a JSON-able dict (``make_kernel`` rebuilds it)."""
        return {"name": self.name, **asdict(self)}


@dataclass(frozen=True)
class RBF(Kernel):
    """``exp(-|x - y|^2 / h)``; ``bandwidth=None``: the median heuristic at every step."""

    bandwidth: float | None = None
    name = "rbf"

    def direction(self, x: jax.Array, g: jax.Array, drive: Any = 1.0) -> jax.Array:
        d2 = _sq_dists(x)
        h = median_bandwidth(d2) if self.bandwidth is None else jnp.asarray(self.bandwidth, x.dtype)
        k = jnp.exp(-d2 / h)
        # sum_j grad_{x_j} k(x_j, x_i) = 2/h (x_i sum_j k_ij - sum_j k_ij x_j)   (k symmetric)
        repulsive = (2.0 / h) * (x * jnp.sum(k, axis=1, keepdims=True) - k @ x)
        return (drive * (k @ g) + repulsive) / x.shape[0]


@dataclass(frozen=True)
class IMQ(Kernel):
    """Inverse multiquadric ``(const^2 + |x - y|^2)^expon``, ``expon`` in (-1, 0)."""

    const: float = 1.0
    expon: float = -0.5
    name = "imq"

    def __post_init__(self) -> None:
        if not float(self.const) > 0:
            raise VariationalError(f"IMQ const={self.const!r} must be > 0")
        if not -1.0 < float(self.expon) < 0.0:
            raise VariationalError(f"IMQ expon={self.expon!r} must lie in (-1, 0)")

    def direction(self, x: jax.Array, g: jax.Array, drive: Any = 1.0) -> jax.Array:
        base = self.const ** 2 + _sq_dists(x)
        k = base ** self.expon
        b = self.expon * base ** (self.expon - 1.0)       # d k / d |x - y|^2
        # grad_{x_j} k(x_j, x_i) = 2 b_ij (x_j - x_i)
        repulsive = 2.0 * (b @ x - x * jnp.sum(b, axis=1, keepdims=True))
        return (drive * (k @ g) + repulsive) / x.shape[0]


@dataclass(frozen=True)
class Linear(Kernel):
    """``x . y + const``: matches a Gaussian target's mean and covariance exactly (P > D)."""

    const: float = 1.0
    name = "linear"

    def direction(self, x: jax.Array, g: jax.Array, drive: Any = 1.0) -> jax.Array:
        k = x @ x.T + self.const
        # grad_{x_j} k(x_j, x_i) = x_i, summed over the P particles j
        return (drive * (k @ g) + x.shape[0] * x) / x.shape[0]


@dataclass(frozen=True)
class RandomFeatures(Kernel):
    """Random Fourier features of the RBF kernel: ``n_features`` fixed draws (``seed``)."""

    n_features: int = 100
    bandwidth: float | None = None
    seed: int = 0
    name = "random_features"

    def __post_init__(self) -> None:
        if isinstance(self.n_features, bool) or int(self.n_features) < 1:
            raise VariationalError(f"n_features={self.n_features!r} must be a positive number of features")

    def direction(self, x: jax.Array, g: jax.Array, drive: Any = 1.0) -> jax.Array:
        p, d = x.shape
        kw, kb = jax.random.split(jax.random.PRNGKey(int(self.seed)))
        w = jax.random.normal(kw, (int(self.n_features), d), x.dtype)      # the same every step
        b = jax.random.uniform(kb, (int(self.n_features),), x.dtype, 0.0, 2.0 * np.pi)
        h = median_bandwidth(_sq_dists(x)) if self.bandwidth is None else jnp.asarray(self.bandwidth, x.dtype)
        s = jnp.sqrt(h / 2.0)
        arg = x @ w.T / s + b                                                # (P, L)
        f = jnp.sqrt(2.0) * jnp.cos(arg)
        df = -jnp.sqrt(2.0) * jnp.sin(arg)                                   # d f / d arg
        n = float(self.n_features)
        drive_term = f @ (f.T @ g) / n                                       # sum_j k(x_j, x_i) g_j
        repulsive = f @ (jnp.sum(df, axis=0)[:, None] * w / s) / n          # sum_j grad_{x_j} k
        return (drive * drive_term + repulsive) / p


KERNELS = {"rbf": RBF, "imq": IMQ, "linear": Linear, "random_features": RandomFeatures}


def make_kernel(kernel: str | Kernel | Mapping[str, Any], bandwidth: float | None = None) -> Kernel:
    """A kernel from a name (``"rbf"``, ``"imq"``, ``"linear"``, ``"random_features"``), a
    :class:`Kernel`, or its :meth:`Kernel.spec` dict. ``bandwidth`` applies to a named RBF or
    random-features kernel.

    Examples
    --------
    >>> make_kernel("imq")
    IMQ(const=1.0, expon=-0.5)
    >>> make_kernel({"name": "linear", "const": 2.0})
    Linear(const=2.0)
    """
    if isinstance(kernel, Kernel):
        return kernel
    if isinstance(kernel, Mapping):
        opts = dict(kernel)
        name = opts.pop("name", None)
    else:
        name, opts = kernel, {}
        if bandwidth is not None and name in ("rbf", "random_features"):
            opts["bandwidth"] = bandwidth
    if name not in KERNELS:
        raise VariationalError(f"kernel={kernel!r} is not known; choose one of {sorted(KERNELS)} "
                               f"or pass a kernel object (vi.kernels.IMQ(const=..., expon=...))")
    try:
        return KERNELS[name](**opts)
    except TypeError as e:
        raise VariationalError(f"kernel={kernel!r}: {e}") from None
