"""Stein variational gradient descent (SVGD), its annealed and amortized forms, and empirical
(particle) families.

SVGD moves a set of particles ``x_1..x_P`` along the Stein direction

    phi(x_i) = 1/P sum_j [ drive * k(x_j, x_i) grad log p(x_j) + grad_{x_j} k(x_j, x_i) ]

with a kernel ``k`` (:mod:`.kernels`: RBF by default, ``exp(-|x - y|^2 / h)`` with the median
heuristic for ``h``, as in PyMC and the original paper; IMQ, linear, random features). The first
term pulls particles towards high density, the second (repulsive) term keeps them apart.
``drive`` is ``1 / temperature`` (PyMC's ``temperature``); annealed SVGD (``"asvgd"``, NumPyro's
``ASVGD``) multiplies it by a cyclical schedule that rises from 0 to 1 in each cycle.

It plugs into the engine as a :class:`~variational.families.Family` whose ``make_loss_and_grad``
returns ``(loss, -phi)``: the particles are the parameters and any optax optimiser applies the
update. The loss recorded per step is a monitoring value, ``-mean_i log p(x_i)``, not an ELBO.
Amortized SVGD (``"amortized_svgd"``, PyMC's ``ASVGD``) instead moves the draws of a full-rank
Gaussian along ``phi`` and updates the Gaussian's parameters by the chain rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from ..errors import whole_number
from ._checks import positive_float
from ..errors import VariationalError
from .base import Family, register_family
from .gaussian import full_rank
from .kernels import RBF, Kernel, _pairwise_median, make_kernel  # noqa: F401  (_pairwise_median: re-export)

__all__ = ["svgd", "asvgd", "amortized_svgd", "particle_family", "rbf_stein_direction", "annealing"]


def rbf_stein_direction(x: jax.Array, grad_logp: jax.Array, bandwidth: float | None = None) -> jax.Array:
    """The SVGD direction ``phi`` for particles ``x`` (P, D) with scores ``grad_logp`` (P, D).

    One fused O(P^2 D) computation: pairwise squared distances from one matrix product, the
    kernel matrix, then the driving and repulsive terms as two more matrix products.

    Parameters
    ----------
    x : jax.Array
        Particles, shape ``(P, D)``.
    grad_logp : jax.Array
        ``grad log p`` at each particle, shape ``(P, D)``.
    bandwidth : float, optional
        ``h`` in ``k(x, y) = exp(-|x - y|^2 / h)``; the median heuristic when omitted.

    Returns
    -------
    jax.Array
        ``phi``, shape ``(P, D)``: the direction that most decreases KL(q || p) in the RKHS.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[-1.0], [1.0]])
    >>> phi = rbf_stein_direction(x, -x)          # standard normal target
    >>> bool(phi[0, 0] > 0) and bool(phi[1, 0] < 0)  # pulled towards 0
    True
    """
    return RBF(bandwidth).direction(x, grad_logp)


def _particle_summaries() -> dict[str, Callable]:
    def mean(p: Any) -> jax.Array:
        return jnp.mean(p["particles"], axis=0)

    def std(p: Any) -> jax.Array:
        return jnp.std(p["particles"], axis=0)

    def cov(p: Any) -> jax.Array:
        x = p["particles"]
        xc = x - jnp.mean(x, axis=0)
        return xc.T @ xc / x.shape[0]

    def sample(p: Any, key: jax.Array, n: int) -> jax.Array:
        x = p["particles"]
        return x[jax.random.randint(key, (n,), 0, x.shape[0])]

    return dict(mean=mean, std=std, cov=cov, sample=sample, particles=lambda p: p["particles"])


def _no_density(name: str) -> Callable:
    def sample_and_log_q(p: Any, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        raise VariationalError(
            f"method '{name}' is a set of particles without a density, so it has no ELBO or "
            f"log q; use fit.sample(n) for draws")

    return sample_and_log_q


def particle_family(name: str, init: Callable[[jax.Array, jax.Array], Any], *,
                    make_loss_and_grad: Callable | None = None, options: dict | None = None) -> Family:
    """An empirical family: parameters ``{"particles": (P, D)}``; draws resample the particles.

    Means, standard deviations and covariances are those of the particles themselves.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> fam = particle_family("empirical", lambda key, z0: {"particles": jnp.array([[0.0], [2.0]])})
    >>> p = fam.init(jax.random.PRNGKey(0), jnp.zeros(1))
    >>> float(fam.mean(p)[0]), fam.draw(p, jax.random.PRNGKey(1), 5).shape
    (1.0, (5, 1))
    """
    return Family(name, init, _no_density(name), None, make_loss_and_grad=make_loss_and_grad,
                  options=dict(options or {}), **_particle_summaries())


def _stein_init(n: int, jitter: float, particle_init: str, candidates: int) -> tuple[Callable, Callable]:
    """The jittered start and the importance-resampled start of ``n`` particles."""
    if particle_init not in ("jitter", "resample"):
        raise VariationalError(f"particle_init={particle_init!r} is not known; choose 'jitter' or 'resample'")
    n_cand = whole_number("candidates", candidates, 1) * n

    def init(key: jax.Array, z0: jax.Array) -> Any:
        z0 = jnp.asarray(z0)
        return {"particles": z0 + float(jitter) * jax.random.normal(key, (n,) + z0.shape, z0.dtype)}

    def init_resampled(key: jax.Array, z0: jax.Array, logp: Callable) -> Any:
        k_cand, k_u, k_noise = jax.random.split(key, 3)
        z0 = jnp.asarray(z0)
        eps = jax.random.normal(k_cand, (n_cand,) + z0.shape, z0.dtype)
        cand = z0 + float(jitter) * eps
        log_w = jax.jit(jax.vmap(logp))(cand) + 0.5 * jnp.sum(eps * eps, axis=1)  # log p - log q0
        log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
        w = jnp.exp(log_w - jnp.max(log_w))
        cdf = jnp.cumsum(w / jnp.sum(w))
        u = (jnp.arange(n) + jax.random.uniform(k_u)) / n          # systematic resampling
        x = cand[jnp.minimum(jnp.searchsorted(cdf, u), n_cand - 1)]
        # repeated candidates would move together forever: separate them a little
        spread = jnp.where(jnp.std(x, axis=0) > 0, jnp.std(x, axis=0), float(jitter) or 1.0)
        return {"particles": x + 1e-2 * spread * jax.random.normal(k_noise, x.shape, x.dtype)}

    return init, init_resampled


def _kernel_options(kernel: Any, bandwidth: Any, temperature: Any) -> tuple[Kernel, Any, float]:
    """The kernel, the checked bandwidth and temperature of a Stein method's options."""
    if bandwidth is not None:
        bandwidth = positive_float("bandwidth", bandwidth)
    t = positive_float("temperature", temperature)
    return make_kernel(kernel, bandwidth), bandwidth, t


