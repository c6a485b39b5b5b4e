"""The variational API quickstart: ADVI, SVGD, convergence callbacks, Tracker, functions of draws, Iris, minibatches.

1. A two-component NormalMixture (w = 0.2/0.8, mu = -0.3/0.5, sd = 0.1): NUTS, mean-field ADVI
   (one Gaussian: it settles in one mode) and SVGD (1000 particles, sgd 0.01, 300 steps: it
   finds both modes), overlaid on the exact density.
2. ``CheckParametersConvergence`` with relative and absolute differences stops ADVI early.
3. ``Tracker`` records q's mean and sd over a 20,000-step fit, then ``refine`` continues it.
4. Functions of draws: x^2 and sin(x) as ``vi.Deterministic`` sites, their mean and variance
   (for ADVI's Gaussian they are known in closed form).
5. Iris multinomial logistic regression with SVGD: ``examples/iris_svgd.py``.
6. The 40,000 x 100 Normal model: a full-batch fit stopped after 100 steps by a callback, and
   a minibatch fit (500 rows per step) that recovers every column's mean and sd.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from scipy import stats  # noqa: E402

import variational as vi  # noqa: E402
from _common import Report, budget, nuts, parse_args, plt  # noqa: E402

W = np.array([0.2, 0.8])
MU = np.array([-0.3, 0.5])
SD = np.array([0.1, 0.1])


def mixture_model():
    x = vi.NormalMixture("x", w=W, mu=MU, sigma=SD)
    vi.Deterministic("x2", x ** 2)
    vi.Deterministic("sin_x", jnp.sin(x))


def mixture_density(x: np.ndarray) -> np.ndarray:
    return sum(w * stats.norm.pdf(x, m, s) for w, m, s in zip(W, MU, SD))


def exact_moments(fn) -> tuple[float, float]:
    """Mean and variance of fn(x) under the mixture, by quadrature."""
    g = np.linspace(-1.5, 1.7, 20001)
    p = mixture_density(g)
    p = p / p.sum()
    m = float((fn(g) * p).sum())
    return m, float(((fn(g) - m) ** 2 * p).sum())


def normal_model(data):
    mu = vi.Flat("mu", shape=(data.shape[1],))
    sd = vi.HalfNormal("sd", 1.0, shape=(data.shape[1],))
    vi.Normal("lik", mu, sd, observed=data)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args("quickstart", __doc__, argv)
    q = a.quick
    rep = Report("quickstart", "The variational API quickstart", a.out, q)
    kw = dict(progress=False, seed=0)

    # ---- 1. NormalMixture: NUTS, ADVI, SVGD ------------------------------------------------
    ref = nuts(mixture_model, seed=0, warmup=300 if q else 1000, samples=500 if q else 12_500, chains=4)["x"]
    advi = vi.fit(mixture_model, method="advi", steps=budget(10_000), learning_rate=1e-2, **kw)
    svgd = vi.fit(mixture_model, method="svgd", n_particles=1000, optimizer="sgd", learning_rate=0.01,
                  steps=budget(300), **kw)
    xa = advi.sample(4000, seed=1)["x"]
    xs = svgd.sample(4000, seed=1)["x"]
    rep.say("## 1. NormalMixture: w = 0.2/0.8, mu = -0.3/0.5, sd = 0.1\n")
    rows = []
    for label, x in (("NUTS (4 chains)", ref), ("ADVI", xa), ("SVGD", xs)):
        rows.append((label, float(x.mean()), float(x.std()), float(np.mean(x < 0.1))))
    m_exact, v_exact = exact_moments(lambda x: x)
    rows.append(("exact", m_exact, float(np.sqrt(v_exact)), 0.2))
    rep.table(["method", "mean", "sd", "mass of the left mode"], rows)
    left = float(np.mean(xs < 0.1))
    near = min(float(np.mean(np.abs(xs - m) < 3 * s)) for m, s in zip(MU, SD))
    rep.check("SVGD finds both modes: each mode (mean +- 3 sd) holds at least 10% of the particles", near, near >= 0.1)
    rep.say(f"SVGD puts {left:.0%} of its particles in the left mode (exact: 20%): SVGD finds both modes, "
            f"but moves mass between them slowly, so their weights follow the particles' start.\n")
    in_mode = min(abs(float(xa.mean()) - MU[1]), abs(float(xa.mean()) - MU[0]))
    rep.check("ADVI (one Gaussian) settles in one mode: distance of its mean to a mode < 0.05", in_mode, in_mode < 0.05)
    rep.check("ADVI's sd is that of one mode (within 20% of 0.1)", float(xa.std()), abs(float(xa.std()) / 0.1 - 1) < 0.2)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    g = np.linspace(-0.8, 1.0, 400)
    ax.plot(g, mixture_density(g), "k", lw=1, label="exact")
    for label, x in (("NUTS", ref), ("ADVI", xa), ("SVGD", xs)):
        ax.hist(x, bins=120, range=(-0.8, 1.0), density=True, histtype="step", label=label)
    ax.set(xlabel="x", ylabel="density")
    ax.legend()
    rep.savefig(fig, "mixture_nuts_advi_svgd.png")

    # ---- 2. CheckParametersConvergence ------------------------------------------------------
    rep.say("## 2. Convergence callbacks\n")
    stops = {}
    for diff in ("relative", "absolute"):
        # the last iterate of a constant-step fit moves by about 1% per 100 steps: 1e-3 would never stop it
        cb = vi.callbacks.CheckParametersConvergence(diff=diff, every=100, tolerance=1e-2)
        f = vi.fit(mixture_model, method="advi", steps=budget(50_000), callbacks=[cb], learning_rate=1e-2, **kw)
        stops[diff] = f
        rep.say(f"- diff={diff!r}: stopped after {f.steps} of at most 50,000 steps ({f.message})")
        rep.check(f"CheckParametersConvergence(diff={diff!r}) stops the fit before 50,000 steps", f.steps, f.steps < 50_000)
    rep.say()
    fig, axs = plt.subplots(1, 2, figsize=(10, 3))
    for ax, (diff, f) in zip(axs, stops.items()):
        ax.plot(f.hist, lw=0.5)
        ax.set(title=f"diff={diff!r}: {f.steps} steps", xlabel="step", ylabel="loss")
    rep.savefig(fig, "convergence_callbacks.png")

    # ---- 3. Tracker + refine ---------------------------------------------------------------
    tracker = vi.callbacks.Tracker(every=100, mean=lambda fit: float(fit.unconstrained_mean["x"]),
                                   std=lambda fit: float(fit.unconstrained_std["x"]))
    steps3, more = map(budget, (5000, 2000) if q else (20_000, 100_000))
    tf = vi.fit(mixture_model, method="advi", steps=steps3, callbacks=[tracker], learning_rate=1e-2, **kw)
    n_first = len(tracker["mean"])
    tf.refine(more, callbacks=[tracker])
    rep.say(f"## 3. Tracker over a {steps3:,}-step fit, then refine({more:,})\n\n{len(tracker['mean'])} records "
            f"({n_first} during the fit); last mean {tracker['mean'][-1]:.4f}, last sd {tracker['std'][-1]:.4f}\n")
    rep.check("Tracker recorded every 100 steps through fit and refine", len(tracker["mean"]),
              len(tracker["mean"]) == (steps3 + more) // 100)
    rep.check("tracked mean and sd end where the fit ends", abs(tracker["mean"][-1] - float(tf.unconstrained_mean["x"])),
              abs(tracker["mean"][-1] - float(tf.unconstrained_mean["x"])) < 1e-6)
    fig, axs = plt.subplots(1, 3, figsize=(12, 3))
    for ax, (label, y) in zip(axs, (("mean track", tracker["mean"]), ("std track", tracker["std"]))):
        ax.plot(tracker.steps, y)
        ax.set(title=label, xlabel="step")
    axs[2].plot(tf.hist, lw=0.3)
    axs[2].set(title="negative ELBO", xlabel="step", ylim=(np.percentile(tf.hist, 1) - 1, np.percentile(tf.hist, 99)))
    rep.savefig(fig, "tracker.png")

    # ---- 4. functions of draws -------------------------------------------------------------
    # q is Gaussian for ADVI, N(m, s^2) on x, so the moments of x^2 and sin x are known in
    # closed form; the draws of the Deterministic sites must reproduce them
    m, s2 = float(advi.unconstrained_mean["x"]), float(advi.unconstrained_std["x"]) ** 2
    e_sin = np.sin(m) * np.exp(-s2 / 2)
    closed = {"x2": (m * m + s2, 4 * m * m * s2 + 2 * s2 * s2),
              "sin_x": (e_sin, (1 - np.cos(2 * m) * np.exp(-2 * s2)) / 2 - e_sin ** 2)}
    d = advi.sample(4000, seed=2)
    ds = svgd.sample(4000, seed=2)
    rows = []
    for name in ("x2", "sin_x"):
        em, ev = closed[name]
        dm, dv = float(d[name].mean()), float(d[name].var())
        rows.append((name, dm, dv, em, ev, float(ds[name].mean()), float(ds[name].var())))
        se = np.sqrt(ev / len(d[name]))
        rep.check(f"ADVI draws of {name}: mean within 4 standard errors of the closed form", abs(dm - em) / se,
                  abs(dm - em) < 4 * se)
        rep.check(f"ADVI draws of {name}: variance within 10% of the closed form", abs(dv / ev - 1), abs(dv / ev - 1) < 0.1)
    rep.say("## 4. Functions of draws (Deterministic sites x2 and sin_x)\n")
    rep.table(["function", "ADVI mean", "ADVI variance", "closed-form mean", "closed-form variance",
               "SVGD mean", "SVGD variance"], rows, fmt="{:.4f}")

    # ---- 5. Iris: examples/iris_svgd.py ----------------------------------------------------
    rep.say("## 5. Iris multinomial logistic regression with SVGD\n\nThis part of the notebook is "
            "`examples/iris_svgd.py` (500 particles, adamax 0.1, train and test accuracy tracked by a "
            "callback, test accuracy >= 0.9 checked): `variational examples iris_svgd`.\n")

    # ---- 6. the 40,000 x 100 Normal model --------------------------------------------------
    rng = np.random.default_rng(42)
    data = rng.random((40_000, 100)) * rng.integers(1, 10, size=100) + rng.random(100) * 10
    data = data.astype(np.float32)

    def stop_after_100(fit, losses, i):
        if i == 100:
            raise StopIteration("stopping after 100 steps")

    full = vi.fit(normal_model, {"data": data}, steps=budget(10_000), callbacks=[stop_after_100], learning_rate=1e-2, **kw)
    rep.say(f"## 6. The 40,000 x 100 Normal model\n\nfull batch with a stopping callback: {full.steps} steps "
            f"({full.message})\n")
    rep.check("the callback stops the full-batch fit after 100 steps", full.steps, full.steps == 100)
    # the column means lie 5 to 15 from the start: adam from 0.1, decayed to 1e-3, gets there in 5000 steps
    steps6 = 5000 if q else 10_000
    opt = optax.adam(optax.cosine_decay_schedule(0.1, steps6, alpha=0.01))
    mb = vi.fit(normal_model, {"data": data}, batch_size=500, steps=budget(steps6), optimizer=opt, **kw)
    col_mean, col_sd = data.mean(0), data.std(0)
    err_mu = float(np.max(np.abs(mb.mean["mu"] - col_mean) / col_sd))
    err_sd = float(np.max(np.abs(mb.mean["sd"] / col_sd - 1)))
    rep.say(f"minibatch 500: {mb.steps} steps ({mb.epochs:.1f} epochs); largest error of mu "
            f"{err_mu:.3f} column sds, of sd {err_sd:.1%}\n")
    rep.check("minibatch fit: every column's mean within 0.05 column sds", err_mu, err_mu < 0.05)
    rep.check("minibatch fit: every column's sd within 5%", err_sd, err_sd < 0.05)
    fig, axs = plt.subplots(1, 2, figsize=(11, 3))
    axs[0].plot(mb.hist, lw=0.3)
    axs[0].set(xlabel="step", ylabel="loss", title="minibatch 500", yscale="symlog")
    axs[1].scatter(col_mean, mb.mean["mu"], s=8, label="mu")
    axs[1].scatter(col_sd, mb.mean["sd"], s=8, label="sd")
    axs[1].plot([0, 20], [0, 20], "k", lw=0.5)
    axs[1].set(xlabel="column statistic of the data", ylabel="posterior mean")
    axs[1].legend()
    rep.savefig(fig, "normal_minibatch.png")
    return rep.finish()


if __name__ == "__main__":
    main()
