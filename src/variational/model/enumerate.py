"""Discrete latent sites summed out exactly (parallel enumeration), and drawn afterwards.

A discrete latent site marked ``infer={"enumerate": "parallel"}`` (or a model wrapped in
``numpyro.contrib.funsor.config_enumerate``) is not part of the flat unconstrained vector: the
log density sums it out exactly, which is what NumPyro's ``TraceEnum_ELBO`` does with
model-side enumeration. Each value of the site's support gets its own tensor dimension (left of
the plates), the log-probability of every site becomes a factor over those dimensions, and the
factors are contracted by variable elimination over plates (funsor's ``sum_product``, the
tensor variable elimination of Obermeyer et al. 2019, as NumPyro uses it).

Minibatch scaling follows ``TraceEnum_ELBO``: factors that share an enumerated site are
contracted first and the group is scaled afterwards by its common N/B factor, so a minibatch
estimates ``N/B * sum_i log sum_k p(x_i, z_i = k)`` without bias (multiplying each factor by
N/B before the sum over ``k`` would not). A group whose sites have different scales (an
enumerated site shared by all rows, with per-row observations) has no such estimator and is
refused.

:func:`sample_discrete` draws the enumerated sites from their exact conditional posterior given
the continuous values (NumPyro's ``infer_discrete``, forward-filter backward-sample).

Imports: numpyro (``numpyro.contrib.funsor``, which needs funsor), jax.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from numpyro import handlers
from numpyro.distributions import Distribution
from numpyro.infer.util import _unconstrain_reparam
from numpyro.primitives import Messenger

from ..errors import ModelError

__all__ = ["enumerated_sites", "is_discrete", "refuse_discrete", "max_plate_nesting", "enum_log_density", "enum_marginals",
           "sample_discrete"]


def enumerated_sites(trace: Mapping[str, dict]) -> list[str]:
    """Latent sample sites marked for parallel enumeration."""
    return [n for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]
            and (s.get("infer") or {}).get("enumerate") == "parallel"]


def is_discrete(fn: Any) -> bool:
    """Whether a distribution's values are discrete."""
    return bool(getattr(fn, "is_discrete", False) or getattr(fn.support, "is_discrete", False))


def refuse_discrete(latent: Mapping[str, dict]) -> None:
    """A clear error for a discrete latent site among ``latent`` (what to do depends on its support)."""
    for n, s in latent.items():
        fn = s["fn"]
        if is_discrete(fn):
            finite = getattr(fn, "has_enumerate_support", False)
            how = (f"to marginalise it exactly, mark it numpyro.sample('{n}', ..., infer="
                   f"{{'enumerate': 'parallel'}}) (or wrap the model in numpyro.contrib.funsor."
                   f"config_enumerate) and it is summed out" if finite else
                   "its support is infinite, so it cannot be marginalised by summing: give it a "
                   "discrete distribution in a guide (guide=) and opt in to the score-function "
                   "estimator (score_function=True)")
            raise ModelError(
                f"site '{n}' is a discrete latent variable ({type(fn).__name__}); the "
                f"variational families here are continuous: {how}, or pass its values as "
                f"observed=")


def max_plate_nesting(trace: Mapping[str, dict]) -> int:
    """The deepest plate nesting (in dimensions) of the sample sites of ``trace``."""
    dims = [-f.dim for s in trace.values() if s["type"] == "sample"
            for f in s.get("cond_indep_stack", ()) if f.dim is not None]
    return max(dims, default=0)


def _funsor() -> Any:
    try:
        import funsor
    except ImportError as e:  # pragma: no cover - funsor is a dependency
        raise ModelError("summing out discrete latent sites needs the package funsor "
                         "(pip install funsor)") from e
    funsor.set_backend("jax")
    return funsor


def _factors(tr: Mapping[str, dict], funsor: Any) -> list[tuple[str, Any, float]]:
    """Each sample site's log-probability as a funsor, with its scale."""
    out = []
    for name, site in tr.items():
        if site["type"] != "sample":
            continue
        value, inter = site["value"], site["intermediates"]
        lp = site["fn"].log_prob(value, inter) if inter else site["fn"].log_prob(value)
        dim_to_name = site["infer"]["dim_to_name"]
        if any(str(d).startswith(("_time", "_PREV_")) for d in dim_to_name.values()):
            raise ModelError(
                f"site '{name}' is enumerated inside numpyro.contrib.control_flow.scan or "
                f"markov; summing out such chains is not supported here: write the forward "
                f"algorithm by hand (logsumexp over the states, as in a hidden Markov model) or "
                f"use NumPyro's MCMC")
        scale = site["scale"]
        out.append((name, funsor.to_funsor(lp, output=funsor.Real, dim_to_name=dim_to_name),
                    1.0 if scale is None else scale))
    return out


