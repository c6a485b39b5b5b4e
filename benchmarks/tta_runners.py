"""The runners of ``benchmarks/time_to_answer.py``, each run in a fresh Python process.

``python benchmarks/tta_runners.py RUNNER DATA.npz OUT.json [--seed S] [--profile]`` imports what
the runner needs, loads the radon columns from ``DATA.npz``, starts the clock, fits, draws 4000
times (and diagnoses where the runner says so), stops the clock and writes to ``OUT.json`` the wall
time, the mean and sd of every scalar parameter (``alpha[1]``...), and what the method reports
(steps, verdict, k-hat, gradient evaluations). A runner whose method the library does not know
writes ``{"status": "not available"}``.

The variational runners run in the project's environment; the PyMC and pymc-extras runners in
an environment with PyMC (``/work/benchvenv``), and import neither JAX nor variational.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchinfo import unknown_method  # noqa: E402

N_DRAWS = 4000
LR = 1e-2          # the step size of the NumPyro SVI and PyMC runners (Adam), variational's default one

# runner -> (environment, label, diagnose counted in the wall)
RUNNERS: dict[str, tuple[str, str, bool]] = {
    "vi_default": ("vi", "`vi.fit(model, data)` + `fit.diagnose()`, compile cache cold", True),
    "vi_default_warm": ("vi", "`vi.fit(model, data)` + `fit.diagnose()`, compile cache warm", True),
    "vi_edit": ("vi", "`vi.fit` + diagnose after an edit (`mu_alpha` prior sd 100 -> 50), cache warm from the "
                "original model", True),
    "vi_10k": ("vi", "`vi.fit(model, data, steps=10_000)` (no diagnose)", False),
    "vi_auto": ("vi", '`vi.fit(..., steps=None, learning_rate="auto")` + diagnose', True),
    "vi_pathfinder": ("vi", '`vi.fit(model, data, method="pathfinder")`', False),
    "vi_dadvi": ("vi", '`vi.fit(model, data, method="dadvi")`', False),
    "vi_laplace": ("vi", '`vi.fit(model, data, method="laplace")`', False),
    "pymc_cold": ("pymc", "PyMC `pm.fit()` ADVI 10k, Adam 1e-2, PyTensor cache cold", False),
    "pymc_warm": ("pymc", "PyMC `pm.fit()` ADVI 10k, Adam 1e-2, PyTensor cache warm", False),
    "pymc_edit": ("pymc", "PyMC `pm.fit()` ADVI 10k after the same edit, PyTensor cache warm from the original",
                  False),
    "nutpie": ("pymc", "nutpie NUTS (exact), 2 chains x (1000 tune + 2000 draws), PyTensor cache warm", False),
    "pmx_pathfinder": ("pymc", "pymc-extras `fit_pathfinder`", False),
    "pmx_dadvi": ("pymc", "pymc-extras `fit_dadvi`", False),
    "pmx_laplace": ("pymc", "pymc-extras `fit_laplace`", False),
    "numpyro_svi": ("vi", "NumPyro `SVI.run` AutoNormal 10k, Adam 1e-2 (default progress bar: one call per step)",
                    False),
    "numpyro_svi_nobar": ("vi", "NumPyro `SVI.run(..., progress_bar=False)` AutoNormal 10k, Adam 1e-2", False),
    "numpyro_nuts": ("vi", "NumPyro NUTS, 1 chain, 1000 + 1000", False),
}


def flatten(draws: dict[str, Any], keep: set[str]) -> dict[str, np.ndarray]:
    """``{site: (n, *shape)}`` -> ``{"alpha[1]": (n,)}`` for the sites in ``keep``."""
    out = {}
    for k, v in draws.items():
        if k not in keep:
            continue
        a = np.asarray(v, dtype=float)
        if a.ndim == 1:
            out[k] = a
        else:
            a = a.reshape(a.shape[0], -1)
            for j in range(a.shape[1]):
                out[f"{k}[{j + 1}]"] = a[:, j]
    return out


SITES = {"mu_alpha", "sigma_alpha", "mu_beta", "sigma_beta", "alpha", "beta", "eps"}


def from_idata(idata: Any) -> dict[str, np.ndarray]:
    post = idata.posterior
    return {k: np.asarray(post[k].values).reshape(-1, *post[k].shape[2:]) for k in post.data_vars if k in SITES}


MU_ALPHA_SD = {False: 100.0, True: 50.0}   # the edit: another prior scale for mu_alpha


def radon_model_edited(county: Any, floor: Any, log_radon: Any = None, n_counties: int = 85) -> None:
    """``radon_model`` as a user edits it: ``mu_alpha``'s prior sd 100 -> 50 (a new program to compile)."""
    import variational as vi

    mu_a = vi.Normal("mu_alpha", 0.0, MU_ALPHA_SD[True])
    sigma_a = vi.Uniform("sigma_alpha", 0.0, 100.0)
    mu_b = vi.Normal("mu_beta", 0.0, 100.0)
    sigma_b = vi.Uniform("sigma_beta", 0.0, 100.0)
    a = vi.Normal("alpha", mu_a, sigma_a, shape=n_counties)
    b = vi.Normal("beta", mu_b, sigma_b, shape=n_counties)
    eps = vi.Uniform("eps", 0.0, 100.0)
    vi.Normal("log_radon", a[county] + b[county] * floor, eps, observed=log_radon)


