"""Data-parallel fits across devices and processes, with JAX's own sharding.

``vi.fit(..., devices="all")`` (or a list of devices) builds a one-axis mesh named ``"data"``:

- the variational parameters, the optimiser state and the keys are replicated on every device;
- in-memory data columns are split by rows across the devices once (``NamedSharding`` with
  ``P("data")``); each step's batch is constrained to the same row split, so every device
  computes the log-likelihood and gradient of its share of the batch and XLA reduces them;
- streamed chunks are placed with ``P(None, "data")``: every device receives its share of
  every batch of the chunk.

The program is the single-device program, partitioned by the compiler (GSPMD), so a fit on
several devices equals the single-device fit with the same seed up to the order of
floating-point reductions.

Across processes (``jax.distributed.initialize``), the mesh spans every process's devices and
each process feeds its own rows: a streaming source opened on that process's own shards. The
batch size is global; each process reads ``batch_size / process_count`` rows per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ..data import plan as _plan
from ..data.sources import Source
from ..errors import DataError

__all__ = ["Placement", "placement", "resolve_devices"]


def resolve_devices(devices: Any) -> list | None:
    """``None`` (one default device, no sharding), ``"all"`` or a sequence of JAX devices.

    Examples
    --------
    >>> resolve_devices(None) is None
    True
    >>> len(resolve_devices("all")) == jax.device_count()
    True
    """
    if devices is None:
        return None
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(f"devices={devices!r}: give 'all', a list of JAX devices, or None")
        return list(jax.devices())
    if isinstance(devices, int) or not isinstance(devices, Sequence) or not devices:
        raise ValueError(f"devices={devices!r}: give 'all', a non-empty list of JAX devices "
                         f"(for example jax.devices()[:2]), or None")
    known = {d.id: d for d in jax.devices()}
    out = []
    for d in devices:
        if not hasattr(d, "platform") or getattr(d, "id", None) not in known:
            raise ValueError(f"devices=: {d!r} is not one of jax.devices() ({jax.devices()})")
        out.append(d)
    if len({d.id for d in out}) != len(out):
        raise ValueError(f"devices= lists a device twice: {out}")
    return out


def _working_sizes(n_dev: int, near: int) -> str:
    lo = max(n_dev, (near // n_dev) * n_dev)
    return f"multiples of {n_dev}, for example {lo} or {lo + n_dev}"


@dataclass
class Placement:
    """Where the arrays of a fit live; ``None`` mesh means one device, nothing sharded."""

    mesh: Mesh
    batch_size: int | None

    @property
    def size(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def multiprocess(self) -> bool:
        return jax.process_count() > 1

    def _sharding(self, spec: P) -> NamedSharding:
        return NamedSharding(self.mesh, spec)

    def replicate(self, tree: Any) -> Any:
        """Put every leaf of ``tree`` on every device of the mesh."""
        rep = self._sharding(P())
        if self.multiprocess:
            return jax.tree_util.tree_map(
                lambda x: jax.make_array_from_process_local_data(rep, np.asarray(x)), tree)
        return jax.device_put(tree, rep)

    def shard_rows(self, cols: Mapping[str, Any], num_rows: int) -> dict[str, jax.Array]:
        """Split in-memory columns by rows across the devices (placed once).

        With minibatches the columns are padded with copies of their last row to a multiple of
        the device count; the padding rows are never drawn (batches index rows < N).
        """
        n_dev = self.size
        pad = (-num_rows) % n_dev
        if pad and self.batch_size is None:
            raise DataError(
                f"the data has N={num_rows} rows, which do not split evenly across {n_dev} devices; "
                f"fit with batch_size= (one of the {_working_sizes(n_dev, min(num_rows, 256))}), or "
                f"use a number of devices that divides {num_rows}")
        out = {}
        for k, v in cols.items():
            a = np.asarray(v)
            if pad:
                a = np.concatenate([a, np.repeat(a[-1:], pad, axis=0)])
            out[k] = jax.device_put(a, self._sharding(P("data")))
        return out

    def constrain_batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Inside the compiled step: split this step's batch rows across the devices."""
        b = self.batch_size
        out = {}
        for k, v in batch.items():
            if b is not None and jnp.ndim(v) >= 1 and jnp.shape(v)[0] == b:
                v = jax.lax.with_sharding_constraint(v, self._sharding(P("data")))
            out[k] = v
        return out

    def place_fed(self, xs: Any, global_batch: int) -> Any:
        """A fed chunk ``(capacity, rows, ...)``: every device gets its rows of every batch."""
        if xs is None:
            return None
        sh = self._sharding(P(None, "data"))
        if self.multiprocess:
            return {k: jax.make_array_from_process_local_data(
                        sh, np.asarray(v), (v.shape[0], global_batch) + tuple(v.shape[2:]))
                    for k, v in xs.items()}
        return {k: jax.device_put(np.asarray(v), sh) for k, v in xs.items()}


