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

import contextlib
import threading
import time
import warnings
import weakref
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from ..compilation import program
from ..errors import VariationalError
from ._fixed import named_directions

__all__ = ["Newton", "ScipyDriver", "compile_fgh", "compile_vg", "compile_batch", "minimize", "hessian",
           "covariance_from_precision", "distance", "as_jax", "seed_of", "uses_linear_algebra",
           "over_draws", "Clock", "OutOfTime", "MAX_TIME", "budget_text", "float64"]

#: primitives of dense linear algebra (LAPACK calls on CPU)
LINEAR_ALGEBRA = frozenset({"cholesky", "triangular_solve", "lu", "lu_pivots_to_permutation", "eigh", "eig",
                            "qr", "geqrf", "geqp3", "householder_product", "orgqr", "svd", "schur",
                            "tridiagonal", "tridiagonal_solve", "hessenberg"})


class Newton(NamedTuple):
    """The result of :func:`minimize`."""

    x: np.ndarray        # the optimum (float64)
    f: float
    g: np.ndarray        # gradient there
    trace: np.ndarray    # objective after each iteration
    iterations: int
    calls: int           # calls of fgh (each: one gradient and one Hessian-vector product)
    message: str
    budget: str | None = None   # "maxiter" or "max_time" when a budget ended the search


_constants: dict[tuple[int, str], tuple[Any, Any]] = {}   # (id, dtype) -> weak refs (array, its copy)
_constants_lock = threading.Lock()
_installed: list[bool] = []


def _canonical_array(x: np.ndarray) -> Any:
    """A NumPy array as JAX takes it into a trace: in the dtype of the current mode (float64
    becomes float32 outside 64-bit mode), one copy per array and dtype while a trace holds it."""
    from jax._src import dtypes, literals

    dtype = np.dtype(dtypes.canonicalize_dtype(x.dtype))
    if dtype == x.dtype:
        return literals.TypedNdArray(x)        # a view: nothing to convert or keep
    key = (id(x), dtype.str)
    with _constants_lock:
        refs = _constants.get(key)
        if refs is not None and refs[0]() is x and refs[1]() is not None:
            return refs[1]()
        value = literals.TypedNdArray(np.asarray(x, dtype))
        if len(_constants) > 4096:   # forget arrays that are gone
            for k in [k for k, (a, v) in _constants.items() if a() is None or v() is None]:
                del _constants[k]
        try:
            _constants[key] = (weakref.ref(x), weakref.ref(value))
        except TypeError:
            pass
        return value


@contextlib.contextmanager
def float64() -> Iterator[None]:
    """JAX's 64-bit mode for a direct method's solve, safe for models that close over NumPy arrays.

    JAX 0.10 (jaxlib 0.10.2) keeps one converted copy of each NumPy array a traced function
    closes over, while any trace holds it, whatever the mode it was made in: a float32 copy
    from an earlier fit's program then enters a float64 trace (``lax.mul requires arguments to
    have the same dtypes, got float64, float32``), and a float64 copy from the solve enters the
    float32 programs of the fit's diagnosis (``broadcast_in_dim f64 -> f32`` at lowering). The
    first use installs a conversion of NumPy arrays that keeps one copy per array *and dtype*
    (JAX's own, less the mix-up), for the rest of the process.

    Examples
    --------
    >>> x = np.linspace(0.0, 1.0, 3)
    >>> with float64():
    ...     a = jax.jit(lambda b: b * x)(1.0)
    >>> str(a.dtype), str(jax.jit(lambda b: b * x)(jnp.float32(1.0)).dtype)
    ('float64', 'float32')
    """
    if not _installed:
        from jax._src import dtypes

        dtypes.register_canonicalize_value_handler(np.ndarray, _canonical_array)
        _installed.append(True)
    with jax.enable_x64(True):
        yield


#: the default time budget of a direct method's solver, in seconds
MAX_TIME = 300.0


class OutOfTime(Exception):
    """Raised inside a solver's callbacks when its time budget is spent."""


class Clock:
    """A solver's time budget: ``check()`` raises :class:`OutOfTime` once ``max_time`` seconds
    have passed since it was made (never when ``max_time`` is None)."""

    def __init__(self, max_time: float | None) -> None:
        self.max_time, self.start = max_time, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def check(self) -> None:
        if self.max_time is not None and self.elapsed() > self.max_time:
            raise OutOfTime


def budget_text(budget: str | None, maxiter: int, max_time: float | None, iterations: int, seconds: float) -> str:
    """How a search ended when a budget ended it, naming the option to raise."""
    if budget == "maxiter":
        return f"stopped at its iteration budget (maxiter={maxiter}) after {iterations} iteration(s)"
    return (f"stopped at its time budget (max_time={max_time:g} s) after {iterations} iteration(s) "
            f"in {seconds:.1f} s")


