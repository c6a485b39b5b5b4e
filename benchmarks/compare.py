"""variational against NumPyro SVI and PyMC ``pm.fit`` on the seed notebooks' workloads.

For each workload the three libraries fit the same model with the same variational family
(mean-field Gaussian), the same number of steps and the same optimiser, in one process, runs
interleaved; reported are the medians over ``--repeats`` runs of

* wall time of one fit (model set-up and compilation included),
* steady-state steps/s (compilation excluded: for variational ``fit.refine(steps)`` after the fit,
  on the already compiled loop, host loop included; for NumPyro its
  ``svi.update`` in a compiled ``fori_loop``, as ``SVI.run`` runs it, timed after compilation;
  for PyMC the time between step ``n/10`` and the last step, taken by a callback),
* accuracy against a long NUTS run (NumPyro's NUTS on the same model): the largest
  ``|mean - NUTS mean| / NUTS sd`` over the compared parameters and the range of the ratio
  ``sd / NUTS sd``.

Workloads: ``radon`` (seed 1: minibatch 100 of the 919 homes, adam 1e-2), ``mixture`` (seed 2:
the 1-D NormalMixture, adam 1e-2), ``iris`` (seed 2: multinomial logistic regression, adam
1e-2), ``normal`` (seed 3: Normal with unknown mean and sd, adam 1e-2), ``gmm`` (seed 4: 2-D
Gaussian mixture with Dirichlet weights, adagrad 0.1).

PyMC is optional (the ``bench`` extra): without it its rows are left out. pymc-extras'
``fit_advi`` (a mean-field ADVI compiled by PyTensor, pymc-extras >= 0.15) gets rows of its own
when it is installed; it pins its own PyMC (pymc-extras 0.15 wants PyMC < 6.4), so it may live
in a second environment: every run also measures variational, so each row's ratio comes from
one process. Every row names the version it was measured with. Run:

    python benchmarks/compare.py [--repeats 3] [--workloads radon,mixture,iris,normal,gmm]
                                 [--peers numpyro,pymc,pymc-extras] [--md out.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

import variational as vi  # noqa: E402
from variational.data.datasets import find_shared_data, load_radon, make_radon, radon_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

try:
    import pymc as pm  # noqa: E402
except ImportError:  # the optional `bench` extra
    pm = None
try:
    from pymc_extras.inference.advi import fit_advi as pmx_fit_advi  # noqa: E402
    import pymc_extras  # noqa: E402
except ImportError:  # pymc-extras pins its own PyMC, so it may live in a venv of its own
    pmx_fit_advi = pymc_extras = None


@dataclass
class Run:
    wall: float
    sps: float
    draws: dict[str, np.ndarray]


@dataclass
class Workload:
    name: str
    seed_note: str
    steps: int
    optimizer: str
    lr: float
    params: list[str]
    vi: Callable[[], Run]
    numpyro: Callable[[], Run]
    pymc: Callable[[], Run] | None
    reference: Callable[[], dict[str, np.ndarray]] | None
    # workloads without an identifiable posterior to compare with report a score of the draws
    score: Callable[[dict[str, np.ndarray]], float] | None = None
    score_name: str = ""


# ------------------------------------------------------------------------------------------
# runners
# ------------------------------------------------------------------------------------------

def run_vi(model: Callable, data: dict | None, steps: int, optimizer: str, lr: float, **kw: Any) -> Run:
    t0 = time.perf_counter()
    fit = vi.fit(model, data, steps=steps, optimizer=optimizer, learning_rate=lr, progress=False, **kw)
    draws = fit.sample(4000, seed=1)
    wall = time.perf_counter() - t0
    # steady state: the same number of steps again on the compiled loop (refine does not recompile)
    t0 = time.perf_counter()
    fit.refine(steps)
    return Run(wall, steps / (time.perf_counter() - t0), draws)


def run_numpyro(model: Callable, steps: int, optimizer: str, lr: float, **kwargs: Any) -> Run:
    from numpyro.infer import SVI, Predictive, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    opt = {"adam": numpyro.optim.Adam, "adagrad": numpyro.optim.Adagrad}[optimizer](lr)
    guide = AutoNormal(model)
    svi = SVI(model, guide, opt, Trace_ELBO())

    t0 = time.perf_counter()
    res = svi.run(jax.random.PRNGKey(0), steps, progress_bar=False, **kwargs)
    jax.block_until_ready(res.losses)
    wall_fit = time.perf_counter() - t0

    # steady state: SVI.run's own loop body (svi.update in a fori_loop), compiled once with a
    # runtime trip count, then timed on its own
    @jax.jit
    def loop(state: Any, n: jax.Array) -> Any:
        return jax.lax.fori_loop(0, n, lambda i, s: svi.update(s, **kwargs)[0], state)

    state = svi.init(jax.random.PRNGKey(0), **kwargs)
    jax.block_until_ready(loop(state, 10))
    t0 = time.perf_counter()
    jax.block_until_ready(loop(state, steps))
    sps = steps / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    draws = Predictive(guide, params=res.params, num_samples=4000)(jax.random.PRNGKey(1), **kwargs)
    draws = {k: np.asarray(v) for k, v in draws.items()}
    return Run(wall_fit + time.perf_counter() - t0, sps, draws)


def run_pymc(build: Callable[[], Any], steps: int, optimizer: str, lr: float) -> Run:
    marks: dict[str, float] = {}
    first = max(1, steps // 10)

    def clock(approx: Any, losses: Any, i: int) -> None:
        now = time.perf_counter()
        if i == first:
            marks["t_first"] = now
        marks["t_last"], marks["i_last"] = now, i

    t0 = time.perf_counter()
    model = build()
    opt = {"adam": pm.adam, "adagrad": pm.adagrad}[optimizer](learning_rate=lr)
    with model:
        approx = pm.fit(steps, method="advi", obj_optimizer=opt, callbacks=[clock], progressbar=False,
                        random_seed=0)
    idata = approx.sample(4000, random_seed=1)
    wall = time.perf_counter() - t0
    draws = {k: np.asarray(idata.posterior[k].values[0]) for k in idata.posterior.data_vars}
    sps = (marks["i_last"] - first) / (marks["t_last"] - marks["t_first"])
    return Run(wall, sps, draws)


def run_pymc_extras(build: Callable[[], Any], steps: int, optimizer: str, lr: float) -> Run:
    """pymc-extras' ``fit_advi``: wall time of one fit; steps/s from a fit of ``steps / 10`` more.

    ``fit_advi`` has no per-step callback, so the steady state is the difference of two whole
    fits (set-up and compilation cancel): ``0.9 steps / (wall(steps) - wall(steps / 10))``.
    Its default sticking-the-landing gradient is turned off, as for the other libraries; its
    optimisers are its own (adam, rmsprop, sgd: no adagrad, so no row for ``gmm``).
    """
    from pymc_extras.inference.advi import adam

    if optimizer != "adam":
        raise ValueError(f"pymc-extras' optimisers have no {optimizer}")
    opt = adam(lr)

    def once(n: int) -> tuple[float, Any]:
        t0 = time.perf_counter()
        with build():
            data = pmx_fit_advi(n_steps=n, draws=4000, optimizer=opt, path_derivative_gradient=False,
                                random_seed=0)
        return time.perf_counter() - t0, data

    short, _ = once(max(1, steps // 10))
    wall, data = once(steps)
    post = data["posterior"]
    draws = {str(k): np.asarray(post[k].values).reshape((-1,) + post[k].shape[2:]) for k in post.data_vars}
    return Run(wall, (steps - max(1, steps // 10)) / max(wall - short, 1e-9), draws)


def run_nuts(model: Callable, samples: int = 5000, **kwargs: Any) -> dict[str, np.ndarray]:
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(model), num_warmup=1000, num_samples=samples, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(7), **kwargs)
    return {k: np.asarray(v) for k, v in mcmc.get_samples().items()}


# ------------------------------------------------------------------------------------------
# workloads
# ------------------------------------------------------------------------------------------

def radon_workload(steps: int) -> Workload:
    path = find_shared_data("radon.csv")
    d = load_radon(path) if path else make_radon()
    k, n = d.n_counties, len(d)
    cols = d.columns

    def np_model(county, floor, log_radon=None):
        mu_a = numpyro.sample("mu_alpha", dist.Normal(0.0, 100.0))
        sigma_a = numpyro.sample("sigma_alpha", dist.Uniform(0.0, 100.0))
        mu_b = numpyro.sample("mu_beta", dist.Normal(0.0, 100.0))
        sigma_b = numpyro.sample("sigma_beta", dist.Uniform(0.0, 100.0))
        a = numpyro.sample("alpha", dist.Normal(mu_a, sigma_a).expand([k]).to_event(1))
        b = numpyro.sample("beta", dist.Normal(mu_b, sigma_b).expand([k]).to_event(1))
        eps = numpyro.sample("eps", dist.Uniform(0.0, 100.0))
        with numpyro.plate("rows", n, subsample_size=100) as idx:
            c = county[idx]
            numpyro.sample("log_radon", dist.Normal(a[c] + b[c] * floor[idx], eps), obs=log_radon[idx])

    def pymc_build():
        county, floor, y = pm.Minibatch(cols["county"], cols["floor"], cols["log_radon"], batch_size=100)
        with pm.Model() as m:
            mu_a = pm.Normal("mu_alpha", 0.0, 100.0)
            sigma_a = pm.Uniform("sigma_alpha", 0.0, 100.0)
            mu_b = pm.Normal("mu_beta", 0.0, 100.0)
            sigma_b = pm.Uniform("sigma_beta", 0.0, 100.0)
            a = pm.Normal("alpha", mu_a, sigma_a, shape=k)
            b = pm.Normal("beta", mu_b, sigma_b, shape=k)
            eps = pm.Uniform("eps", 0.0, 100.0)
            pm.Normal("log_radon", a[county] + b[county] * floor, eps, observed=y, total_size=n)
        return m

    jcols = {c: jnp.asarray(v) for c, v in cols.items()}
    return Workload(
        "radon", "seed 1: hierarchical radon regression, minibatch 100", steps, "adam", 1e-2,
        ["mu_alpha", "sigma_alpha", "mu_beta", "sigma_beta", "eps"],
        vi=lambda: run_vi(radon_model, cols, steps, "adam", 1e-2, model_kwargs={"n_counties": k}, batch_size=100),
        numpyro=lambda: run_numpyro(np_model, steps, "adam", 1e-2, **jcols),
        pymc=pymc_build if pm else None,
        reference=lambda: run_nuts(radon_model, n_counties=k, **cols))


def mixture_workload(steps: int) -> Workload:
    from quickstart import MU, SD, W, mixture_model

    def np_model():
        numpyro.sample("x", dist.MixtureSameFamily(dist.Categorical(jnp.asarray(W)), dist.Normal(jnp.asarray(MU), jnp.asarray(SD))))

    def pymc_build():
        with pm.Model() as m:
            pm.NormalMixture("x", w=W, mu=MU, sigma=SD)
        return m

    def exact() -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        comp = rng.random(200_000) < W[0]
        return {"x": np.where(comp, rng.normal(MU[0], SD[0], comp.size), rng.normal(MU[1], SD[1], comp.size))}

    return Workload("mixture", "seed 2: 1-D NormalMixture (reference: exact draws)", steps, "adam", 1e-2, ["x"],
                    vi=lambda: run_vi(mixture_model, None, steps, "adam", 1e-2),
                    numpyro=lambda: run_numpyro(np_model, steps, "adam", 1e-2),
                    pymc=pymc_build if pm else None, reference=exact)


def iris_model(X, y=None, n_classes=3):
    """The seed's multinomial logistic regression: beta ~ N(0, 100), flat intercepts."""
    beta = vi.Normal("beta", 0.0, 100.0, shape=(X.shape[1], n_classes))
    a = vi.Flat("a", shape=(n_classes,))
    vi.Categorical("obs", logit_p=X @ beta + a, observed=y)