def _stein_family(name: str, n: int, kernel: Kernel, drive: Callable[[jax.Array], jax.Array],
                  jitter: float, particle_init: str, candidates: int, options: dict,
                  takes_step: bool = False) -> Family:
    """A particle family moved along the Stein direction with ``drive(step)`` on the driving term."""
    init, init_resampled = _stein_init(n, jitter, particle_init, candidates)

    def make_loss_and_grad(logp: Callable, num_particles: int = 1, **_: Any) -> Callable:
        value_and_score = jax.vmap(jax.value_and_grad(logp), in_axes=(0, None))

        def loss_and_grad(params: Any, key: jax.Array, batch: Any, step: Any = 0) -> tuple[jax.Array, Any]:
            x = params["particles"]
            lp, g = value_and_score(x, batch)
            phi = kernel.direction(x, g, drive(step))
            return -jnp.mean(lp), {"particles": -phi}

        loss_and_grad.takes_step = takes_step   # the engine passes the step number
        return loss_and_grad

    fam = particle_family(name, init, make_loss_and_grad=make_loss_and_grad,
                          options={"n_particles": n, "jitter": jitter, "particle_init": particle_init,
                                   "candidates": candidates, "kernel": kernel.spec(), **options})
    return dataclasses.replace(fam, init_with_logp=init_resampled) if particle_init == "resample" else fam