def check_batch(batch_size: int | None, n_dev: int, n_proc: int = 1) -> None:
    """A clear error unless the batch splits evenly across devices (and processes)."""
    if batch_size is None:
        return
    if batch_size % n_dev:
        raise DataError(
            f"batch_size={batch_size} does not split evenly across {n_dev} devices; use one of the "
            f"{_working_sizes(n_dev, batch_size)}")
    if batch_size % n_proc:
        raise DataError(f"batch_size={batch_size} does not split evenly across {n_proc} processes; "
                        f"use one of the {_working_sizes(n_proc * n_dev // n_proc, batch_size)}")


def placement(devices: Any, batch_size: int | None) -> Placement | None:
    """The placement for ``devices=`` (``None`` when the fit runs on one default device)."""
    devs = resolve_devices(devices)
    if devs is None:
        return None
    check_batch(batch_size, len(devs), jax.process_count())
    return Placement(Mesh(np.array(devs), ("data",)), batch_size)


def global_rows(local_rows: int) -> int:
    """Total rows over all processes (each process reads its own shards)."""
    if jax.process_count() == 1:
        return int(local_rows)
    from jax.experimental import multihost_utils

    return int(np.sum(multihost_utils.process_allgather(np.int64(local_rows))))


# -- the steps of vi.fit on devices ----------------------------------------------------------
def place_fit(place: Any, engine: Any, plan: Any, state: Any, key: jax.Array,
           device_data: Any) -> tuple[Any, jax.Array, Any]:
    """Replicate the state and shard the rows across the devices of ``place``."""
    engine.shard_batch, engine.adaptive = place.constrain_batch, not place.multiprocess
    state, key = place.replicate(state), place.replicate(key)
    if device_data:
        device_data = place.shard_rows(device_data, plan.num_rows or len(next(iter(device_data.values()))))
    if plan.feeder is not None:
        local_feed = plan.feeder.feed
        plan.feeder.feed = lambda n: place.place_fed(local_feed(n), plan.batch_size)
    return state, key, device_data


def multiprocess_plan(model: Callable, data: Any, batch_size: int | None, model_kwargs: Any, seed: int) -> Any:
    """Multi-process plan: this process streams ``batch_size / processes`` rows of its own shards.

    N is the total over processes, and per-row sites are scaled by N / batch_size (global).
    """
    if not isinstance(data, Source) or batch_size is None:
        raise DataError(
            "a multi-process fit (jax.distributed) reads a streaming source on each process "
            "(vi.data.parquet(...) of that process's own shards) with a global batch_size=")
    procs = jax.process_count()
    plan = _plan.plan(model, data, batch_size=batch_size // procs, model_kwargs=model_kwargs,
                      seed=seed + jax.process_index())
    local_scale = plan.num_rows / plan.batch_size
    n_total = global_rows(plan.num_rows)
    plan.obs_scale = {k: (n_total / batch_size if k in plan.per_row and np.isclose(f, local_scale) else f)
                      for k, f in plan.obs_scale.items()}
    plan.num_rows, plan.batch_size = n_total, int(batch_size)
    return plan