def iris_workload(steps: int) -> Workload | None:
    import pandas as pd

    path = find_shared_data("iris.csv")
    if path is None:
        return None
    df = pd.read_csv(path)
    X = df[["sepal_length", "sepal_width", "petal_length", "petal_width"]].to_numpy(np.float32)
    y = pd.Categorical(df["species"]).codes.astype(np.int32)

    def np_model(X, y=None):
        beta = numpyro.sample("beta", dist.Normal(0.0, 100.0).expand([4, 3]).to_event(2))
        a = numpyro.sample("a", dist.ImproperUniform(dist.constraints.real, (), (3,)))
        with numpyro.plate("rows", X.shape[0]):
            numpyro.sample("obs", dist.Categorical(logits=X @ beta + a), obs=y)

    def pymc_build():
        with pm.Model() as m:
            beta = pm.Normal("beta", 0.0, 100.0, shape=(4, 3))
            a = pm.Flat("a", shape=(3,))
            pm.Categorical("obs", logit_p=pm.math.dot(X, beta) + a, observed=y)
        return m

    def train_accuracy(draws: dict) -> float:
        logits = np.einsum("nf,sfk->snk", X, draws["beta"]) + draws["a"][:, None, :]
        return float(np.mean(np.argmax(jax.nn.softmax(logits, -1).mean(0), -1) == y))

    # the posterior is improper along a (softmax is invariant to a common shift of a) and the
    # classes are separable, so there is no NUTS reference: the score is the training accuracy
    return Workload("iris", "seed 2: Iris multinomial logistic regression", steps, "adam", 1e-2, ["beta", "a"],
                    vi=lambda: run_vi(iris_model, {"X": X, "y": y}, steps, "adam", 1e-2),
                    numpyro=lambda: run_numpyro(np_model, steps, "adam", 1e-2, X=jnp.asarray(X), y=jnp.asarray(y)),
                    pymc=pymc_build if pm else None, reference=None, score=train_accuracy,
                    score_name="training accuracy")