def svgd(n_particles: int = 100, bandwidth: float | None = None, jitter: float = 1.0,
         particle_init: str = "jitter", candidates: int = 10, kernel: Any = "rbf",
         temperature: float = 1.0) -> Family:
    """Stein variational gradient descent.

    Parameters
    ----------
    n_particles : int
        Number of particles ``P`` (each step costs O(P^2 D) plus P gradients of the model).
    bandwidth : float, optional
        Kernel bandwidth ``h`` in ``exp(-|x - y|^2 / h)``; the median heuristic by default.
    jitter : float
        Particles start at the model's initial point plus ``jitter * N(0, 1)`` noise
        (unconstrained space).
    particle_init : {"jitter", "resample"}
        ``"jitter"`` (PyMC's start): the noisy points themselves. ``"resample"``: draw
        ``candidates * n_particles`` noisy points, weight them by ``p / q0`` and keep
        ``n_particles`` of them by systematic resampling (plus a little noise to separate
        repeats). SVGD moves mass between separated modes very slowly, so the share of
        particles per mode is essentially fixed by the start; the resampled start puts it near
        the posterior's. Useful in few dimensions (the weights degenerate in many).
    candidates : int
        Candidates per particle for ``particle_init="resample"``.
    kernel : str, Kernel or dict
        ``"rbf"`` (default), ``"imq"``, ``"linear"``, ``"random_features"``, or a kernel object
        from :mod:`variational.families.kernels` with its options (``IMQ(const=2.0)``).
        ``bandwidth`` applies to the RBF and random-features kernels.
    temperature : float
        The driving term is divided by it (PyMC's ``temperature``); above 1 spreads the particles.

    Returns
    -------
    Family
        Use with ``vi.fit(model, data, method="svgd", n_particles=...)``.

    Examples
    --------
    >>> import variational as vi
    >>> def model():
    ...     vi.Normal("x", 1.0, 0.5)
    >>> fit = vi.fit(model, method="svgd", n_particles=200, steps=500, learning_rate=0.05,
    ...              progress=False)
    >>> round(float(fit.mean["x"]), 1), fit.params["particles"].shape
    (1.0, (200, 1))
    """
    n = whole_number("n_particles", n_particles, minimum=2)
    jitter = positive_float("jitter", jitter, allow_zero=True)
    k, bandwidth, t = _kernel_options(kernel, bandwidth, temperature)
    return _stein_family("svgd", n, k, lambda step: 1.0 / t, jitter, particle_init, candidates,
                         {"bandwidth": bandwidth, "temperature": t})


