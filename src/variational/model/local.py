"""Local latent variables: sites inside a plate over the data rows, and the rows a step reads.

A latent site is *local* when it sits inside the plate whose size is the number of data rows
(the *row plate*): it has one value per row. A minibatch fit keeps per-row variational
parameters for it, and each step evaluates the model on the rows of its batch only. That is
done by :class:`RowPlate`, which hands the row plate the batch's row numbers (as NumPyro's own
``plate(..., subsample=...)`` would) and scales every site inside the plate by N/B: the
likelihood of the rows and the prior of their local values alike.

The row plate is found by tracing the model (shapes only): in a fit with ``batch_size=``, a
plate declared with N (the number of rows) or with the batch's length; in a model that
subsamples itself, the plate declared with ``subsample_size=``.

Imports: numpyro, jax, :mod:`variational.errors`, :mod:`.handlers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.primitives import Messenger

from ..errors import ModelError
from .handlers import total_size_factor, value_without_sampler

__all__ = ["ROWS", "RowPlate", "LocalSpec", "find_local", "rows_model"]

#: Reserved batch entry: the row numbers (0..N-1) of a batch's rows, for the row plate.
ROWS = "_rows"


class RowPlate(Messenger):
    """Give the plate ``name`` the row numbers ``rows`` and scale the sites inside it by N/B.

    The plate may be declared with N rows (``plate("rows", N)``, with or without
    ``subsample_size=``) or with the batch's length (``plate("rows", len(y))``): either way the
    sites inside it get the factor ``num_rows / len(rows)`` in all.
    """

    def __init__(self, fn: Callable | None, name: str, num_rows: int, rows: Any) -> None:
        self.name, self.num_rows, self.rows = name, int(num_rows), rows
        self.declared: int | None = None
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "plate" and msg["name"] == self.name:
            self.declared = int(msg["args"][0])
            msg["args"] = (msg["args"][0], int(self.rows.shape[0]))
            msg["value"] = self.rows
            return
        if msg["type"] != "sample" or self.declared in (None, self.num_rows):
            return
        if any(f.name == self.name for f in msg["cond_indep_stack"]):
            factor = self.num_rows / self.declared   # the plate itself scaled by declared / B
            msg["scale"] = factor if msg.get("scale") is None else msg["scale"] * factor


def rows_model(model: Callable, plate: str, num_rows: int) -> Callable:
    """``model`` called with the batch's row numbers as keyword :data:`ROWS` (see :class:`RowPlate`)."""

    def batch_model(*args: Any, **kwargs: Any) -> Any:
        rows = kwargs.pop(ROWS)
        with RowPlate(None, plate, num_rows, jnp.asarray(rows)):
            return model(*args, **kwargs)

    batch_model.__name__ = getattr(model, "__name__", "model")
    return batch_model


@dataclass(frozen=True)
class LocalSpec:
    """The row plate of a model and its local sites.

    ``num_rows`` is N, ``batch_size`` the rows per step (B), ``sites`` the local latent sites
    (sorted), ``scale`` the N/B factors of observed per-row sites outside the row plate (a
    :class:`~variational.model.handlers.ScaleObserved` rule; None: the model's own scaling),
    ``subsampled`` whether the model subsamples itself (``subsample_size=``).
    """

    plate: str
    num_rows: int
    batch_size: int
    sites: tuple[str, ...]
    scale: Any = None
    subsampled: bool = False


class _Rows(Messenger):
    """While tracing: every plate declared with ``num_rows`` rows reads the first ``rows`` rows."""

    def __init__(self, fn: Callable | None, num_rows: int, rows: int) -> None:
        self.num_rows, self.rows = int(num_rows), int(rows)
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "plate" and msg["args"][0] == self.num_rows and msg["args"][1] is None:
            msg["args"] = (self.num_rows, self.rows)
            msg["value"] = jnp.arange(self.rows)


def _record(model: Callable, cols: Mapping[str, Any], rows: int | None, num_rows: int,
            kwargs: Mapping[str, Any]) -> dict[str, dict]:
    """Sites of the model on ``rows`` rows of ``cols`` (all rows when None): shapes and plates."""
    n = num_rows if rows is None else rows
    specs = {k: jax.ShapeDtypeStruct((n,) + np.shape(v)[1:], np.asarray(v[:1]).dtype) for k, v in cols.items()}
    box: list[dict] = []

    def run(d: dict) -> int:
        fn = model if rows is None else _Rows(model, num_rows, rows)
        seeded = handlers.substitute(handlers.seed(fn, 0), substitute_fn=value_without_sampler)
        tr = handlers.trace(seeded).get_trace(**kwargs, **d)
        box.append({name: dict(type=s["type"], args=s.get("args"),
                               shape=tuple(jnp.shape(s["value"])) if s["type"] != "plate" else (),
                               observed=bool(s.get("is_observed")),
                               discrete=_discrete(s.get("fn")),
                               total_size=(s.get("infer") or {}).get("total_size"),
                               frames=tuple(f.name for f in s.get("cond_indep_stack") or ()))
                    for name, s in tr.items()})
        return 0

    jax.eval_shape(run, specs)
    return box[0]