def normal_workload(steps: int) -> Workload:
    from advi_explained import normal_model

    y = np.random.default_rng(42).normal(size=100)

    def pymc_build():
        with pm.Model() as m:
            mu = pm.Normal("mu", 0.0, 1.0)
            sd = pm.HalfNormal("sd", 1.0)
            pm.Normal("n", mu, sd, observed=y)
        return m

    return Workload("normal", "seed 3: Normal with unknown mean and sd (100 points)", steps, "adam", 1e-2, ["mu", "sd"],
                    vi=lambda: run_vi(normal_model, {"y": y}, steps, "adam", 1e-2),
                    numpyro=lambda: run_numpyro(normal_model, steps, "adam", 1e-2, y=jnp.asarray(y)),
                    pymc=pymc_build if pm else None,
                    reference=lambda: run_nuts(normal_model, y=y))


def gmm_workload(steps: int) -> Workload:
    from gaussian_mixture import make_data, mixture_model

    data = make_data(100, np.random.RandomState(123))

    def pymc_build():
        with pm.Model() as m:
            mu_0 = pm.MvNormal("mu_0", mu=np.zeros(2), tau=np.eye(2))
            mu_1 = pm.MvNormal("mu_1", mu=np.zeros(2), tau=np.eye(2))
            pi = pm.Dirichlet("pi", a=0.1 * np.ones(2))
            lp = [pm.math.log(pi[i]) - 0.5 * ((data - mu) ** 2).sum(axis=1) - np.log(2 * np.pi)
                  for i, mu in enumerate((mu_0, mu_1))]
            pm.Potential("x", pm.math.logsumexp(pm.math.stack(lp), axis=0).sum())
        return m

    return Workload("gmm", "seed 4: 2-D Gaussian mixture, Dirichlet weights (100 points)", steps, "adagrad", 0.1,
                    ["mu_0", "mu_1", "pi"],
                    vi=lambda: run_vi(mixture_model, {"x": data}, steps, "adagrad", 0.1),
                    numpyro=lambda: run_numpyro(mixture_model, steps, "adagrad", 0.1, x=jnp.asarray(data)),
                    pymc=pymc_build if pm else None,
                    reference=lambda: run_nuts(mixture_model, x=data))