# -- variational and NumPyro --------------------------------------------------------------------------
def _vi_fit(d: dict, seed: int, method: str | None = None, diagnose: bool = True, edited: bool = False,
            **kw: Any) -> Callable:
    import variational as vi
    from variational.data.datasets import radon_model

    if edited:
        radon_model = radon_model_edited  # noqa: F811 - the edited model

    def run(info: dict) -> dict:
        t0 = time.perf_counter()
        opts = dict(kw, **({"method": method} if method else {}))
        fit = vi.fit(radon_model, d["columns"], model_kwargs={"n_counties": d["n_counties"]}, seed=seed, **opts)
        info["t_fit"] = time.perf_counter() - t0
        draws = fit.sample(N_DRAWS, seed=seed + 1)
        info["t_draws"] = time.perf_counter() - t0 - info["t_fit"]
        t1 = time.perf_counter()
        dg = fit.diagnose()
        info["t_diagnose"] = time.perf_counter() - t1
        info["diagnose_in_wall"] = diagnose
        info.update(steps=int(fit.steps), verdict=dg.status, khat=float(dg.khat),
                    converged=getattr(fit, "converged", None), message=str(getattr(fit, "message", "") or ""))
        timings = getattr(fit, "timings", None)
        if isinstance(getattr(type(fit), "grad_evals", None), property):   # the library's own count
            info["grad_evals"] = int(fit.grad_evals)
        if isinstance(timings, dict):
            info["timings"] = {k: float(v) for k, v in timings.items() if isinstance(v, (int, float))}
            if timings.get("grad_evals") is not None and "grad_evals" not in info:
                info["grad_evals"] = int(timings["grad_evals"])
        if "grad_evals" not in info and fit.settings.get("method") in ("advi", "fullrank_advi"):
            info["grad_evals"] = int(fit.steps) * int(fit.settings.get("num_particles", 1))
        return draws
    return run


def _numpyro_svi(d: dict, seed: int, progress_bar: bool = True) -> Callable:
    import jax
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    from variational.data.datasets import radon_model

    def run(info: dict) -> dict:
        guide = AutoNormal(radon_model)
        svi = SVI(radon_model, guide, numpyro.optim.Adam(LR), Trace_ELBO())
        kw = dict(d["columns"], n_counties=d["n_counties"])
        # with its progress bar (the default) SVI.run calls the compiled step once per step from
        # Python; without it the 10k steps run in one compiled loop
        res = svi.run(jax.random.PRNGKey(seed), 10_000, progress_bar=progress_bar, **kw)
        info.update(steps=10_000, grad_evals=10_000)
        return guide.sample_posterior(jax.random.PRNGKey(seed + 1), res.params, sample_shape=(N_DRAWS,))
    return run


def _numpyro_nuts(d: dict, seed: int) -> Callable:
    import jax
    from numpyro.infer import MCMC, NUTS
    from variational.data.datasets import radon_model

    def run(info: dict) -> dict:
        mcmc = MCMC(NUTS(radon_model), num_warmup=1000, num_samples=1000, num_chains=1)
        mcmc.run(jax.random.PRNGKey(seed), **d["columns"], n_counties=d["n_counties"],
                 extra_fields=("num_steps", "diverging"))
        extra = mcmc.get_extra_fields()
        info.update(grad_evals=int(np.sum(extra["num_steps"])), divergences=int(np.sum(extra["diverging"])),
                    note="1000 draws; gradients of the 1000 draws only (warm-up not counted)")
        return mcmc.get_samples()
    return run


