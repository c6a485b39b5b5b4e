"""Minibatch fits: which sites are per-row, the N/B scaling rule, and full-data evaluation.

A site is *per-row* when its leading dimension follows the batch: the model is traced (shapes
only, nothing computed) with a batch of B rows and with one of B + 1 rows, and a site whose
leading dimension is B in the first trace and B + 1 in the second, with its other dimensions
unchanged, is per-row. The log-likelihood of every per-row observed site is scaled by N/B, and
so is every per-row discrete site summed out by enumeration (it is part of its row's
likelihood); other priors never are. An observed site declared with ``total_size=`` is scaled as
the user said (``total_size / rows``, or per dimension such as ``[N, None]``, see
:func:`~variational.model.handlers.total_size_factor`). Any other observed site is an error: one whose shape
does not follow the batch (its values do not come from the data rows) and one whose shape
changes in some other way (ambiguous).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers

from ..errors import DataError, ModelError
from ..model import LogDensity
from ..model.handlers import total_size_factor, value_without_sampler
from .batching import FullBatch, KeyedFullBatch, Minibatches, Streamed
from .columns import check_finite, num_rows, read_columns, to_device
from .feeder import Feeder
from .sources import Source

__all__ = ["row_sites", "scale_rule", "Plan", "plan"]


def _site_shapes(model: Callable, cols: Mapping[str, np.ndarray], rows: int,
                 model_kwargs: Mapping[str, Any]) -> dict[str, dict]:
    """Site name -> {type, shape, observed, total_size, subsample} with a batch of ``rows`` rows."""
    specs = {k: jax.ShapeDtypeStruct((rows,) + np.shape(v)[1:], jnp.asarray(v[:1]).dtype) for k, v in cols.items()}
    box: list[dict] = []

    def run(d: dict) -> int:
        seeded = handlers.substitute(handlers.seed(model, 0), substitute_fn=value_without_sampler)
        tr = handlers.trace(seeded).get_trace(**model_kwargs, **d)
        box.append({n: dict(type=s["type"], shape=tuple(jnp.shape(s["value"])) if s["type"] != "plate" else (),
                            observed=bool(s.get("is_observed")),
                            enumerated=(s.get("infer") or {}).get("enumerate") == "parallel",
                            total_size=(s.get("infer") or {}).get("total_size"),
                            potential=s["type"] == "sample" and type(s["fn"]).__name__ == "Unit",
                            subsample=s["type"] == "plate" and s["args"][1] is not None
                            and s["args"][1] < s["args"][0])
                    for n, s in tr.items()})
        return 0

    jax.eval_shape(run, specs)
    return box[0]


def row_sites(model: Callable, cols: Mapping[str, np.ndarray], batch_size: int,
              model_kwargs: Mapping[str, Any] | None = None) -> tuple[dict[str, dict], dict[str, str]]:
    """Trace with B and B + 1 rows; returns the B-row sites and, per site, how it follows rows.

    The second value maps each observed or deterministic site to ``"row"`` (leading dimension
    is the batch), ``"fixed"`` (shape does not depend on the batch) or ``"ambiguous"``.
    """
    kw = dict(model_kwargs or {})
    try:
        a = _site_shapes(model, cols, batch_size, kw)
        b = _site_shapes(model, cols, batch_size + 1, kw)
    except Exception:
        # let the model layer explain the failure (missing argument, error at a named site ...)
        LogDensity(model, {k: np.asarray(v)[:batch_size] for k, v in cols.items()}, kw)
        raise
    kinds = {}
    for n, s in a.items():
        if s["type"] not in ("sample", "deterministic") or (
                s["type"] == "sample" and not (s["observed"] or s["enumerated"])):
            continue
        sa, sb = s["shape"], b.get(n, {}).get("shape")
        if sa == sb:
            kinds[n] = "fixed"
        elif (sb is not None and len(sa) == len(sb) and len(sa) >= 1 and sa[0] == batch_size
              and sb[0] == batch_size + 1 and sa[1:] == sb[1:]):
            kinds[n] = "row"
        else:
            kinds[n] = "ambiguous"
    return a, kinds


def _refuse_subsample_plates(model_or_sites: Any, cols: Any = None, kw: Any = None) -> None:
    """A model that subsamples with a plate scales its own minibatches: no batch_size= on top."""
    sites = model_or_sites
    if callable(model_or_sites):
        try:
            sites = _site_shapes(model_or_sites, cols, len(next(iter(cols.values()))), kw)
        except Exception:
            return  # the model's own error is explained by the later, batch-sized trace
    sub = [n for n, s in sites.items() if s["subsample"]]
    if sub:
        raise ModelError(
            f"the model subsamples with numpyro.plate('{sub[0]}', subsample_size=...), which draws "
            f"and scales its own minibatches; fit it without batch_size= (pass the full data)")


def scale_rule(sites: Mapping[str, dict], kinds: Mapping[str, str], num_rows: int,
               batch_size: int) -> dict[str, float]:
    """Observed site -> factor on its log-likelihood (N/B, or ``total_size / rows``)."""
    _refuse_subsample_plates(sites)
    rule = {}
    for n, s in sites.items():
        if s["type"] == "sample" and s.get("enumerated") and not s["observed"]:
            if kinds[n] == "row":  # a discrete site summed out per row belongs to that row's likelihood
                rule[n] = num_rows / batch_size
            elif kinds[n] == "ambiguous":
                raise ModelError(
                    f"enumerated site '{n}' has shape {s['shape']} with a batch of {batch_size} rows, "
                    f"but its leading dimension is not the batch alone; make the rows its leading "
                    f"dimension, or fit without batch_size=")
            continue
        if s["type"] != "sample" or not s["observed"]:
            continue
        if s["total_size"] is not None:
            rule[n] = total_size_factor(s["total_size"], s["shape"])
        elif kinds[n] == "row":
            rule[n] = num_rows / batch_size
        elif kinds[n] == "fixed" and s["potential"]:
            raise ModelError(
                f"Potential '{n}' does not change shape with the batch, so it cannot be scaled by "
                f"N/B; give it one term per row (do not sum over the rows), or fit without "
                f"batch_size=")
        elif kinds[n] == "fixed":
            raise ModelError(
                f"observed site '{n}' has shape {s['shape']} whatever the batch size, so its values "
                f"do not come from the data rows and the N/B scaling cannot apply; pass its values "
                f"as a data column, state its scale with total_size= on the site, or fit without "
                f"batch_size=")
        else:
            raise ModelError(
                f"observed site '{n}' has shape {s['shape']} with a batch of {batch_size} rows, but its "
                f"leading dimension is not the batch alone (other dimensions change with the batch "
                f"too), so its N/B scale is ambiguous; make the rows its leading dimension or state "
                f"its scale with total_size= on the site")
    return rule


@dataclass
class Plan:
    """How a fit gets its data: what the model is traced on, the loop's data, the batcher."""

    trace_data: dict[str, Any]
    device_data: dict[str, Any]
    num_rows: int | None = None
    batch_size: int | None = None
    replace: bool = False
    obs_scale: Any = None
    per_row: list[str] = field(default_factory=list)
    feeder: Feeder | None = None
    capacity: int = 4096
    categories: dict[str, list] = field(default_factory=dict)   # categorical column -> categories

    def batcher(self, ld: LogDensity) -> Any:
        """The engine's batcher for this plan (``ld`` tells whether batches need a key)."""
        if self.batch_size is None:
            return KeyedFullBatch() if ld.needs_key else FullBatch()
        if self.feeder is not None:
            return Streamed(self.num_rows, self.batch_size, needs_key=ld.needs_key)
        return Minibatches(self.num_rows, self.batch_size, self.replace, needs_key=ld.needs_key)

    def head_on_device(self) -> dict[str, Any]:
        """The rows the model is traced on (all rows, or the first batch), on the device."""
        return to_device(self.trace_data)

    @property
    def feed(self) -> Callable[[int], Any] | None:
        return None if self.feeder is None else self.feeder.feed


