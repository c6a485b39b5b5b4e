"""Draws as plain dicts: from a fit, an ArviZ object or a mapping; scalar columns of them.

The functions of the posterior layer take draws, not a :class:`~variational.Fit` (they never
import it): :func:`is_fit` recognises a fit by what it offers.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["as_draws", "columns", "is_fit"]


def is_fit(obj: Any) -> bool:
    """Whether ``obj`` is a fitted approximation (a :class:`~variational.Fit` or a subclass)."""
    return all(hasattr(obj, a) for a in ("approximation", "sample", "to_arviz"))


def as_draws(obj: Any, n: int = 4000, seed: int | None = 0) -> dict[str, np.ndarray]:
    """Dict name -> draws ``(S, ...)`` from a Fit, an InferenceData (chains pooled) or a dict.

    Examples
    --------
    >>> import numpy as np
    >>> as_draws({"x": np.zeros((10, 2))})["x"].shape
    (10, 2)
    """
    if is_fit(obj):
        return obj.sample(n, seed=seed)
    if hasattr(obj, "posterior"):
        post = obj.posterior
        return {str(k): np.asarray(v.values).reshape((-1,) + v.shape[2:]) for k, v in post.data_vars.items()}
    if isinstance(obj, Mapping):
        return {str(k): np.asarray(v) for k, v in obj.items()}
    raise TypeError(f"expected a Fit, an arviz.InferenceData or a dict name -> draws, got {type(obj).__name__}")


def columns(name: str, v: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """``[(label, draws of one scalar element)]`` of the draws ``v`` of site ``name``."""
    flat = v.reshape(v.shape[0], -1)
    out = []
    for j in range(flat.shape[1]):
        idx = np.unravel_index(j, v.shape[1:]) if v.ndim > 1 else ()
        out.append((name + (f"[{','.join(map(str, idx))}]" if idx else ""), flat[:, j]))
    return out
