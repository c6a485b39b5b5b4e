"""``method="auto"`` after its first fit: a "bad" verdict with a richer affordable family tries it.

The default call fits the family :func:`~variational.families.default_family` chose. When
that is not full-rank, its verdict is "bad" (or "ok" but the fit ran out of steps) and full-rank
is affordable (at most
``RICHER_MAX_DIM`` dimensions), the call fits full-rank too (unless the verdict names a
centred hierarchy in its funnel regime: no Gaussian follows a funnel, and on the radon survey
the full-rank refit took twice the first fit's time to be "bad" as well), within what is left of its time
budget, and returns the fit with the better verdict (lower k-hat between equals), saying in
``fit.message`` what it tried. A default fit so never ends far from the answer with a "bad"
verdict while the richer Gaussian of the library would have been right, without saying so.

May import: numpy, :mod:`variational.families`.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

__all__ = ["RICHER_MAX_DIM", "richer_method", "settle"]

RICHER_MAX_DIM = 256
"""Full-rank is tried after a "bad" default fit up to this many latent dimensions (its
parameters grow as the square of the dimension; ``docs/families.md``)."""

_RANK = {"good": 0, "ok": 1, "bad": 2}


def richer_method(name: str, dim: int) -> str | None:
    """The family the default call tries after a "bad" verdict of family ``name``, or None.

    Examples
    --------
    >>> richer_method("structured", 90), richer_method("structured", 1000), richer_method("fullrank_advi", 9)
    ('fullrank_advi', None, None)
    """
    if name in ("advi", "lowrank_advi", "structured") and int(dim) <= RICHER_MAX_DIM:
        return "fullrank_advi"
    return None


def settle(fit: Any, fit_again: Callable[..., Any], call: dict, started: float, may_retry: bool) -> Any:
    """The default call's answer: ``fit``, or the richer family's fit ``fit_again(**call,
    method=richer)`` when ``fit``'s verdict is "bad" (or "ok" without convergence) and the
    richer one's is better.

    ``call`` holds the arguments of the call (``vi.fit``'s); none is tried with a fixed number of
    steps, a checkpoint, ``init_params=`` or where ``may_retry`` is False (a stream, devices).
    """
    options = call.get("method_options", {})
    again = {**{k: v for k, v in call.items() if k != "method_options"}, **options}
    retry = may_retry and call.get("steps") is None and call.get("checkpoint") is None and \
        not call.get("resume") and call.get("init_params") is None

    def refit(method: str, seconds: float | None) -> Any:
        return fit_again(**{**again, "method": method, "max_seconds": seconds})

    richer = richer_method(fit.family.name, fit.logdensity.dim)
    if not retry or richer is None or fit.interrupted:
        return fit
    first = fit.diagnose()
    if first.status == "good" or (first.status == "ok" and fit.converged is not False):
        return fit   # (an "ok" that ran out of steps is tried again as well)
    if first.funnel:   # no Gaussian follows a funnel: full-rank would be "bad" too (radon: k-hat 1.06)
        said = (f"method='auto' did not try {richer!r} after the verdict {first.status!r}: the posterior of "
                f"{', '.join(first.funnel)} is a funnel that no Gaussian family can follow; non-centre "
                f"them (fit.diagnose() says how)")
        fit.message = f"{said}; {fit.message}" if fit.message else said
        fit.notes.append(said)
        return fit
    budget = call.get("max_seconds")
    left = None if budget is None else float(budget) - (time.perf_counter() - started)
    if left is not None and left <= 0:
        fit.message += (f"; the verdict is {first.status!r} and no time is left to try method={richer!r}: "
                        f"fit it with vi.fit(..., method={richer!r})")
        return fit
    other = refit(richer, left)
    second = other.diagnose()
    better = (_RANK[second.status], _khat(second)) < (_RANK[first.status], _khat(first))
    chosen, dropped = (other, fit) if better else (fit, other)
    said = (f"method='auto' fitted {fit.family.name!r} (verdict {first.status!r}, k-hat {_khat(first):.2f}"
            f"{'' if fit.converged is not False else ', not converged'}), then "
            f"{richer!r} (verdict {second.status!r}, k-hat {_khat(second):.2f}); this is the "
            f"{chosen.family.name!r} fit, the other is fit.alternative")
    chosen.alternative = dropped
    chosen.message = f"{said}; {chosen.message}" if chosen.message else said
    chosen.notes.append(said)
    return chosen


def _khat(diagnosis: Any) -> float:
    k = float(diagnosis.khat)
    return k if np.isfinite(k) else float("inf")
