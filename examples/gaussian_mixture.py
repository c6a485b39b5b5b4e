"""Gaussian mixture with marginalised labels: MAP, then NUTS, against ADVI; then 100,000 points in minibatches of 200.

Two components in 2-D with MvNormal means and Dirichlet(0.1, 0.1) weights; the labels are
summed out (a mixture likelihood), so every latent is continuous. The MAP point (NumPyro's
``AutoDelta``) starts NUTS; ADVI (adagrad 0.1, 5000 steps as the seed) is compared with it.
The weights come back on the simplex: ``fit.mean["pi"]`` is already in the model's own space
(no stick-breaking to undo by hand). Then the same model on 100,000 points: minibatch ADVI
(batch 200, ``batch_size=200``) against NUTS on the full data, with the wall times of both.

The same mixture is then written with the labels as a latent variable marked
``infer={"enumerate": "parallel"}``: the library sums them out itself (no logsumexp by hand)
and gives each point's posterior label probabilities afterwards (``fit.discrete_probs()``).

Claims checked: ADVI's component means agree with NUTS's within 0.5 NUTS sds and its weights
within 0.05; the weights are on the simplex; the enumerated model reaches the hand-marginalised
model's ELBO (within 3 Monte Carlo standard errors) and its label probabilities agree with
those of the NUTS draws within 0.05; on 100,000 points (20,000 with --quick) minibatch ADVI
recovers the true means within 0.05 and weights within 0.02, and takes less wall time than NUTS.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

import variational as vi  # noqa: E402
from _common import Report, budget, nuts, parse_args, plt, sd_ratio, z_diff  # noqa: E402

MS = np.array([[-1.0, -1.5], [1.0, 1.0]])
PS = np.array([0.2, 0.8])


def make_data(n: int, rng: np.random.RandomState) -> np.ndarray:
    """The seed's generator: component labels from Multinomial(1, ps), unit-covariance normals."""
    zs = np.array([rng.multinomial(1, PS) for _ in range(n)]).T
    xs = [z[:, None] * rng.multivariate_normal(m, np.eye(2), size=n) for z, m in zip(zs, MS)]
    return np.sum(np.dstack(xs), axis=2)


def mixture_model(x, prior_tau=1.0):
    """Two 2-D unit-covariance components; labels marginalised by the mixture likelihood."""
    mu_0 = vi.MvNormal("mu_0", jnp.zeros(2), tau=prior_tau * jnp.eye(2))
    mu_1 = vi.MvNormal("mu_1", jnp.zeros(2), tau=prior_tau * jnp.eye(2))
    pi = vi.Dirichlet("pi", 0.1 * jnp.ones(2))
    comps = dist.MultivariateNormal(jnp.stack([mu_0, mu_1]), jnp.eye(2))
    vi.Site("x", dist.MixtureSameFamily(dist.Categorical(probs=pi), comps), observed=x)


def enumerated_model(x, prior_tau=1.0):
    """The same mixture with the labels as a latent variable, summed out by the library."""
    mu_0 = vi.MvNormal("mu_0", jnp.zeros(2), tau=prior_tau * jnp.eye(2))
    mu_1 = vi.MvNormal("mu_1", jnp.zeros(2), tau=prior_tau * jnp.eye(2))
    pi = vi.Dirichlet("pi", 0.1 * jnp.ones(2))
    means = jnp.stack([mu_0, mu_1])
    with numpyro.plate("points", x.shape[0]):
        z = numpyro.sample("z", dist.Categorical(probs=pi), infer={"enumerate": "parallel"})
        vi.Site("x", dist.MultivariateNormal(means[z], jnp.eye(2)), observed=x)


def responsibilities(draws: dict, x: np.ndarray) -> np.ndarray:
    """Posterior label probabilities (N, 2): the exact ones given each draw, averaged over draws."""
    logp = np.stack([np.log(draws["pi"][:, k, None]) - 0.5 * np.sum((x[None] - draws[f"mu_{k}"][:, None]) ** 2, -1)
                     for k in range(2)], -1)                                   # (S, N, 2)
    logp -= logp.max(-1, keepdims=True)
    p = np.exp(logp)
    return (p / p.sum(-1, keepdims=True)).mean(0)