def _groups(factors: list, sum_vars: frozenset) -> tuple[list[list[int]], list[int]]:
    """Factors connected through shared enumerated sites (connected components), and the rest."""
    parent = list(range(len(factors)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for v in sum_vars:
        linked = [i for i, (_, f, _) in enumerate(factors) if v in f.inputs]
        for i in linked[1:]:
            parent[find(i)] = find(linked[0])
    comps: dict[int, list[int]] = {}
    for i in range(len(factors)):
        comps.setdefault(find(i), []).append(i)
    enumerated = [c for c in comps.values() if any(frozenset(factors[i][1].inputs) & sum_vars for i in c)]
    free = [i for c in comps.values() if c not in enumerated for i in c]
    return enumerated, free


def _concrete(s: Any) -> float | None:
    try:
        return float(s)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None  # a traced scale: nothing to compare


def _common_scale(names: list[str], scales: list[Any]) -> Any:
    values = {_concrete(s) for s in scales}
    if None not in values and len(values) > 1:
        raise ModelError(
            f"the enumerated site(s) and the sites that depend on them ({', '.join(names)}) are "
            f"scaled differently (minibatch N/B factors {sorted(values)}); a discrete site shared "
            f"by all rows cannot be summed out on a minibatch without bias. Fit without "
            f"batch_size=, or make the discrete site per row")
    return scales[0]


class _BatchAsEvent(Messenger):
    """Sites outside every plate: their batch dimensions become event dimensions.

    ``vi.Normal("mu", 0, 1, shape=2)`` has a batch dimension that no plate declares, which
    enumeration cannot tell from a plate's; summed as an event it gives the same log density.
    """

    def process_message(self, msg: dict) -> None:
        if (msg["type"] == "sample" and not msg.get("cond_indep_stack") and msg["fn"].batch_shape
                and (msg.get("infer") or {}).get("enumerate") != "parallel"):
            msg["fn"] = msg["fn"].to_event(len(msg["fn"].batch_shape))


def enum_log_density(model: Callable, kwargs: Mapping[str, Any], z: Mapping[str, Any],
                     plate_nesting: int) -> jax.Array:
    """Log joint at unconstrained ``z`` (Jacobians included) with enumerated sites summed out."""
    funsor = _funsor()
    from numpyro.contrib.funsor import enum, plate_to_enum_plate, trace as enum_trace

    model = _BatchAsEvent(model)
    substituted = handlers.substitute(model, substitute_fn=partial(_unconstrain_reparam, dict(z)))
    with plate_to_enum_plate():
        tr = enum_trace(enum(substituted, -plate_nesting - 1)).get_trace(**kwargs)
    factors = _factors(tr, funsor)
    sum_vars = frozenset(n for n, s in tr.items() if s["type"] == "sample" and not s["is_observed"]
                         and (s.get("infer") or {}).get("enumerate") == "parallel")
    groups, free = _groups(factors, sum_vars)
    total = jnp.zeros(())
    for i in free:
        _, f, scale = factors[i]
        total = total + scale * jnp.sum(f.data)
    for g in groups:
        fs = [factors[i][1] for i in g]
        scale = _common_scale([factors[i][0] for i in g], [factors[i][2] for i in g])
        inputs = frozenset().union(*[f.inputs for f in fs])
        plates = frozenset(inputs) - sum_vars
        with funsor.interpretations.lazy:
            lazy = funsor.sum_product.sum_product(funsor.ops.logaddexp, funsor.ops.add, fs,
                                                  eliminate=frozenset(inputs), plates=plates)
        total = total + scale * funsor.optimizer.apply_optimizer(lazy).data
    return total


def sample_discrete(model: Callable, kwargs: Mapping[str, Any], values: Mapping[str, Any],
                    key: jax.Array, plate_nesting: int) -> dict[str, Any]:
    """A trace of ``model`` at the constrained ``values`` with the enumerated sites drawn from
    their exact conditional posterior (``infer_discrete`` at temperature 1)."""
    _funsor()
    from numpyro.contrib.funsor import infer_discrete

    k_draw, k_model = jax.random.split(key)
    fixed = _BatchAsEvent(handlers.substitute(handlers.seed(model, k_model), data=dict(values)))
    drawn = infer_discrete(fixed, first_available_dim=-plate_nesting - 1, temperature=1, rng_key=k_draw)
    return handlers.trace(drawn).get_trace(**kwargs)


class _Tilted(Distribution):
    """``base`` with ``delta[..., value]`` added to its log-probability (value-dependent tilt)."""

    def __init__(self, base: Any, delta: jax.Array) -> None:
        self.base, self.delta = base, delta
        super().__init__(base.batch_shape, base.event_shape)

    @property
    def support(self) -> Any:
        return self.base.support

    @property
    def has_enumerate_support(self) -> bool:
        return True

    def enumerate_support(self, expand: bool = True) -> jax.Array:
        return self.base.enumerate_support(expand)

    def sample(self, key: jax.Array, sample_shape: tuple = ()) -> jax.Array:
        return self.base.sample(key, sample_shape)

    def log_prob(self, value: jax.Array) -> jax.Array:
        v = jnp.asarray(value).astype(jnp.int32)
        shape = jnp.broadcast_shapes(v.shape, self.delta.shape[:-1])
        d = jnp.broadcast_to(self.delta, shape + self.delta.shape[-1:])
        tilt = jnp.take_along_axis(d, jnp.broadcast_to(v, shape)[..., None], -1)[..., 0]
        return self.base.log_prob(value) + tilt


class _Tilt(Messenger):
    def __init__(self, fn: Callable, deltas: Mapping[str, jax.Array]) -> None:
        self.deltas = deltas
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and msg["name"] in self.deltas:
            msg["fn"] = _Tilted(msg["fn"], self.deltas[msg["name"]])


def enum_marginals(model: Callable, kwargs: Mapping[str, Any], z: Mapping[str, Any],
                   plate_nesting: int, sizes: Mapping[str, tuple]) -> dict[str, jax.Array]:
    """Exact conditional posterior probabilities of each enumerated site given ``z``.

    ``sizes`` maps each site to ``(shape, K)``; returns ``name -> (*shape, K)`` probabilities.
    The log marginal likelihood with a tilt ``delta[z_i]`` added to each site's log-probability
    has gradient ``p(z_i = k | x, z)`` in ``delta[i, k]`` at ``delta = 0`` (one backward pass of
    the same contraction, however the sites depend on each other).
    """
    zeros = {n: jnp.zeros(tuple(shape) + (k,)) for n, (shape, k) in sizes.items()}
    return jax.grad(lambda d: enum_log_density(_Tilt(model, d), kwargs, z, plate_nesting))(zeros)