# ------------------------------------------------------------------------------------------
# accuracy and report
# ------------------------------------------------------------------------------------------

def _align_labels(draws: dict, ref: dict) -> dict:
    """Mixture components may come out in the other order: take the order closer to NUTS."""
    if "mu_0" not in draws:
        return draws
    from gaussian_mixture import align

    return align(draws, ref)


def accuracy(draws: dict, ref: dict, params: list[str]) -> tuple[float, float, float]:
    draws = _align_labels(draws, ref)
    zs, ratios = [], []
    for k in params:
        a = np.asarray(draws[k]).reshape(len(draws[k]), -1)
        r = np.asarray(ref[k]).reshape(len(ref[k]), -1)
        zs.append(np.abs(a.mean(0) - r.mean(0)) / r.std(0))
        ratios.append(a.std(0) / r.std(0))
    z, s = np.concatenate(zs), np.concatenate(ratios)
    return float(z.max()), float(s.min()), float(s.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workloads", default="radon,mixture,iris,normal,gmm")
    ap.add_argument("--radon-steps", type=int, default=40_000)
    ap.add_argument("--steps", type=int, default=10_000, help="steps of the other workloads")
    ap.add_argument("--peers", default="numpyro,pymc,pymc-extras",
                    help="libraries to measure besides variational (those not installed are left out)")
    ap.add_argument("--md", help="also write the tables to this markdown file")
    a = ap.parse_args()
    peers = set(a.peers.split(","))
    builders = {"radon": lambda: radon_workload(a.radon_steps), "mixture": lambda: mixture_workload(a.steps),
                "iris": lambda: iris_workload(a.steps), "normal": lambda: normal_workload(a.steps),
                "gmm": lambda: gmm_workload(a.steps)}
    lines = [f"- variational {vi.__version__}, jax {jax.__version__}, numpyro {numpyro.__version__}, "
             f"pymc {pm.__version__ if pm else 'not installed'}, "
             f"pymc-extras {pymc_extras.__version__ if pymc_extras else 'not installed'}, "
             f"python {platform.python_version()}",
             f"- {platform.processor() or platform.machine()}, {os.cpu_count()} cores, backend {jax.default_backend()}, "
             f"load average at start {os.getloadavg()[0]:.1f}",
             f"- medians of {a.repeats} runs per library, runs interleaved; wall time includes model set-up, "
             f"compilation and 4000 draws", ""]
    print("\n".join(lines))
    out = lines + ["| workload | library | steps | optimiser | wall (s) | steps/s | max abs(dmean)/sd_NUTS | sd / sd_NUTS | variational's steps/s / this |",
                   "|---|---|---:|---|---:|---:|---:|---|---:|"]
    for name in a.workloads.split(","):
        w = builders[name]()
        if w is None:
            print(f"{name}: data not found, skipped")
            continue
        t0 = time.perf_counter()
        ref = w.reference() if w.reference else None
        print(f"\n{w.name}: reference draws in {time.perf_counter() - t0:.1f} s", flush=True)
        runners = {f"variational {vi.__version__}": w.vi}
        if "numpyro" in peers:
            runners[f"NumPyro SVI {numpyro.__version__}"] = w.numpyro
        if w.pymc is not None and "pymc" in peers:
            runners[f"PyMC {pm.__version__} pm.fit"] = lambda w=w: run_pymc(w.pymc, w.steps, w.optimizer, w.lr)
        if w.pymc is not None and pmx_fit_advi is not None and "pymc-extras" in peers:
            runners[f"pymc-extras {pymc_extras.__version__} fit_advi (PyMC {pm.__version__})"] = (
                lambda w=w: run_pymc_extras(w.pymc, w.steps, w.optimizer, w.lr))
        res: dict[str, list[Run]] = {k: [] for k in runners}
        for i in range(a.repeats):
            for label, fn in runners.items():
                try:
                    r = fn()
                except Exception as e:  # report it and carry on with the other libraries
                    print(f"  run {i + 1} {label}: failed: {type(e).__name__}: {e}", flush=True)
                    continue
                res[label].append(r)
                print(f"  run {i + 1} {label}: wall {r.wall:.2f} s, {r.sps:,.0f} steps/s", flush=True)
        res = {k: v for k, v in res.items() if v}
        ours = f"variational {vi.__version__}"
        if ours not in res:
            continue
        vi_sps = statistics.median(r.sps for r in res[ours])
        for label, runs in res.items():
            wall = statistics.median(r.wall for r in runs)
            sps = statistics.median(r.sps for r in runs)
            if ref is not None:
                accs = [accuracy(r.draws, ref, w.params) for r in runs]
                z = f"{statistics.median(x[0] for x in accs):.2f}"
                ratio = f"{statistics.median(x[1] for x in accs):.2f} - {statistics.median(x[2] for x in accs):.2f}"
            else:
                z, ratio = f"{w.score_name} {statistics.median(w.score(r.draws) for r in runs):.3f}", "-"
            row = (f"| {w.name} | {label} | {w.steps:,} | {w.optimizer} {w.lr:g} | {wall:.2f} | {sps:,.0f} | "
                   f"{z} | {ratio} | {vi_sps / sps:.2f}x |")
            out.append(row)
            print(row, flush=True)
    text = "\n".join(out)
    print("\n" + text)
    if a.md:
        Path(a.md).write_text(text + "\n")


if __name__ == "__main__":
    main()