def annealing(step: Any, anneal_steps: int, num_cycles: int = 10, transition_speed: float = 10.0) -> jax.Array:
    """The cyclical annealing weight of annealed SVGD at ``step`` (D'Angelo & Fortuin 2021, eq. 4).

    The ``anneal_steps`` steps are cut into ``num_cycles`` cycles of length ``L``; in each but
    the last the weight rises as ``((step mod L) / L) ** transition_speed`` from 0 to 1
    (exploration first, then the pull of the density); in the last cycle and afterwards it is 1
    (plain SVGD), as in NumPyro's ``ASVGD``.

    Examples
    --------
    >>> [round(float(annealing(s, 100, num_cycles=2, transition_speed=1)), 2) for s in (0, 25, 49, 50, 99, 150)]
    [0.0, 0.5, 0.98, 1.0, 1.0, 1.0]
    """
    length = max(int(anneal_steps) // int(num_cycles), 1)
    s = jnp.asarray(step, jnp.float32)
    rising = (jnp.mod(s, length) / length) ** transition_speed
    return jnp.where(s < (int(num_cycles) - 1) * length, rising, 1.0)


def asvgd(n_particles: int = 100, anneal_steps: int | None = None, num_cycles: int = 10,
          transition_speed: float = 10.0, bandwidth: float | None = None, jitter: float = 1.0,
          particle_init: str = "jitter", candidates: int = 10, kernel: Any = "rbf",
          temperature: float = 1.0) -> Family:
    """Annealed SVGD (NumPyro's ``ASVGD``): SVGD whose driving term follows :func:`annealing`.

    Early in each cycle the particles mostly repel each other (they explore and spread over
    modes); later the density pulls them in. ``anneal_steps`` is the length of the schedule
    (``vi.fit`` uses its ``steps`` when it is not given); the other options are :func:`svgd`'s.

    Examples
    --------
    >>> import variational as vi
    >>> def model():
    ...     vi.Normal("x", 1.0, 0.5)
    >>> fit = vi.fit(model, method="asvgd", n_particles=100, steps=600, num_cycles=3,
    ...              learning_rate=0.05, progress=False)
    >>> round(float(fit.mean["x"]), 1)
    1.0
    """
    n = whole_number("n_particles", n_particles, minimum=2)
    if anneal_steps is None:
        raise VariationalError("method 'asvgd' needs anneal_steps= (the length of its annealing "
                               "schedule; vi.fit uses steps= when it is a number)")
    total = whole_number("anneal_steps", anneal_steps, 1)
    cycles = whole_number("num_cycles", num_cycles, 1)
    speed = positive_float("transition_speed", transition_speed)
    k, bandwidth, t = _kernel_options(kernel, bandwidth, temperature)
    return _stein_family("asvgd", n, k, lambda step: annealing(step, total, cycles, speed) / t,
                         positive_float("jitter", jitter, allow_zero=True), particle_init, candidates,
                         {"anneal_steps": total, "num_cycles": cycles, "transition_speed": speed,
                          "bandwidth": bandwidth, "temperature": t}, takes_step=True)


def amortized_svgd(n_draws: int = 100, kernel: Any = "rbf", bandwidth: float | None = None,
                   temperature: float = 1.0, init_scale: float = 0.1) -> Family:
    """Amortized SVGD (PyMC's ``ASVGD``): a full-rank Gaussian trained with the Stein direction.

    Each step draws ``n_draws`` points of q, computes the Stein direction ``phi`` at them and
    moves q's parameters by ``1/n sum_i phi(x_i) dx_i/dtheta`` (the chain rule through the
    reparameterised draws). The result is a Gaussian: draws, log q and diagnostics as for
    ``"fullrank_advi"``. PyMC's default is 500 draws per step (``obj_n_mc``).

    Examples
    --------
    >>> import variational as vi
    >>> def model():
    ...     vi.Normal("x", 1.0, 0.5)
    >>> fit = vi.fit(model, method="amortized_svgd", n_draws=200, steps=1000, learning_rate=0.05,
    ...              progress=False)
    >>> round(float(fit.mean["x"]), 1)
    1.0
    """
    n = whole_number("n_draws", n_draws, minimum=2)
    k, bandwidth, t = _kernel_options(kernel, bandwidth, temperature)
    drive = 1.0 / t
    base = full_rank(init_scale)

    def make_loss_and_grad(logp: Callable, num_particles: int = 1, **_: Any) -> Callable:
        value_and_score = jax.vmap(jax.value_and_grad(logp), in_axes=(0, None))

        def loss_and_grad(params: Any, key: jax.Array, batch: Any) -> tuple[jax.Array, Any]:
            x, pullback = jax.vjp(lambda p: base.sample_and_log_q(p, key, n)[0], params)
            lp, g = value_and_score(x, batch)
            phi = jax.lax.stop_gradient(k.direction(x, g, drive))
            return -jnp.mean(lp), pullback(-phi / n)[0]

        return loss_and_grad

    return dataclasses.replace(base, name="amortized_svgd", make_loss_and_grad=make_loss_and_grad,
                               options={"n_draws": n, "kernel": k.spec(), "bandwidth": bandwidth,
                                        "temperature": t, "init_scale": init_scale})


register_family("svgd", svgd)
register_family("asvgd", asvgd)
register_family("amortized_svgd", amortized_svgd)
