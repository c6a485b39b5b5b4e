"""How the compiled loop gets each step's batch: full data, in-memory minibatches, streamed batches.

A batcher has ``init(key) -> data_state`` and ``next(data_state, data, step, key, x) ->
(batch, data_state)``; the engine calls ``next`` inside the compiled loop. In-memory
minibatches follow a keyed pseudo-random permutation per epoch computed on the device for just
the rows of the batch (:func:`shuffled_index`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ..model import RNG_KEY

__all__ = ["FullBatch", "KeyedFullBatch", "Minibatches", "Streamed", "EpochState", "shuffled_index"]


class FullBatch:
    """Every step sees the whole dataset."""

    def init(self, key: jax.Array) -> Any:
        return ()

    def next(self, data_state: Any, data: Any, step: jax.Array, key: jax.Array, x: Any) -> tuple[Any, Any]:
        return data, data_state


class EpochState(NamedTuple):
    """Where the row stream stands: ``epoch`` complete passes plus ``pos`` rows of the next.

    ``rows`` is N (kept so that the result can report epochs); ``key`` keys the row orders
    (uint32 bits for in-memory minibatches; the PRNG key otherwise).
    """

    pos: jax.Array
    epoch: jax.Array
    rows: jax.Array
    key: jax.Array


def _advance(ds: EpochState, batch_size: int) -> EpochState:
    """Move the stream ``batch_size`` rows on (arithmetic only: no branch in the loop)."""
    wrap = ds.pos + batch_size >= ds.rows
    return ds._replace(pos=jnp.where(wrap, ds.pos + batch_size - ds.rows, ds.pos + batch_size),
                       epoch=ds.epoch + wrap.astype(jnp.int32))


def _with_key(batch: dict, key: jax.Array, needs_key: bool) -> dict:
    if needs_key:
        batch = {**batch, RNG_KEY: key}
    return batch


def _mix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: a fast, well-mixing bijection of uint32."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def shuffled_index(position: jax.Array, round_keys: jax.Array, num_rows: int) -> jax.Array:
    """Row at ``position`` (< N) of the keyed pseudo-random permutation of ``range(N)``.

    A 4-round Feistel network on ``2 * half`` bits (``4**half >= N``) is a bijection of
    ``range(4**half)``; applying it again while the result is ``>= N`` ("cycle walking") makes it
    a bijection of ``range(N)``. So each epoch (one set of ``round_keys``, shape
    ``position.shape + (4,)``) visits every row exactly once, in an order that needs no sort and
    no stored permutation: a batch costs O(B), whatever N.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> keys = jnp.broadcast_to(jax.random.bits(jax.random.PRNGKey(0), (4,)), (10, 4))
    >>> sorted(shuffled_index(jnp.arange(10), keys, 10).tolist()) == list(range(10))
    True
    """
    half = max(1, (max(int(num_rows) - 1, 1).bit_length() + 1) // 2)
    mask = jnp.uint32((1 << half) - 1)

    def feistel(x: jax.Array) -> jax.Array:
        left, right = x >> half, x & mask
        for r in range(4):
            left, right = right, left ^ (_mix32(right ^ round_keys[..., r]) & mask)
        return (left << half) | right

    n = jnp.uint32(num_rows)
    x = feistel(position.astype(jnp.uint32))
    x = jax.lax.while_loop(lambda x: jnp.any(x >= n), lambda x: jnp.where(x >= n, feistel(x), x), x)
    return x.astype(jnp.int32)


def _epoch_keys(bits: jax.Array, epoch: jax.Array) -> jax.Array:
    """The 4 Feistel round keys of ``epoch``: a hash of the fit's key bits and the epoch number.

    Integer mixing only (no PRNG call in the loop): the order of epoch ``e`` depends on the seed
    and ``e`` alone.
    """
    e = epoch.astype(jnp.uint32) * jnp.uint32(0x9E3779B9)
    return _mix32(bits ^ _mix32(e + jnp.arange(4, dtype=jnp.uint32) * jnp.uint32(0x632BE5AB)))


class Minibatches:
    """In-memory minibatches: the same ``batch_size`` rows of every column at each step.

    Without replacement the rows form a continuous stream of epochs: epoch ``e`` visits the rows
    in a pseudo-random order keyed by ``fold_in(key, e)`` (a keyed bijection of the row numbers,
    see :func:`shuffled_index`, computed on the device for just the rows of the batch); the
    stream is cut into consecutive batches, so when N is not a multiple of the batch size, the
    batch that reaches the end of an epoch is completed with the first rows of the next epoch.
    Within an epoch no row is skipped or read twice, and each epoch has a fresh order. With
    ``replace=True`` each step draws ``batch_size`` row indices uniformly with replacement.

    Parameters
    ----------
    num_rows : int
        N, the number of rows of every column.
    batch_size : int
        B, rows per step (``1 <= B <= N``).
    replace : bool
        Draw rows with replacement.
    needs_key : bool
        Add a PRNG key to every batch (models with ``numpyro.plate(subsample_size=)``).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> mb = Minibatches(5, 2)
    >>> ds = mb.init(jax.random.PRNGKey(0))
    >>> data = {"x": jnp.arange(5.0)}
    >>> rows = []
    >>> for t in range(5):
    ...     b, ds = mb.next(ds, data, t, jax.random.PRNGKey(t), None)
    ...     rows += b["x"].tolist()
    >>> sorted(rows[:5]) == [0.0, 1.0, 2.0, 3.0, 4.0], int(ds.epoch)
    (True, 2)
    """

    def __init__(self, num_rows: int, batch_size: int, replace: bool = False, needs_key: bool = False) -> None:
        self.num_rows, self.batch_size = int(num_rows), int(batch_size)
        self.replace, self.needs_key = bool(replace), bool(needs_key)

    def init(self, key: jax.Array) -> EpochState:
        bits = jax.random.bits(key, (4,), jnp.uint32)   # keys every epoch's order (see _epoch_keys)
        return EpochState(jnp.int32(0), jnp.int32(0), jnp.int32(self.num_rows), bits)

    def indices(self, ds: EpochState, key: jax.Array) -> jax.Array:
        """Row numbers of the batch that starts at ``ds`` (``key``: this step's key)."""
        n, b = self.num_rows, self.batch_size
        if self.replace:
            return jax.random.randint(key, (b,), 0, n)
        j = ds.pos + jnp.arange(b, dtype=jnp.int32)
        later = j >= n                                    # rows of the next epoch
        ek = jnp.stack([_epoch_keys(ds.key, ds.epoch + i) for i in (0, 1)])
        return shuffled_index(jnp.where(later, j - n, j), ek[later.astype(jnp.int32)], n)

    def next(self, data_state: EpochState, data: Any, step: jax.Array, key: jax.Array, x: Any) -> tuple[Any, EpochState]:
        idx = self.indices(data_state, key)
        batch = {k: jnp.take(v, idx, axis=0, mode="clip") for k, v in data.items()}
        return _with_key(batch, key, self.needs_key), _advance(data_state, self.batch_size)


class Streamed:
    """Batches that arrive from the host with each compiled call (streaming sources).

    ``x`` (this step's slice of the fed chunk) is the batch; the state only counts rows and
    epochs (the order of the rows is decided on the host, see :mod:`variational.data.feeder`).
    """

    def __init__(self, num_rows: int, batch_size: int, needs_key: bool = False) -> None:
        self.num_rows, self.batch_size, self.needs_key = int(num_rows), int(batch_size), bool(needs_key)

    def init(self, key: jax.Array) -> EpochState:
        return EpochState(jnp.int32(0), jnp.int32(0), jnp.int32(self.num_rows), key)

    def next(self, data_state: EpochState, data: Any, step: jax.Array, key: jax.Array, x: Any) -> tuple[Any, EpochState]:
        return _with_key({**data, **x}, key, self.needs_key), _advance(data_state, self.batch_size)


class KeyedFullBatch:
    """Every step sees the whole dataset, plus a fresh PRNG key for subsampling plates."""

    def init(self, key: jax.Array) -> Any:
        return ()

    def next(self, data_state: Any, data: Any, step: jax.Array, key: jax.Array, x: Any) -> tuple[Any, Any]:
        return _with_key(dict(data), key, True), data_state