def _discrete(fn: Any) -> bool:
    return bool(getattr(getattr(fn, "support", None), "is_discrete", False))


def _latent_in(sites: Mapping[str, dict], plate: str) -> list[str]:
    """The continuous latent sites inside ``plate``: discrete ones are no local latents (an
    enumerated site is summed out by the log density; an unmarked one is explained by the fit)."""
    return sorted(n for n, s in sites.items() if s["type"] == "sample" and not s["observed"]
                  and not s.get("discrete") and plate in s["frames"])


def _check_leading(sites: Mapping[str, dict], names: list[str], plate: str, rows: int) -> None:
    for n in names:
        shape = sites[n]["shape"]
        if not shape or shape[0] != rows:
            raise ModelError(
                f"local site '{n}' (inside plate '{plate}' over the data rows) has shape {shape}, "
                f"whose leading dimension is not the rows; give plate '{plate}' the leftmost "
                f"dimension of the site (for example dim=-2 when another plate sits inside it)")


def _batch_scale(a: Mapping[str, dict], b: Mapping[str, dict], plate: str, num_rows: int,
                 rows: int) -> dict[str, float]:
    """N/B factors of observed sites outside the row plate (sites inside it: the plate's)."""
    rule = {}
    for n, s in a.items():
        if s["type"] != "sample" or not s["observed"] or plate in s["frames"]:
            continue
        if s["total_size"] is not None:
            rule[n] = total_size_factor(s["total_size"], s["shape"])
        elif s["shape"][:1] == (rows,) and b[n]["shape"][:1] == (rows + 1,):
            rule[n] = num_rows / rows
        else:
            raise ModelError(
                f"observed site '{n}' is outside plate '{plate}' over the data rows and its shape "
                f"{s['shape']} does not follow the batch, so its N/B scale is unknown; put it inside "
                f"the plate, state its scale with total_size=, or fit without batch_size=")
    return rule


def _one_plate(plates: list, what: str) -> str | None:
    """The one plate over the data rows among ``plates`` (None when there is none)."""
    if len(plates) > 1:
        raise ModelError(f"plates {plates} all {what} and hold latent sites; a fit supports one plate "
                         f"over the data rows")
    return plates[0] if plates else None


def find_local(model: Callable, cols: Mapping[str, Any], num_rows: int, batch_size: int | None,
               model_kwargs: Mapping[str, Any] | None = None) -> LocalSpec | None:
    """The row plate and local sites of ``model`` on the columns ``cols`` (None when it has none).

    With ``batch_size``, the row plate is the plate declared with ``num_rows`` rows or with the
    batch's length that holds latent sites; without, the plate declared with
    ``subsample_size=`` that holds latent sites (the model subsamples itself).

    Examples
    --------
    >>> import numpy as np, numpyro, numpyro.distributions as dist
    >>> def model(y):
    ...     mu = numpyro.sample("mu", dist.Normal(0, 10))
    ...     with numpyro.plate("rows", 100):
    ...         z = numpyro.sample("z", dist.Normal(mu, 1))
    ...         numpyro.sample("y", dist.Normal(z, 0.5), obs=y)
    >>> spec = find_local(model, {"y": np.zeros(100)}, 100, 10)
    >>> spec.plate, spec.sites, spec.batch_size
    ('rows', ('z',), 10)
    """
    kw = dict(model_kwargs or {})
    if batch_size is None:
        sites = _record(model, cols, None, num_rows, kw)
        plates = [n for n, s in sites.items() if s["type"] == "plate" and s["args"][1] is not None
                  and s["args"][1] < s["args"][0] and _latent_in(sites, n)]
        p = _one_plate(plates, "subsample")
        if p is None:
            return None
        size, b = int(sites[p]["args"][0]), int(sites[p]["args"][1])
        names = _latent_in(sites, p)
        _check_leading(sites, names, p, b)
        return LocalSpec(p, size, b, tuple(names), None, True)
    a = _record(model, cols, batch_size, num_rows, kw)
    b = _record(model, cols, batch_size + 1, num_rows, kw)
    plates = [n for n, s in a.items() if s["type"] == "plate" and _latent_in(a, n) and (
        s["args"][0] == num_rows or (s["args"][0] == batch_size and b[n]["args"][0] == batch_size + 1))]
    p = _one_plate(plates, "follow the data rows")
    if p is None:
        return None
    names = _latent_in(a, p)
    _check_leading(a, names, p, batch_size)
    return LocalSpec(p, int(num_rows), int(batch_size), tuple(names),
                     _batch_scale(a, b, p, num_rows, batch_size), False)
