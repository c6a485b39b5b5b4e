"""Verdicts, budgets and messages a user can trust (issue 22)."""

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import variational as vi
from variational.families import _newton


def _logistic(x, y):
    b = vi.Normal("b", 0.0, 5.0, shape=(3,))
    vi.Bernoulli("y", logit_p=x @ b, observed=y)


@pytest.fixture(scope="module")
def logistic_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (rng.random(200) < 1 / (1 + np.exp(-x @ np.array([1.5, -2.0, 0.5])))).astype(np.float32)
    return {"x": x, "y": y}


# -- 1. no deadlock: linear algebra is mapped over draws one at a time ---------------------------

def test_linear_algebra_is_found_inside_nested_programs():
    inner = lambda a: jnp.linalg.solve(a, jnp.ones(2)).sum()  # noqa: E731
    nested = lambda a: jnp.sum(jax_map(inner, jnp.stack([a, a])))  # noqa: E731
    assert _newton.uses_linear_algebra(nested, jnp.eye(2))
    assert not _newton.uses_linear_algebra(lambda a: jnp.sum(jnp.exp(a)), jnp.eye(2))


def jax_map(f, xs):
    import jax

    return jax.lax.map(f, xs)


_GP = textwrap.dedent("""
    import sys
    import numpy as np, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    import variational as vi
    g = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0)), -1).reshape(-1, 2)
    d = np.sqrt(((g[:, None] - g[None]) ** 2).sum(-1)).astype(np.float32)
    def model(counts):          # a log-Gaussian Cox process: Matern-3/2 prior on a 10 x 10 grid
        ls = numpyro.sample("ls", dist.LogNormal(1.0, 0.3))
        amp = numpyro.sample("amp", dist.HalfNormal(1.0))
        r = d / ls
        k = amp ** 2 * (1 + 3 ** 0.5 * r) * jnp.exp(-3 ** 0.5 * r) + 1e-5 * jnp.eye(100)
        f = numpyro.sample("f", dist.MultivariateNormal(jnp.zeros(100), covariance_matrix=k))
        numpyro.sample("counts", dist.Poisson(jnp.exp(1.0 + f)), obs=counts)
    counts = np.random.default_rng(1).poisson(np.exp(1.0 + 0.5 * np.sin(g[:, 0] / 3)))
    kw = {"steps": 300, "learning_rate": 0.02} if sys.argv[1] == "advi" else {}
    fit = vi.fit(model, {"counts": counts}, method=sys.argv[1], progress=False, **kw)
    print(fit.diagnose().status)
""")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["advi", "dadvi"])
def test_gaussian_process_fit_and_diagnosis_return(method, tmp_path):
    """A Hessian or DADVI objective batched over draws of a model with a Cholesky factor
    deadlocked jaxlib's CPU runtime on two cores; with the default threads, it must return."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    script = tmp_path / "gp.py"
    script.write_text(_GP)
    out = subprocess.run([sys.executable, str(script), method], env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] in ("good", "ok", "bad")


# -- 2. budgets ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["laplace", "dadvi"])
def test_newton_methods_stop_at_their_iteration_budget(method, logistic_data):
    fit = vi.fit(_logistic, logistic_data, method=method, maxiter=1, progress=False)
    assert not fit.converged
    assert "iteration budget (maxiter=1)" in fit.message
    assert fit.solution.iterations == 1


@pytest.mark.parametrize("method", ["laplace", "dadvi"])
def test_newton_methods_stop_at_their_time_budget(method, logistic_data):
    fit = vi.fit(_logistic, logistic_data, method=method, max_time=1e-9, progress=False)
    assert not fit.converged
    assert "time budget (max_time=1e-09 s)" in fit.message
    assert fit.solution.iterations == 0


def test_pathfinder_reports_its_budgets(logistic_data):
    fit = vi.fit(_logistic, logistic_data, method="pathfinder", maxiter=2, num_paths=2, progress=False)
    assert not fit.converged
    assert fit.message.count("iteration budget (maxiter=2)") == 2
    timed = vi.fit(_logistic, logistic_data, method="pathfinder", max_time=1e-9, num_paths=3, progress=False)
    assert not timed.converged
    assert "time budget (max_time=1e-09 s)" in timed.message
    assert "2 path(s) not started" in timed.message
    done = vi.fit(_logistic, logistic_data, method="pathfinder", num_paths=2, progress=False)
    assert done.converged and "budget" not in done.message