def _check_batch_size(batch_size: Any, n: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise DataError(f"batch_size={batch_size!r} must be a whole number of rows")
    if not 1 <= int(batch_size) <= n:
        raise DataError(f"batch_size={batch_size} must be between 1 and the number of rows N={n}; "
                        f"use batch_size=None to fit on all rows at every step")
    return int(batch_size)


def plan(model: Callable, data: Any, *, batch_size: int | None = None, replace: bool = False,
         model_kwargs: Mapping[str, Any] | None = None, seed: int = 0,
         chunk_bytes: int = 16 << 20) -> Plan:
    """Decide how ``fit`` feeds ``data`` to ``model`` (full batch, in-memory or streamed batches).

    Examples
    --------
    >>> import numpy as np
    >>> import variational as vi
    >>> def model(x, y):
    ...     b = vi.Normal("b", 0, 1)
    ...     vi.Normal("y", b * x, 1, observed=y)
    >>> p = plan(model, {"x": np.ones(100), "y": np.ones(100)}, batch_size=10)
    >>> p.obs_scale
    {'y': 10.0}
    """
    kw = dict(model_kwargs or {})
    if isinstance(data, Source):
        if batch_size is None:
            raise DataError("a streaming source needs batch_size= (rows per step)")
        if replace:
            raise DataError("replace=True is not available for streaming sources; they read rows "
                            "without replacement")
        n = data.num_rows
        if n is None:
            raise DataError(f"{data!r} does not know its number of rows; give num_rows=")
        if n == 0:
            raise DataError(f"{data!r} is empty (0 rows)")
        b = _check_batch_size(batch_size, n)
        head = data.head(b)
        if len(next(iter(head.values()))) < b:
            raise DataError(f"{data!r} has fewer rows than batch_size={b} in its first pass")
        sites, kinds = row_sites(model, head, b, kw)
        rule = scale_rule(sites, kinds, n, b)
        row_bytes = sum(a[:1].nbytes for a in head.values())
        capacity = int(np.clip(chunk_bytes // max(1, b * row_bytes), 4, 4096))
        feeder = Feeder(data, b, capacity, seed)
        return Plan(head, {}, n, b, False, rule, [k for k, v in kinds.items() if v != "fixed"], feeder, capacity)
    cols, categories = read_columns(data)
    n = num_rows(cols) if cols else 0
    if batch_size is None:
        return Plan(cols, to_device(cols), categories=categories)
    if not cols:
        raise DataError("batch_size= needs data: pass the columns as a dict or DataFrame")
    b = _check_batch_size(batch_size, n)
    check_finite(cols)
    _refuse_subsample_plates(model, cols, kw)
    sites, kinds = row_sites(model, cols, b, kw)
    rule = scale_rule(sites, kinds, n, b)
    trace = {k: v[:b] for k, v in cols.items()}
    return Plan(trace, to_device(cols), n, b, bool(replace), rule,
                [k for k, v in kinds.items() if v != "fixed"], categories=categories)
