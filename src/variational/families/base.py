"""The Family interface and the registry of ``method=`` names.

A family is a set of pure functions over a parameter pytree (see :class:`Family`):

- ``init(key, z0) -> params``: parameters centred on the initial point ``z0`` (shape ``(D,)``);
- ``sample_and_log_q(params, key, n) -> (z, log_q)``: ``n`` reparameterised draws ``(n, D)``
  and their log density under q;
- ``log_q(params, z)``: log density of given draws (used for sticking-the-landing), optional;
- ``mean``, ``std``, ``cov``: summaries in unconstrained space where defined;
- ``from_gaussian(mean, cov) -> params``: the member of the family closest to a given Gaussian
  (used by ``init=`` to start one method from another's answer), optional;
- ``solve(problem) -> Solution``: a *direct* method (Laplace, DADVI, Pathfinder) computes its
  parameters itself, by deterministic optimisation on all rows of the data, instead of the
  engine's stochastic loop; its parameters are then fixed.

The ELBO (:mod:`variational.objectives`) is written once, against this interface. A method
that is not an ELBO method (SVGD) supplies ``loss_and_grad`` itself and plugs into the same
engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple

import inspect

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import VariationalError

__all__ = ["Family", "FAMILIES", "register_family", "is_direct", "make_family", "method_options",
           "softplus_inv", "LOG_2PI", "Problem", "Solution", "with_init_params"]

Params = Any

LOG_2PI = jnp.log(2.0 * jnp.pi)


class Problem(NamedTuple):
    """What a direct method solves: the model as a log density on all rows of the data.

    ``logp(z, data)`` is the log joint of the flat unconstrained vector ``z`` (Jacobians
    included), ``data`` the rows it is evaluated on (passed as an argument so that compiled
    solvers do not capture them), ``z0`` the starting point, ``scale0`` optional starting
    standard deviations (from ``init=``), ``labels`` the name of every flat coordinate
    (``"alpha[3]"``) for messages, and ``key`` the random key of the fit. ``lift``: the
    model's numbers, which the solver's programs take as an argument (``LogDensity.lift``).
    """

    logp: Callable[[jax.Array, Any], jax.Array]
    data: Any
    z0: jax.Array
    labels: tuple[str, ...]
    key: jax.Array
    scale0: jax.Array | None = None
    lift: Any = None


class Solution(NamedTuple):
    """What a direct method found.

    ``params`` are the family's (fixed) parameters; ``trace`` the objective at every iteration
    (``fit.hist``: the negative log density for Laplace's mode search, the DADVI objective,
    the negative ELBO estimate along Pathfinder's best path); ``grad_evals`` counts gradients
    of the log density at one point (a Hessian-vector product counts as two); ``info`` holds
    what else the method reports (per-path results, Monte Carlo errors, k-hat...).
    """

    params: Any
    trace: Any
    iterations: int
    grad_evals: int
    converged: bool
    message: str
    info: dict


@dataclass(frozen=True)
class Family:
    """A variational family: pure functions over a parameter pytree."""

    name: str
    init: Callable[[jax.Array, jax.Array], Params]
    sample_and_log_q: Callable[[Params, jax.Array, int], tuple[jax.Array, jax.Array]]
    log_q: Callable[[Params, jax.Array], jax.Array] | None = None
    mean: Callable[[Params], jax.Array] | None = None
    std: Callable[[Params], jax.Array] | None = None
    cov: Callable[[Params], jax.Array] | None = None
    # a method that is not an ELBO method supplies its own (loss, grads) function builder:
    # make_loss_and_grad(logp, family_options) -> f(params, key, batch) -> (loss, grads)
    make_loss_and_grad: Callable[..., Callable] | None = None
    # draws of the approximation, shape (n, D) (defaults to sample_and_log_q's draws)
    sample: Callable[[Params, jax.Array, int], jax.Array] | None = None
    options: dict = field(default_factory=dict)
    # an empirical family's support points (P, D): summaries use them exactly, not resampled draws
    particles: Callable[[Params], jax.Array] | None = None
    # the parameters as the user sees them in ``fit.params`` (a guide's constrained values);
    # the engine always optimises the raw pytree (``fit.state.params``)
    user_params: Callable[[Params], Any] | None = None
    # an init that evaluates the model: f(key, z0, logp_fn) -> params, used instead of ``init``
    # when given; logp_fn(z_flat) is the log joint on the full data (SVGD's resampled start)
    init_with_logp: Callable[[jax.Array, jax.Array, Callable], Params] | None = None
    # top-level keys of the parameter dict that the optimiser leaves alone (a preconditioner)
    frozen: tuple[str, ...] = ()
    # the same distribution reparameterised so that the trained parameters start again from
    # the origin and unit scale of q itself (see variational.families.gaussian)
    rewhiten: Callable[[Params], Params] | None = None
    # factor on the adaptive schedule's smallest learning rate: a family whose stochastic
    # gradients jitter more per coordinate needs a lower floor for an equally precise average
    min_lr_factor: float = 1.0
    # per-leaf factors on the optimiser's steps (a pytree like params, of numbers), so that a
    # learning rate moves q by about as much whatever the number of parameters in a leaf
    step_scale: Callable[[Params], Any] | None = None
    # the parameters of the member closest to N(mean, cov) (unconstrained space), for init=
    from_gaussian: Callable[[jax.Array, jax.Array], Params] | None = None
    # a direct method: solve(Problem) -> Solution, run instead of the engine's loop
    solve: Callable[[Problem], Solution] | None = None
    # the inverse of ``user_params`` for some entries: f(params, {name: value}) -> params
    # (``init_params=`` given as the user sees the parameters)
    from_user_params: Callable[[Params, Any], Params] | None = None
    # marginals of q are Gaussian in the unconstrained space with ``mean`` and ``std``
    # (quantiles and CDFs are then exact)
    gaussian: bool = False
    # q's coordinates are independent (a mean-field family): its KL terms and its curvature
    # check are per coordinate. Capabilities, not names, decide what applies to a family.
    factorised: bool = False

    def draw(self, params: Params, key: jax.Array, n: int) -> jax.Array:
        """``n`` draws in the unconstrained space, shape ``(n, D)``."""
        if self.sample is not None:
            return self.sample(params, key, n)
        return self.sample_and_log_q(params, key, n)[0]

    def trainable(self, params: Params) -> Any:
        """A pytree like ``params`` of booleans: which leaves the optimiser updates."""
        if not self.frozen or not isinstance(params, dict):
            return jax.tree_util.tree_map(lambda _: True, params)
        return {k: jax.tree_util.tree_map(lambda _, keep=k not in self.frozen: keep, v)
                for k, v in params.items()}


def softplus_inv(y: float) -> float:
    """The inverse of softplus, for a host number (NumPy: no operation to compile)."""
    return float(np.float32(np.log(np.expm1(float(y)))))


# name -> builder(**options) -> Family. Other modules register more (SVGD, low-rank, flows...).
FAMILIES: dict[str, Callable[..., Family]] = {}
# the registered names whose families are direct methods (they carry ``solve``)
_DIRECT: set[str] = set()


def register_family(name: str, builder: Callable[..., Family], *, direct: bool = False) -> None:
    """Make ``method=name`` available to :func:`variational.fit`; ``direct``: its families solve
    for their parameters (``Family.solve``) instead of running the stochastic loop."""
    FAMILIES[name] = builder
    (_DIRECT.add if direct else _DIRECT.discard)(name)


def is_direct(method: Any) -> bool:
    """Whether ``method`` (a registered name or a :class:`Family`) is a direct method, known
    without building its family.

    Examples
    --------
    >>> import variational.families
    >>> is_direct("laplace"), is_direct("advi"), is_direct("no such method")
    (True, False, False)
    """
    if isinstance(method, Family):
        return method.solve is not None
    return method in _DIRECT


def make_family(method: str | Family, **options: Any) -> Family:
    """Resolve ``method`` (a name or a :class:`Family`) into a :class:`Family`."""
    if isinstance(method, Family):
        return method
    if method not in FAMILIES:
        raise ValueError(f"method={method!r} is not known; choose one of {sorted(FAMILIES)}")
    return FAMILIES[method](**options)


def method_options(name: Any) -> set[str] | None:
    """The option names of the registered method ``name`` (None when it is not registered).

    Examples
    --------
    >>> sorted(method_options("advi"))
    ['init_scale']
    """
    builder = FAMILIES.get(name) if isinstance(name, str) else None
    if builder is None:
        return None
    return {p.name for p in inspect.signature(builder).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def with_init_params(family: Family, params: Params, values: Any) -> Params:
    """``params`` with the entries named in ``values`` replaced (``fit(..., init_params=)``).

    A family that shows its parameters transformed (a guide's constrained values) takes the
    values as shown and maps them back; any other takes entries of its parameter pytree as is.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from variational.families import mean_field
    >>> fam = mean_field()
    >>> p = with_init_params(fam, fam.init(jax.random.PRNGKey(0), jnp.zeros(2)), {"loc": [1.0, 2.0]})
    >>> fam.user_params(p)["loc"].tolist()     # as fit.params shows it
    [1.0, 2.0]
    """
    if not isinstance(values, Mapping):
        raise VariationalError(f"init_params= must map parameter names to values, got {type(values).__name__}")
    shown = family.user_params(params) if family.user_params is not None else params
    if not isinstance(shown, Mapping):
        raise VariationalError(f"method {family.name!r} has no named parameters to set with init_params=")
    unknown = sorted(set(values) - set(shown))
    if unknown:
        raise VariationalError(f"init_params= names {unknown}, which are not parameters of method "
                               f"{family.name!r}; its parameters are {sorted(shown)}")
    new = {}
    for k, v in values.items():
        want = jnp.shape(shown[k])
        a = jnp.asarray(v, dtype=jnp.result_type(shown[k]))
        if a.shape != want:
            try:
                a = jnp.broadcast_to(a, want)
            except ValueError:
                raise VariationalError(f"init_params['{k}'] has shape {a.shape}, but the parameter "
                                       f"has shape {want}") from None
        if not bool(jnp.all(jnp.isfinite(a))):
            raise VariationalError(f"init_params['{k}'] holds NaN or inf; give finite values")
        new[k] = a
    if family.from_user_params is not None:
        out = family.from_user_params(params, new)
        bad = [k for k in new if k in out and not bool(jnp.all(jnp.isfinite(out[k])))]
        if bad:
            raise VariationalError(f"init_params[{bad[0]!r}] = {jnp.asarray(new[bad[0]]).tolist()} is "
                                   f"outside the constraint of that parameter; give a value inside it")
        return out
    return {**params, **new}