def compile_fgh(objective: Callable[[jax.Array, Any], jax.Array], x: jax.Array, data: Any,
                lift: Any = None) -> Callable:
    """``fgh(x, v) -> (f, grad, Hv)`` of ``objective(x, data)``, compiled once (numpy in and out);
    ``lift``: the model's numbers, an argument of the program (``LogDensity.lift``)."""
    def fgh(x: jax.Array, v: jax.Array, data: Any) -> tuple:
        (f, g), (_, hv) = jax.jvp(lambda y: jax.value_and_grad(objective)(y, data), (x,), (v,))
        return f, g, hv

    compiled = program("value, gradient, Hessian-vector product", fgh, x, x, data, lift=lift)
    dtype = x.dtype

    def call(x: np.ndarray, v: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
        xx = np.asarray(x, dtype)
        f, g, hv = compiled(xx, np.zeros_like(xx) if v is None else np.asarray(v, dtype), data)
        return float(f), np.asarray(g, np.float64), np.asarray(hv, np.float64)

    return call


def compile_vg(objective: Callable[[jax.Array, Any], jax.Array], x: jax.Array, data: Any,
               lift: Any = None) -> Callable:
    """``vg(x) -> (f, grad)`` of ``objective(x, data)``, compiled once (numpy float64 out)."""
    compiled = program("value and gradient", jax.value_and_grad(objective), x, data, lift=lift)
    dtype = x.dtype

    def call(x: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = compiled(np.asarray(x, dtype), data)
        return float(f), np.asarray(g, np.float64)

    return call


def _has_linear_algebra(jaxpr: Any) -> bool:
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in LINEAR_ALGEBRA:
            return True
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns") and _has_linear_algebra(inner):
                    return True
    return False


def uses_linear_algebra(fn: Callable, *args: Any) -> bool:
    """Whether ``fn(*args)`` calls dense linear algebra (a Cholesky factor, a triangular solve...).

    Such a function is mapped over draws one at a time (:func:`over_draws`): jaxlib's CPU
    runtime can deadlock in a triangular solve batched over draws (its batch is split over the
    intra-op threads that are already busy), observed with the Hessian of a Gaussian-process
    log density on two cores.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> uses_linear_algebra(lambda a: jnp.linalg.cholesky(a).sum(), jnp.eye(2))
    True
    >>> uses_linear_algebra(lambda a: (a * a).sum(), jnp.eye(2))
    False
    """
    return _has_linear_algebra(jax.make_jaxpr(fn)(*args).jaxpr)


def over_draws(fn: Callable, xs: Any, sequential: bool) -> Any:
    """``fn`` applied to every row of ``xs`` (a pytree with leading draw axes): ``lax.map`` one
    draw at a time when ``sequential`` (see :func:`uses_linear_algebra`), else ``vmap``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> [float(v) for v in over_draws(jnp.sum, jnp.ones((2, 3)), True)]
    [3.0, 3.0]
    """
    return jax.lax.map(fn, xs) if sequential else jax.vmap(fn)(xs)


def compile_batch(fn: Callable[[jax.Array, Any], jax.Array], x: jax.Array, data: Any, rows: int = 256,
                  lift: Any = None) -> Callable:
    """``batch(xs) -> fn(x, data)`` for every row of ``xs`` (any number), one compilation.

    Rows go through a compiled ``vmap`` of ``rows`` points at a time (the last block padded),
    or ``lax.map`` when ``fn`` calls dense linear algebra (:func:`uses_linear_algebra`).
    """
    block = jnp.zeros((rows,) + x.shape, x.dtype)
    sequential = uses_linear_algebra(fn, x, data)
    compiled = program("batch", lambda xs, d: over_draws(lambda z: fn(z, d), xs, sequential), block, data, lift=lift)

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
    not finite, so that a line search backs off instead of failing. A ``vg`` that raises
    :class:`OutOfTime` (a :class:`Clock` checked inside it) ends the search: the caller
    catches it and keeps its last accepted iterate.

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


def minimize(fgh: Callable, x0: Any, *, maxiter: int, gtol: float, max_time: float | None = None) -> Newton:
    """Trust-region Newton-CG (scipy) on ``fgh`` from ``x0``; records the objective per iteration.

    The search ends at the latest after ``maxiter`` iterations or ``max_time`` seconds (checked
    at every evaluation, so one long iteration cannot overrun it by more than one call); then
    ``budget`` says which, the message names the option, and ``x`` is the last accepted iterate.
    """
    trace: list[float] = []
    clock = Clock(max_time)

    def vg(x: np.ndarray) -> tuple[float, np.ndarray]:
        clock.check()
        return fgh(x)[:2]

    driver = ScipyDriver(vg)

    def hessp(x: np.ndarray, v: np.ndarray) -> np.ndarray:
        clock.check()
        driver.calls += 1
        return fgh(x, v)[2]

    def accept(intermediate_result: Any) -> None:
        trace.append(intermediate_result.fun)
        accepted["x"] = np.array(intermediate_result.x)

    x0 = np.asarray(x0, np.float64)
    driver.calls += 1
    f0, g0, _ = fgh(x0)   # (the start is evaluated whatever the time budget)
    if not np.isfinite(f0) or not np.all(np.isfinite(g0)):
        raise VariationalError("the objective or its gradient is not finite at the starting point; "
                               "give init=vi.Start(values=...) inside the support (or init= a fit)")
    accepted = {"x": x0}
    try:
        res = driver.minimize(x0, method="trust-ncg", hessp=hessp, callback=accept,
                              options={"maxiter": int(maxiter), "gtol": float(gtol)})
        x, nit = np.asarray(res.x), int(res.nit)
        budget = "maxiter" if res.status == 1 else None
        message = _message(res) if budget is None else budget_text(budget, maxiter, max_time, nit, clock.elapsed())
    except OutOfTime:
        x, nit, budget = accepted["x"], len(trace), "max_time"
        message = budget_text(budget, maxiter, max_time, nit, clock.elapsed())
    f, g, _ = fgh(x)
    return Newton(x, f, g, np.asarray(trace, np.float64), nit, driver.calls + 1, message, budget)


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
