"""The numbers a model gives its distributions, recorded and put in place as a program's argument.

See :mod:`variational.compilation.constants`: a log density records the numbers of its model's
distributions (inside :func:`~variational.compilation.constants.recording`), and while a program
that runs the model is traced with them as an argument, :class:`LiftConstants` puts the
argument's entries in their place. So an edited prior scale gives the same program with another
argument, and the fit after the edit compiles only its initial point (which keeps its numbers).

Which numbers: the parameters of each sample site's distribution (its pytree leaves, nested
distributions and transforms included) that are concrete Python floats or floating arrays, and
Python ints of a continuous distribution (``vi.Normal("mu", 0, 10)``). Left as they are: traced
values, integer parameters of discrete distributions (a Binomial's ``total_count``), enumerated
sites, and anything the model computes from a number before giving it (``2 * scale``).

Imports: numpyro, jax, :mod:`variational.compilation`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from numpyro.primitives import Messenger

from ..compilation.constants import current, recorder

__all__ = ["LiftConstants", "as_arguments"]


def _liftable(leaf: Any, discrete: bool) -> bool:
    if isinstance(leaf, jax.core.Tracer) or isinstance(leaf, (bool, np.bool_)):
        return False
    if isinstance(leaf, float):
        return True
    if isinstance(leaf, int):
        return not discrete
    if isinstance(leaf, (np.ndarray, np.generic, jax.Array)):
        return bool(np.issubdtype(leaf.dtype, np.floating))
    return False


def _host(leaf: Any) -> tuple:
    """A number as recorded: its host value and whether it is a Python number (weakly typed)."""
    return np.asarray(leaf), isinstance(leaf, (int, float))


def _key(host: tuple) -> tuple:
    """A recorded number's identity: comparable, and the same in every process."""
    value, weak = host
    return weak, value.dtype.str, value.shape, np.ascontiguousarray(value).tobytes()


def as_arguments(numbers: list) -> tuple:
    """Recorded numbers as a program's argument (Python numbers stay weakly typed, so the model's
    arithmetic promotes them as it did)."""
    return tuple(jax.device_put(v.item() if weak else v) for v, weak in numbers)   # (a transfer, no op)


class LiftConstants(Messenger):
    """Record a model's numbers (inside :func:`~variational.compilation.constants.recording`), or
    put the traced argument's entries in their place (inside
    :func:`~variational.compilation.constants.lifting`); outside both it changes nothing.

    A site's distinct numbers are taken in the order of their values, each one entry for all its
    leaves. An entry replaces a number only when the number equals the one recorded at its
    position; from the first that differs (a model whose numbers depend on its input), the rest of the run keeps
    its own numbers, so the program always computes what the model says.
    """

    def __init__(self, fn: Callable | None = None) -> None:
        self._at, self._ok = 0, True
        super().__init__(fn)

    def __enter__(self) -> "LiftConstants":
        self._at, self._ok = 0, True
        return super().__enter__()

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "sample" or (msg.get("infer") or {}).get("enumerate"):
            return
        found, lift = recorder(), current()
        if (found is None and lift is None) or not self._ok:
            return
        fn = msg["fn"]
        discrete = bool(getattr(fn, "is_discrete", False) or getattr(getattr(fn, "support", None), "is_discrete", False))
        try:
            leaves, tree = jax.tree_util.tree_flatten(fn)
        except Exception:   # (a distribution that is no pytree keeps its numbers)
            return
        keys = {j: _key(_host(leaf)) for j, leaf in enumerate(leaves) if _liftable(leaf, discrete)}
        if not keys:
            return
        # one entry per distinct number of the site, ordered by the numbers themselves (the order
        # of a distribution's leaves changes from process to process: NumPyro gathers them in a set)
        distinct = sorted(set(keys.values()))
        if found is not None:
            found.extend((np.frombuffer(k[3], np.dtype(k[1])).reshape(k[2]), k[0]) for k in distinct)
            return
        expected, traced = lift
        entry = {}
        for k in distinct:
            if self._at >= len(expected) or _key(expected[self._at]) != k:
                self._ok = False
                return
            entry[k] = traced[self._at]
            self._at += 1
        new = [entry[keys[j]] if j in keys else leaf for j, leaf in enumerate(leaves)]
        try:
            msg["fn"] = jax.tree_util.tree_unflatten(tree, new)
        except Exception:
            self._ok = False
