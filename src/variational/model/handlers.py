"""Effect handlers and initialisation rules shared by the model layer and the data layer.

- :class:`ScaleObserved`: multiply the log-likelihood of observed sites (minibatch N/B scaling,
  ``total_size=``);
- :class:`SiteRecorder`: remember the last site a model reached, to name it in errors;
- :func:`value_without_sampler`: a value for improper priors while tracing;
- :func:`init_start_or_mean`: the initial point rule (start values, else the prior mean);
- :func:`unconstrained_value`: substitute unconstrained values, recording log-Jacobians by site;
- :func:`total_size_factor`: PyMC's ``total_size`` rule (per dimension).

Imports: numpyro, jax.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.distributions.transforms import IdentityTransform, biject_to
from numpyro.infer.initialization import init_to_median, init_to_uniform, init_to_value
from numpyro.primitives import Messenger

__all__ = ["SiteLayout", "SiteRecorder", "KeyUse", "ScaleObserved", "RNG_KEY", "init_start_or_mean",
           "describe_support", "value_without_sampler", "total_size_factor", "check_total_size",
           "JACOBIAN", "unconstrained_value"]


def check_total_size(total_size: Any, ndim: int, where: str = "total_size") -> Any:
    """``total_size`` as PyMC takes it, checked: a positive int, or a sequence of positive ints
    and ``None`` with at most one ``...`` (returned as a tuple).

    ``[N, None]``: the first dimension holds a minibatch of N rows, the second is whole;
    ``[N, ..., M]``: the first and the last dimensions are minibatches of N and M.
    """
    if isinstance(total_size, (int, np.integer)) and not isinstance(total_size, bool):
        if int(total_size) < 1:
            raise ValueError(f"{where}={total_size!r} must be a positive number of rows")
        return int(total_size)
    if not isinstance(total_size, (list, tuple)):
        raise ValueError(f"{where}={total_size!r} must be an int or a list such as [N, None] "
                         f"(one entry per dimension; None: not a minibatch; ...: skip dimensions)")
    items = list(total_size)
    if items.count(Ellipsis) > 1:
        raise ValueError(f"{where}={total_size!r} holds more than one '...'")
    for t in items:
        if t is not None and t is not Ellipsis and (isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1):
            raise ValueError(f"{where}={total_size!r}: each entry must be a positive int, None or ...")
    if len(items) - items.count(Ellipsis) > ndim:
        raise ValueError(f"{where}={total_size!r} has more entries than the observed values have "
                         f"dimensions ({ndim})")
    return tuple(int(t) if t is not None and t is not Ellipsis else t for t in items)


def total_size_factor(total_size: Any, shape: tuple[int, ...]) -> float:
    """The factor on the log-likelihood of observed values of ``shape`` with this ``total_size``.

    An int N: ``N / shape[0]``. A sequence: the product of ``N_i / shape[i]`` over its entries
    that are not None, entries after ``...`` counting from the last dimension (PyMC's rule).

    Examples
    --------
    >>> total_size_factor(1000, (100, 3)), total_size_factor([1000, None], (100, 3))
    (10.0, 10.0)
    >>> total_size_factor([1000, ..., 30], (100, 4, 3))
    100.0
    """
    if not isinstance(total_size, (list, tuple)):
        return float(total_size) / (shape[0] if len(shape) else 1)
    items = list(total_size)
    cut = items.index(Ellipsis) if Ellipsis in items else len(items)
    begin, end = items[:cut], items[cut + 1:]
    factor = 1.0
    for t, n in zip(begin, shape[:len(begin)]):
        factor *= 1.0 if t is None else t / n
    for t, n in zip(end, shape[len(shape) - len(end):] if end else ()):
        factor *= 1.0 if t is None else t / n
    return factor

@dataclass(frozen=True)
class SiteLayout:
    """Where one latent site lives in the flat unconstrained vector."""

    name: str
    shape: tuple[int, ...]                # constrained shape
    unconstrained_shape: tuple[int, ...]  # shape in the unconstrained space
    offset: int
    size: int


class SiteRecorder(Messenger):
    """Remembers the name of the last site the model reached (to name it in errors)."""

    def __init__(self, fn: Callable | None = None) -> None:
        self.last: str | None = None
        self.names: list[str] = []
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg.get("name"):
            self.last = msg["name"]
            self.names.append(msg["name"])


class KeyUse(Messenger):
    """Appends True to ``found`` when the model asks for a key (``numpyro.prng_key()``)."""

    def __init__(self, found: list, fn: Callable | None = None) -> None:
        self.found = found
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "prng_key":
            self.found.append(True)


class ScaleObserved(Messenger):
    """Multiply the log-likelihood of observed sites by a factor (minibatch N/B scaling).

    ``scale`` is either a number (every observed site), a callable ``msg -> factor or None``,
    or a mapping ``site name -> factor`` (a rule computed once for the model, see
    :mod:`variational.data.plan`; it takes precedence over ``total_size``).
    Otherwise sites declared with ``total_size=`` are scaled by :func:`total_size_factor`.
    Latent sites (priors) are never scaled, except discrete sites enumerated per row
    (``infer={"enumerate": "parallel"}``), which are part of each row's likelihood: a mapping
    names them like observed sites, a number scales them too.
    """

    def __init__(self, fn: Callable | None, scale: Any) -> None:
        self.scale = scale
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        infer = msg.get("infer") or {}
        enumerated = infer.get("enumerate") == "parallel"  # a per-row discrete site is likelihood
        if msg["type"] != "sample" or not (msg.get("is_observed") or enumerated):
            return
        factor = None
        if isinstance(self.scale, Mapping):
            factor = self.scale.get(msg["name"])
        elif enumerated:
            factor = self.scale if isinstance(self.scale, (int, float)) else None
        elif infer.get("total_size") is not None:
            factor = total_size_factor(infer["total_size"], tuple(jnp.shape(msg["value"])))
        elif callable(self.scale):
            factor = self.scale(msg)
        elif self.scale is not None:
            factor = self.scale
        if factor is not None and factor != 1:
            msg["scale"] = factor if msg.get("scale") is None else msg["scale"] * factor


#: Reserved batch entry: a PRNG key that seeds the model (for ``numpyro.plate(subsample_size=)``).
RNG_KEY = "_rng_key"


def init_start_or_mean(site: dict | None = None, values: Mapping[str, Any] = {}) -> Any:
    """Init strategy: a site with a start value takes it, the others start at the prior mean.

    The mean is deterministic (no draws: the same initial point whatever the seed), which a
    median of a few prior draws is not: for a wide prior such as Normal(0, 100) that median
    can land 70 units from the centre. Where the mean is undefined or infinite (Cauchy,
    improper priors) the median of prior draws is used.
    """
    if site is None:
        return functools.partial(init_start_or_mean, values=values)
    if site["name"] in values:  # (as a JAX array: a NumPy one cannot be indexed by traced values)
        return jnp.asarray(init_to_value(site, values=values))
    if site["type"] != "sample" or site.get("is_observed") or site["fn"].support.is_discrete:
        return init_to_median(site, num_samples=15)
    try:
        mean = 1.0 * site["fn"].mean
    except (NotImplementedError, ValueError):
        return init_to_median(site, num_samples=15)
    sample_shape = site["kwargs"].get("sample_shape")
    if sample_shape:
        mean = jnp.broadcast_to(mean, tuple(sample_shape) + jnp.shape(mean))
    median = init_to_median(site, num_samples=15)
    return jnp.where(jnp.isfinite(mean), mean, median)


def describe_support(support: Any) -> str:
    return type(support).__name__.lstrip("_").replace("Constraint", "").lower() or str(support)


def value_without_sampler(site: dict) -> Any:
    """A point in the support of a latent site whose distribution cannot be sampled.

    Improper priors (``vi.Flat``, ``vi.HalfFlat``, NumPyro's ``ImproperUniform``) have no
    sampler; tracing the model needs a value of the right shape, which ``init_to_uniform`` gives.
    """
    if site["type"] != "sample" or site["is_observed"] or site.get("value") is not None:
        return None
    try:
        jax.eval_shape(lambda k: site["fn"](rng_key=k, sample_shape=site["kwargs"].get("sample_shape", ())),
                       site["kwargs"]["rng_key"])
    except NotImplementedError:
        return init_to_uniform(site)
    return None


#: name of the term holding a latent site's log-Jacobian (see :meth:`LogDensity.log_terms`)
JACOBIAN = "_{}_log_det"


def unconstrained_value(site: dict, z: Mapping[str, jax.Array]) -> Any:
    """Substitute fn: a latent site's value from its unconstrained ``z``, recording the
    log-Jacobian as a factor named ``JACOBIAN.format(name)`` (as NumPyro's potential energy does)."""
    name = site["name"]
    if site["type"] != "sample" or site["is_observed"] or name not in z:
        return None
    t = biject_to(site["fn"].support)
    value = t(z[name])
    if not isinstance(t, IdentityTransform):
        log_det = t.log_abs_det_jacobian(z[name], value)
        extra = jnp.ndim(log_det) - jnp.ndim(value) + len(site["fn"].event_shape)
        numpyro.factor(JACOBIAN.format(name), jnp.sum(log_det, axis=tuple(range(-extra, 0))) if extra > 0 else log_det)
    return value