# -- PyMC and pymc-extras ------------------------------------------------------------------------------------
def _pymc_model(d: dict, edited: bool = False) -> Any:
    import pymc as pm

    c = d["columns"]
    county, floor = c["county"], c["floor"]
    with pm.Model() as m:
        mu_a = pm.Normal("mu_alpha", 0.0, MU_ALPHA_SD[edited])
        sigma_a = pm.Uniform("sigma_alpha", 0.0, 100.0)
        mu_b = pm.Normal("mu_beta", 0.0, 100.0)
        sigma_b = pm.Uniform("sigma_beta", 0.0, 100.0)
        a = pm.Normal("alpha", mu_a, sigma_a, shape=d["n_counties"])
        b = pm.Normal("beta", mu_b, sigma_b, shape=d["n_counties"])
        eps = pm.Uniform("eps", 0.0, 100.0)
        pm.Normal("log_radon", a[county] + b[county] * floor, eps, observed=c["log_radon"])
    return m


def _pymc_fit(d: dict, seed: int, edited: bool = False) -> Callable:
    import pymc as pm

    def run(info: dict) -> dict:
        with _pymc_model(d, edited):
            # Adam 1e-2, the step size of variational's default: PyMC's own default optimiser
            # (adagrad_window, 1e-3) is far from the answer after 10k steps here (max z ~300)
            approx = pm.fit(10_000, obj_optimizer=pm.adam(learning_rate=LR), random_seed=seed)
        idata = approx.sample(N_DRAWS, random_seed=seed + 1)
        info.update(steps=10_000, grad_evals=10_000)
        return from_idata(idata)
    return run


def _nutpie(d: dict, seed: int) -> Callable:
    import nutpie

    def run(info: dict) -> dict:
        compiled = nutpie.compile_pymc_model(_pymc_model(d))
        idata = nutpie.sample(compiled, chains=2, tune=1000, draws=2000, seed=seed, progress_bar=False)
        div = idata.sample_stats["diverging"].values
        info.update(divergences=int(np.sum(div)), note="exact; 2 x 2000 draws")
        return from_idata(idata)
    return run


def _pmx(d: dict, seed: int, which: str) -> Callable:
    import pymc_extras as pmx
    from pymc_extras.inference import fit_dadvi

    def run(info: dict) -> dict:
        m = _pymc_model(d)
        if which == "pathfinder":
            idata = pmx.fit_pathfinder(model=m, num_draws=N_DRAWS, random_seed=seed)
        elif which == "dadvi":
            idata = fit_dadvi(model=m, n_draws=N_DRAWS, random_seed=seed)
        else:
            idata = pmx.fit_laplace(model=m, draws=N_DRAWS, random_seed=seed)
        return from_idata(idata)
    return run


def make(name: str, d: dict, seed: int) -> Callable:
    if name in ("vi_default", "vi_default_warm"):
        return _vi_fit(d, seed)
    if name == "vi_edit":
        return _vi_fit(d, seed, edited=True)
    if name == "vi_10k":
        return _vi_fit(d, seed, steps=10_000, diagnose=False)
    if name == "vi_auto":
        return _vi_fit(d, seed, steps=None, learning_rate="auto")
    if name.startswith("vi_"):
        return _vi_fit(d, seed, method=name[3:], diagnose=False)
    if name in ("numpyro_svi", "numpyro_svi_nobar"):
        return _numpyro_svi(d, seed, progress_bar=name == "numpyro_svi")
    if name == "numpyro_nuts":
        return _numpyro_nuts(d, seed)
    if name in ("pymc_cold", "pymc_warm", "pymc_edit"):
        return _pymc_fit(d, seed, edited=name == "pymc_edit")
    if name == "nutpie":
        return _nutpie(d, seed)
    if name.startswith("pmx_"):
        return _pmx(d, seed, name[4:])
    raise KeyError(name)


