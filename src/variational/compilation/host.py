"""Values made on the host, with no XLA operation to compile: a seed's key, a flat vector.

Run eagerly, ``jax.random.PRNGKey(seed)`` and ``jax.flatten_util.ravel_pytree`` each compile
single operations (the seed's transfer and conversion, a reshape and a concatenation) in every
new process. These give the same values from NumPy and a transfer.

Examples
--------
>>> import numpy as np, jax
>>> bool(np.array_equal(key_of(7), jax.random.PRNGKey(7)))
True
>>> flat, unravel = ravel({"a": np.ones(2, np.float32), "b": np.zeros((), np.float32)})
>>> flat.tolist(), unravel(flat)["a"].shape
([1.0, 1.0, 0.0], (2,))
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = ["key_of", "ravel"]


def key_of(seed: int) -> jax.Array:
    """``jax.random.PRNGKey(seed)``, made on the host: ``[0, seed]`` as two uint32 words (the
    default threefry keys; any other seed or key type is made by JAX)."""
    if jax.config.jax_default_prng_impl == "threefry2x32" and 0 <= int(seed) < 2**31 \
            and not jax.config.jax_enable_custom_prng:
        return jax.device_put(np.array([0, int(seed)], np.uint32))
    return jax.random.PRNGKey(seed)


def ravel(tree: Any) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
    """``jax.flatten_util.ravel_pytree(tree)`` with the flat vector made on the host (the leaves
    in JAX's order, in the dtype JAX would give them) and the same unravel function."""
    box: list = []

    def shape_only(t: Any) -> Any:
        flat, unravel = ravel_pytree(t)
        box.append(unravel)
        return flat

    out = jax.eval_shape(shape_only, tree)
    leaves = [np.ravel(np.asarray(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]
    flat = np.concatenate(leaves).astype(out.dtype) if leaves else np.zeros((0,), out.dtype)
    return jax.device_put(flat), box[0]