def compare_enumerated(rep: Report, data: np.ndarray, hand: "vi.Fit", ref: dict) -> None:
    """Fit the mixture with enumerated labels; compare its ELBO and label probabilities."""
    fit = vi.fit(enumerated_model, {"x": data}, method="advi", steps=budget(5000), optimizer="adagrad",
                 learning_rate=0.1, seed=0, progress=False)
    e_enum, se_enum = fit.elbo(num_draws=2000, seed=5, return_se=True)
    e_hand, se_hand = hand.elbo(num_draws=2000, seed=5, return_se=True)
    rep.say("## The labels as an enumerated latent\n\n"
            "`numpyro.sample(\"z\", dist.Categorical(probs=pi), infer={\"enumerate\": \"parallel\"})` "
            "inside the points' plate: the library sums the labels out exactly, the same model as the "
            "hand-marginalised mixture above.\n")
    rep.table(["model", "full-data ELBO", "MC s.e."], [("labels summed out by hand", e_hand, se_hand),
                                                       ("labels enumerated", e_enum, se_enum)])
    tol = 3 * float(np.hypot(se_enum, se_hand))
    rep.check("enumerated model's ELBO equals the hand-marginalised one's (|difference|, within 3 s.e.)",
              abs(e_enum - e_hand), abs(e_enum - e_hand) <= tol)
    probs = fit.discrete_probs(1000, seed=0)["z"]
    # (the components may carry the other labels than NUTS's)
    swapped = (np.sum((fit.mean["mu_0"] - ref["mu_1"].mean(0)) ** 2)
               < np.sum((fit.mean["mu_0"] - ref["mu_0"].mean(0)) ** 2))
    probs = probs[:, ::-1] if swapped else probs
    exact = responsibilities(ref, data)
    diff = float(np.abs(probs - exact).max())
    rep.say(f"Label probabilities of the first five points, enumerated ADVI (fit.discrete_probs) against "
            f"NUTS: {np.round(probs[:5, 1].astype(float), 3).tolist()} vs {np.round(exact[:5, 1], 3).tolist()}\n")
    rep.check("label probabilities agree with NUTS's (max over points of |difference|)", diff, diff < 0.05)


def find_map(model, steps: int, **kwargs) -> dict:
    """MAP point by NumPyro's AutoDelta guide (the seed's ``find_MAP``)."""
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoDelta
    from numpyro.optim import Adam

    guide = AutoDelta(model)
    res = SVI(model, guide, Adam(0.05), Trace_ELBO()).run(jax.random.PRNGKey(0), budget(steps), progress_bar=False, **kwargs)
    return {k: np.asarray(v) for k, v in guide.median(res.params).items()}


def align(draws: dict, reference: dict) -> dict:
    """Swap the component labels of ``draws`` when that matches ``reference``'s labels better."""
    d = lambda a, b: np.sum((a - b) ** 2)  # noqa: E731
    keep = d(draws["mu_0"].mean(0), reference["mu_0"].mean(0)) + d(draws["mu_1"].mean(0), reference["mu_1"].mean(0))
    swap = d(draws["mu_1"].mean(0), reference["mu_0"].mean(0)) + d(draws["mu_0"].mean(0), reference["mu_1"].mean(0))
    if swap < keep:
        return {"mu_0": draws["mu_1"], "mu_1": draws["mu_0"], "pi": draws["pi"][:, ::-1]}
    return draws