def profile(d: dict, seed: int) -> dict[str, Any]:
    """Where the wall of ``vi.fit(model, data)`` + 4000 draws + ``diagnose()`` goes, in this process.

    Phases are timed on the host; JAX's own monitoring events give, per phase, the time spent
    tracing to jaxprs, lowering to MLIR and compiling with XLA, the number of compilations and the
    persistent-cache hits; cProfile names the library functions that took the time.
    """
    import cProfile
    import pstats
    from collections import defaultdict

    import jax.monitoring
    import variational as vi
    from variational.data.datasets import radon_model

    dur: dict[str, float] = defaultdict(float)
    cnt: dict[str, int] = defaultdict(int)

    def on_duration(event: str, secs: float, **kw: Any) -> None:
        dur[event] += secs
        cnt[event] += 1

    def on_event(event: str, **kw: Any) -> None:
        cnt[event] += 1

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    phases: dict[str, dict[str, float]] = {}
    prof = cProfile.Profile()
    state: dict[str, Any] = {}

    def phase(label: str, fn: Callable[[], Any]) -> None:
        before_d, before_c = dict(dur), dict(cnt)
        t0 = time.perf_counter()
        prof.enable()
        state[label] = fn()
        prof.disable()
        row = {"wall": time.perf_counter() - t0}
        for key, short in (("jaxpr_trace_duration", "trace"), ("jaxpr_to_mlir_module_duration", "lower"),
                           ("backend_compile_duration", "compile")):
            ev = f"/jax/core/compile/{key}"
            row[short] = dur.get(ev, 0.0) - before_d.get(ev, 0.0)
            if short == "compile":
                row["compilations"] = cnt.get(ev, 0) - before_c.get(ev, 0)
        ev = "/jax/compilation_cache/cache_hits"
        row["cache_hits"] = cnt.get(ev, 0) - before_c.get(ev, 0)
        phases[label] = row

    cols, kw = d["columns"], {"n_counties": d["n_counties"]}
    phase("LogDensity (trace + initial point)", lambda: vi.LogDensity(radon_model, cols, kw))
    phase("vi.fit(model, data)", lambda: vi.fit(radon_model, cols, model_kwargs=kw, seed=seed, progress=False))
    fit = state["vi.fit(model, data)"]
    phase("fit.sample(4000)", lambda: fit.sample(N_DRAWS, seed=seed + 1))
    phase("fit.diagnose()", lambda: fit.diagnose())
    phase("second vi.fit, same model and data", lambda: vi.fit(radon_model, cols, model_kwargs=kw, seed=seed,
                                                                progress=False))
    stats = pstats.Stats(prof)
    lib = []
    for (file, line, func), (_, _, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "variational" in file and "/benchmarks/" not in file:
            lib.append((cum, f"{Path(file).parent.name}/{Path(file).name}:{line} {func}"))
    lib.sort(reverse=True)
    return {"phases": phases, "steps": int(fit.steps), "top": [(round(c, 3), n) for c, n in lib[:25]]}


def main(argv: list[str]) -> None:
    name, data_path, out_path = argv[0], Path(argv[1]), Path(argv[2])
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
    z = np.load(data_path)
    d = {"columns": {"county": z["county"].astype(np.int32), "floor": z["floor"].astype(float),
                     "log_radon": z["log_radon"].astype(float)}, "n_counties": int(z["n_counties"])}
    if name == "profile":
        out_path.write_text(json.dumps(profile(d, seed), default=str))
        return
    info: dict[str, Any] = {"runner": name, "status": "ok"}
    try:
        run = make(name, d, seed)          # imports happen here, before the clock starts
        t0 = time.perf_counter()
        draws = run(info)
        wall = time.perf_counter() - t0
        if not info.get("diagnose_in_wall", True):
            wall -= info.get("t_diagnose", 0.0)
        info["wall"] = wall
        cols = flatten({k: np.asarray(v) for k, v in draws.items()}, SITES)
        info["mean"] = {k: float(np.mean(v)) for k, v in cols.items()}
        info["sd"] = {k: float(np.std(v, ddof=1)) for k, v in cols.items()}
    except Exception as e:  # noqa: BLE001 - reported, not raised: the benchmark goes on
        info["status"] = "not available" if unknown_method(e) else "error"
        info["message"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:400]
        info["traceback"] = traceback.format_exc(limit=4)
    out_path.write_text(json.dumps(info, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
