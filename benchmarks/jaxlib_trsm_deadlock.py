"""The shortest reproduction of the jaxlib CPU deadlock that ``families._newton.over_draws`` avoids.

A Hessian batched over draws (``vmap(hessian(f))``) of the log density of a
``MultivariateNormal(covariance_matrix=K(z))`` never returns on a 2-core machine (jax and
jaxlib 0.10.2): both XLA intra-op threads wait in jaxlib's batched triangular solve
(``lapack_strsm_ffi`` -> ``ParallelBatchMap`` -> ``BlockingCounter::Wait``). The same Hessian
mapped over the draws one at a time (``lax.map``) returns. For the upstream report.

    python benchmarks/jaxlib_trsm_deadlock.py vmap   # hangs (stopped after 120 s)
    python benchmarks/jaxlib_trsm_deadlock.py map    # returns
"""

import faulthandler
import sys

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

faulthandler.dump_traceback_later(120, exit=True)
grid = jnp.stack(jnp.meshgrid(jnp.arange(10.0), jnp.arange(10.0)), -1).reshape(-1, 2)
d2 = jnp.sum((grid[:, None] - grid[None]) ** 2, -1)


def f(z):
    k = jnp.exp(z[0]) * jnp.exp(-0.5 * d2 / 9.0) + 1e-4 * jnp.eye(100)
    return dist.MultivariateNormal(jnp.zeros(100), covariance_matrix=k).log_prob(z[1:])


zs = jnp.full((8, 101), 0.1)
batched = jax.vmap if sys.argv[1:] == ["vmap"] else (lambda h: lambda x: jax.lax.map(h, x))
print(jax.__version__, jax.jit(lambda x: jnp.mean(batched(jax.hessian(f))(x), 0))(zs).shape)
