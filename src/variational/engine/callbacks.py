"""Callbacks: watch a fit while it trains, and stop it when it has converged.

A callback has PyMC's signature ``callback(fit, losses, i)``: the :class:`~variational.Fit`
(its parameters are the current ones), the loss history so far (``len(losses) == i``) and
``i``, the number of steps done. Raising ``StopIteration`` ends the fit cleanly.

A plain function is called after every step, which forces the compiled loop to return to
Python every step (slow). A callback with an ``every=k`` attribute is called every ``k``
steps, and the loop runs compiled in between; all callbacks here have it.

Examples
--------
>>> import variational as vi
>>> def model():
...     vi.Normal("x", 0, 1)
>>> tracker = vi.callbacks.Tracker(every=50, loc=lambda fit: float(fit.params["loc"][0]))
>>> fit = vi.fit(model, steps=200, progress=False, callbacks=[tracker])
>>> len(tracker["loc"]), tracker.steps
(4, [50, 100, 150, 200])
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import jax

__all__ = ["Callback", "Converged", "CheckParametersConvergence", "Tracker", "ELBOConvergence"]


class Converged(StopIteration):
    """Raised by a convergence rule; the fit ends, marked converged rather than interrupted."""


class Callback:
    """Base class of the built-in callbacks: ``every`` says how often it is called."""

    every: int = 1

    def __call__(self, fit: Any, losses: np.ndarray, i: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def _check_every(every: Any) -> int:
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every={every!r} must be a positive number of steps")
    return int(every)


def _relative(current: np.ndarray, prev: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    return (np.abs(current - prev) + eps) / (np.abs(prev) + eps)


def _absolute(current: np.ndarray, prev: np.ndarray) -> np.ndarray:
    return np.abs(current - prev)


_DIFFS = {"relative": _relative, "absolute": _absolute}


class CheckParametersConvergence(Callback):
    """Stop when the variational parameters stop moving (PyMC's callback of the same name).

    Every ``every`` steps the flattened parameters are compared with those of the previous
    call; the fit stops when the ``ord``-norm of the difference is below ``tolerance``.

    Parameters
    ----------
    every : int
        Steps between checks.
    tolerance : float
        Threshold of the norm of the change.
    diff : {"relative", "absolute"}
        ``"relative"``: ``(|new - old| + 1e-6) / (|old| + 1e-6)`` per parameter, which never
        settles for a parameter near 0 (a mean near 0, say); use ``"absolute"`` then.
    ord : float
        Order of the norm (``numpy.linalg.norm``), ``np.inf`` by default: the largest change.

    Examples
    --------
    >>> import variational as vi
    >>> def model():
    ...     vi.Normal("x", 3.0, 1.0)
    >>> cb = vi.callbacks.CheckParametersConvergence(diff="absolute", tolerance=1e-2)
    >>> fit = vi.fit(model, steps=20_000, optimizer="adagrad", learning_rate=0.1,
    ...              progress=False, callbacks=[cb])
    >>> fit.converged, fit.steps < 20_000
    (True, True)
    """

    def __init__(self, every: int = 100, tolerance: float = 1e-3, diff: str = "relative",
                 ord: float = np.inf) -> None:
        if diff not in _DIFFS:
            raise ValueError(f"diff={diff!r} is not known; use 'relative' or 'absolute'")
        if not tolerance > 0:
            raise ValueError(f"tolerance={tolerance!r} must be a positive number")
        self.every = _check_every(every)
        self.tolerance = float(tolerance)
        self.diff = diff
        self.ord = ord
        self.prev: np.ndarray | None = None
        self._last_i = -1
        self.converged_at: int | None = None
        self.message = ""
        self.history: list[float] = []

    def __call__(self, fit: Any, losses: np.ndarray, i: int) -> None:
        current = np.concatenate([np.asarray(x, dtype=np.float64).ravel()
                                  for x in jax.tree_util.tree_leaves(fit.params)])
        if self.prev is None or i <= self._last_i or self.prev.shape != current.shape:
            self.prev, self._last_i = current, i  # a new fit: start afresh
            return
        delta = _DIFFS[self.diff](current, self.prev)
        self.prev, self._last_i = current, i
        norm = float(np.linalg.norm(delta, self.ord))
        self.history.append(norm)
        if norm < self.tolerance:
            self.converged_at = i
            self.message = (f"converged at step {i}: {self.diff} parameter change "
                            f"{norm:.3g} < tolerance {self.tolerance:g}")
            raise Converged(self.message)


class Tracker(Callback, Mapping):
    """Record functions of the approximation while it trains (PyMC's ``Tracker``).

    Parameters
    ----------
    every : int
        Steps between records.
    **fns : callable
        ``name=fn``; ``fn(fit)`` (or ``fn()`` for a function without arguments, such as
        ``time.time``) is recorded under ``tracker[name]``, one entry per call.
        ``tracker.steps`` holds the step numbers. A tracker is a read-only mapping
        name -> records, so ``vi.plots.tracker(tracker)`` draws it.

    Examples
    --------
    >>> import variational as vi
    >>> def model():
    ...     vi.Normal("x", 0, 1)
    >>> tr = vi.callbacks.Tracker(every=100, mean=lambda fit: fit.unconstrained_mean["x"])
    >>> fit = vi.fit(model, steps=300, progress=False, callbacks=[tr])
    >>> len(tr["mean"])
    3
    """

    def __init__(self, every: int = 100, **fns: Callable) -> None:
        if not fns:
            raise ValueError("Tracker needs at least one function to record, e.g. "
                             "Tracker(mean=lambda fit: fit.mean['x'])")
        for name, fn in fns.items():
            if not callable(fn):
                raise ValueError(f"Tracker: '{name}' must be a function of the fit, got {type(fn).__name__}")
        self.every = _check_every(every)
        self.fns = dict(fns)
        self._takes_fit = {name: _takes_argument(fn) for name, fn in fns.items()}
        self.hist: dict[str, list[Any]] = {name: [] for name in fns}
        self.steps: list[int] = []

    def __call__(self, fit: Any, losses: np.ndarray, i: int) -> None:
        for name, fn in self.fns.items():
            self.hist[name].append(self._record(name, fn, fit))
        self.steps.append(int(i))

    def _record(self, name: str, fn: Callable, fit: Any) -> Any:
        takes = self._takes_fit[name]
        if takes is not None:
            return fn(fit) if takes else fn()
        try:  # no signature to read (a builtin): try with the fit, then without
            value, self._takes_fit[name] = fn(fit), True
        except TypeError as e:
            if "argument" not in str(e):
                raise
            value, self._takes_fit[name] = fn(), False
        return value

    def __getitem__(self, name: str) -> list[Any]:
        if name not in self.hist:
            raise KeyError(f"Tracker records {sorted(self.hist)}, not '{name}'")
        return self.hist[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.hist)

    def __len__(self) -> int:
        return len(self.hist)

    def __contains__(self, name: object) -> bool:
        return name in self.hist

    def keys(self) -> list[str]:  # type: ignore[override]
        """Names of the recorded functions."""
        return list(self.hist)


def _takes_argument(fn: Callable) -> bool | None:
    """Whether ``fn`` takes the fit as an argument (None: no signature to tell, e.g. a builtin)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = [p for p in sig.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return bool(params)


class ELBOConvergence(Callback):
    """Stan's ADVI stopping rule: the relative change of the ELBO has settled.

    Every ``every`` steps the ELBO is estimated by the mean of the last ``every`` losses (no
    extra model evaluations), and its relative change from the previous estimate,
    ``|ELBO_t - ELBO_{t-1}| / max(|ELBO_t|, 1)``, is kept in a buffer of the last ``window``
    values (the floor of 1 nat keeps an ELBO near 0 from making every change look large).
    The fit stops when the mean or the median of the buffer is below ``tolerance`` (Stan's
    "MEAN ELBO CONVERGED" / "MEDIAN ELBO CONVERGED"). The rule reads only the loss history,
    so it gives the same answer after a fit is saved and resumed.

    Parameters
    ----------
    every : int
        Steps per ELBO estimate (Stan's ``eval_elbo``, 100).
    tolerance : float
        Threshold of the relative change. Stan's ``tol_rel_obj`` is 0.01, which stops the
        hierarchical radon regression at a tenth of its way (a loss of 5363 where the converged
        fit has 1168); 1e-3 stops it once converged.
    window : int
        Number of relative changes in the buffer (Stan's circular buffer; Stan sizes it
        ``max(0.1 * max_iterations / eval_elbo, 2)``, 10 for its defaults).

    Examples
    --------
    >>> import numpy as np
    >>> import variational as vi
    >>> y = np.random.default_rng(0).normal(1.0, 1.0, size=50)
    >>> def model(y):
    ...     mu = vi.Normal("mu", 0, 10)
    ...     vi.Normal("y", mu, 1.0, observed=y)
    >>> rule = vi.callbacks.ELBOConvergence()
    >>> fit = vi.fit(model, {"y": y}, steps=50_000, progress=False, callbacks=[rule])
    >>> fit.converged, fit.steps < 50_000
    (True, True)
    """

    def __init__(self, every: int = 100, tolerance: float = 1e-3, window: int = 10) -> None:
        if not tolerance > 0:
            raise ValueError(f"tolerance={tolerance!r} must be a positive number")
        self.every = _check_every(every)
        self.tolerance = float(tolerance)
        self.window = max(2, _check_every(window))
        self.converged_at: int | None = None
        self.message = ""
        self.last: dict[str, float] = {}

    def relative_changes(self, losses: np.ndarray) -> np.ndarray:
        """Relative ELBO changes of the last ``window`` blocks of ``every`` steps."""
        k = self.every
        full = len(losses) // k
        blocks = min(full, self.window + 1)
        if blocks < 2:
            return np.empty(0)
        tail = np.asarray(losses[(full - blocks) * k:full * k], dtype=np.float64).reshape(blocks, k)
        finite = np.isfinite(tail)
        if finite.all():
            elbo = -tail.mean(1)
        else:  # skipped steps: average the finite losses of each block
            with np.errstate(all="ignore"):
                elbo = -np.where(finite, tail, 0.0).sum(1) / finite.sum(1)
        with np.errstate(all="ignore"):
            rel = np.abs(np.diff(elbo)) / np.maximum(np.abs(elbo[1:]), 1.0)
        return rel[np.isfinite(rel)]

    def __call__(self, fit: Any, losses: np.ndarray, i: int) -> None:
        rel = self.relative_changes(losses)
        if rel.size == 0:
            return
        ordered = sorted(rel.tolist())
        m = len(ordered) // 2
        mean = sum(ordered) / len(ordered)
        median = ordered[m] if len(ordered) % 2 else 0.5 * (ordered[m - 1] + ordered[m])
        self.last = {"step": int(i), "mean": mean, "median": median}
        for what, value in (("mean", mean), ("median", median)):
            if value < self.tolerance:
                self.converged_at = i
                self.message = (f"converged at step {i}: {what} relative ELBO change {value:.3g} "
                                f"< tolerance {self.tolerance:g}")
                raise Converged(self.message)