def plot_fit(rep: Report, data: np.ndarray, groups: dict, fname: str, title: str, alpha: float) -> None:
    fig, axs = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 4), sharex=True, sharey=True)
    for ax, (label, dr) in zip(np.atleast_1d(axs), groups.items()):
        ax.scatter(data[:, 0], data[:, 1], s=4, c="g", alpha=alpha)
        ax.scatter(dr["mu_0"][:500, 0], dr["mu_0"][:500, 1], s=6, c="r", alpha=0.2)
        ax.scatter(dr["mu_1"][:500, 0], dr["mu_1"][:500, 1], s=6, c="b", alpha=0.2)
        w = dr["pi"].mean(0)
        ax.set_title(f"{label}: weights {w[0]:.2f} / {w[1]:.2f}")
        ax.set(xlim=(-6, 6), ylim=(-6, 6))
    fig.suptitle(title)
    rep.savefig(fig, fname)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args("gaussian_mixture", __doc__, argv)
    rep = Report("gaussian_mixture", "Gaussian mixture with marginalised labels: MAP, NUTS, ADVI, minibatch ADVI",
                 a.out, a.quick)
    rng = np.random.RandomState(123)
    data = make_data(100, rng)

    # ---- 100 points: MAP -> NUTS, against ADVI -------------------------------------------
    t0 = time.perf_counter()
    start = find_map(mixture_model, 300, x=data)
    t_map = time.perf_counter() - t0
    rep.say(f"## 100 points\n\nMAP (AutoDelta, 300 adam steps, {t_map:.1f} s): "
            + ", ".join(f"{k} = {np.round(v, 3).tolist()}" for k, v in start.items()) + "\n")
    t0 = time.perf_counter()
    ref = nuts(mixture_model, seed=1, warmup=300 if a.quick else 1000, samples=1000 if a.quick else 4000,
               init_values=start, x=data)
    t_nuts = time.perf_counter() - t0
    steps = budget(5000)
    fit = vi.fit(mixture_model, {"x": data}, method="advi", steps=steps, optimizer="adagrad",
                 learning_rate=0.1, seed=0, progress=False)
    draws = align(fit.sample(4000, seed=1), ref)
    rep.say(f"NUTS from the MAP: {len(ref['pi'])} draws in {t_nuts:.1f} s; ADVI (adagrad 0.1): {steps} steps in "
            f"{fit.timings['compile_s'] + fit.timings['run_s']:.1f} s, final average loss "
            f"{np.mean(fit.hist[-500:]):.2f}\n")
    rep.say("ADVI's summary, in the model's own space (the weights are on the simplex already):\n")
    rep.say("```\n" + fit.summary().to_string(float_format=lambda v: f"{v: .3f}") + "\n```\n")
    rows = []
    for k in ("mu_0", "mu_1", "pi"):
        z, r = z_diff(draws[k], ref[k]), sd_ratio(draws[k], ref[k])
        for j in range(2):
            rows.append((f"{k}[{j}]", float(draws[k][:, j].mean()), float(ref[k][:, j].mean()),
                         float(ref[k][:, j].std()), float(z[j]), float(r[j])))
        if k != "pi":
            rep.check(f"ADVI means of {k} within 0.5 NUTS sds of NUTS (max over coordinates)",
                      float(z.max()), float(z.max()) < 0.5)
    rep.table(["parameter", "ADVI mean", "NUTS mean", "NUTS sd", "|dmean|/sd", "sd ratio"], rows)
    dpi = float(np.abs(draws["pi"].mean(0) - ref["pi"].mean(0)).max())
    rep.check("ADVI weights within 0.05 of NUTS's", dpi, dpi < 0.05)
    on_simplex = bool(np.allclose(fit.sample(100, seed=2)["pi"].sum(-1), 1, atol=1e-5)
                      and (fit.mean["pi"] > 0).all())
    rep.check("weights come back on the simplex (fit.mean['pi'] sums to 1)", float(fit.mean["pi"].sum()), on_simplex)
    plot_fit(rep, data, {"NUTS (from MAP)": ref, "ADVI": draws}, "mixture_100.png",
             "component means (red/blue) over the data (green)", alpha=0.5)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(-fit.hist, lw=0.5)
    ax.set(xlabel="step", ylabel="ELBO", title="ADVI, adagrad 0.1", ylim=(np.percentile(-fit.hist, 2), None))
    rep.savefig(fig, "elbo_100.png")
    compare_enumerated(rep, data, fit, ref)

    # ---- 100,000 points, minibatch 200 -----------------------------------------------------
    n_big = 20_000 if a.quick else 100_000  # --quick: fewer rows so that NUTS on all of them stays short
    big = make_data(n_big, rng)
    steps_big = budget(5000)
    t0 = time.perf_counter()
    fit_big = vi.fit(mixture_model, {"x": big}, model_kwargs={"prior_tau": 0.1}, method="advi",
                     steps=steps_big, optimizer="adagrad", learning_rate=0.1, batch_size=200, seed=0,
                     progress=False)
    t_advi = time.perf_counter() - t0
    big_draws = fit_big.sample(4000, seed=3)
    truth = {"mu_0": MS[0], "mu_1": MS[1], "pi": PS}
    big_draws = align(big_draws, {k: v[None] for k, v in truth.items()})
    nuts_warm, nuts_n = (50, 50) if a.quick else (500, 1000)
    t0 = time.perf_counter()
    ref_big = nuts(mixture_model, seed=2, warmup=nuts_warm, samples=nuts_n, init_values=start, x=big, prior_tau=0.1)
    t_nuts_big = time.perf_counter() - t0
    ref_big = align(ref_big, {k: v[None] for k, v in truth.items()})
    rep.say(f"## {n_big:,} points\n\nminibatch ADVI (batch 200, adagrad 0.1): {steps_big} steps "
            f"({fit_big.epochs:.1f} epochs) in {t_advi:.1f} s wall, compilation included; "
            f"NUTS on all rows: {nuts_warm} warm-up + {nuts_n} draws in {t_nuts_big:.1f} s "
            f"(ratio {t_nuts_big / t_advi:.1f}x)\n")
    rows = []
    for k in ("mu_0", "mu_1", "pi"):
        for j in range(2):
            rows.append((f"{k}[{j}]", float(truth[k][j]), float(big_draws[k][:, j].mean()),
                         float(big_draws[k][:, j].std()), float(ref_big[k][:, j].mean()),
                         float(ref_big[k][:, j].std())))
    rep.table(["parameter", "true", "ADVI mean", "ADVI sd", "NUTS mean", "NUTS sd"], rows)
    dmu = max(float(np.abs(big_draws[k].mean(0) - truth[k]).max()) for k in ("mu_0", "mu_1"))
    dw = float(np.abs(big_draws["pi"].mean(0) - PS).max())
    rep.check("minibatch ADVI recovers the true component means (max error < 0.05)", dmu, dmu < 0.05)
    rep.check("minibatch ADVI recovers the true weights (max error < 0.02)", dw, dw < 0.02)
    rep.check("minibatch ADVI takes less wall time than NUTS (NUTS / ADVI)", t_nuts_big / t_advi, t_advi < t_nuts_big)
    plot_fit(rep, big[:20_000], {"NUTS (all rows)": ref_big, "minibatch ADVI": big_draws}, "mixture_big.png",
             f"{n_big:,} points ({min(n_big, 20_000):,} shown)", alpha=0.01)
    return rep.finish()


if __name__ == "__main__":
    main()
