"""Multinomial logistic regression on Iris with SVGD (500 particles, adamax).

Reproduces the seed's Iris example: coefficients ``beta ~ N(0, 100)`` (4 features x 3 classes)
and intercepts, a categorical likelihood on the softmax of ``X beta + a``, fitted by Stein
variational gradient descent with 500 particles and the adamax optimiser. Train and test
accuracy are tracked during the fit by a callback that runs every ``--every`` steps. The claim
checked at the end: training and test accuracy (posterior-predictive, averaged over particles) >= 0.9.

Run::

    python examples/iris_svgd.py --out out/iris_svgd          # full run
    python examples/iris_svgd.py --quick --out /tmp/iris      # a short smoke run

Writes ``accuracy.png``, ``loss.png``, ``coefficients.png`` and ``summary.md`` into ``--out``;
exits with an error when a claim fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _common import Report, budget, parse_args, plt  # noqa: E402


def load_iris() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features (150, 4) and integer labels (150,) from ``shared/data/iris.csv``."""
    import pandas as pd

    from variational.data.datasets import find_shared_data

    path = find_shared_data("iris.csv")
    if path is None:
        from variational.data.datasets import make_iris

        print("iris.csv not found next to this checkout: using generated iris-like data")
        return make_iris()
    df = pd.read_csv(path)
    species = sorted(df["species"].unique())
    y = df["species"].map({s: i for i, s in enumerate(species)}).to_numpy()
    return df.drop(columns="species").to_numpy(np.float32), y.astype(np.int32), species


def iris_model(X, y=None, n_classes: int = 3):
    """Softmax regression: ``y ~ Categorical(softmax(X beta + a))``."""
    import variational as vi

    beta = vi.Normal("beta", 0.0, 100.0, shape=(X.shape[1], n_classes))
    # the seed uses a flat prior on the intercepts; a N(0, 100) prior is as uninformative here
    a = vi.Normal("a", 0.0, 100.0, shape=(n_classes,))
    vi.Categorical("obs", logit_p=X @ beta + a, observed=y)


def accuracy(draws: dict, X: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the posterior-predictive class probabilities (averaged over draws)."""
    logits = np.einsum("nf,sfc->snc", X, draws["beta"]) + draws["a"][:, None, :]
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(-1, keepdims=True)
    return float((p.mean(0).argmax(-1) == y).mean())


def main(argv: Sequence[str] | None = None) -> int:
    """Fit, track, plot, and check the claim; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="optimisation steps (default 3000, quick 1500)")
    ap.add_argument("--particles", type=int, default=500)
    ap.add_argument("--every", type=int, default=10, help="track accuracy every this many steps")
    ap.add_argument("--seed", type=int, default=0)
    args = parse_args("iris_svgd", None, argv, parser=ap)
    steps = budget(args.steps or (1500 if args.quick else 3000))
    rep = Report("iris_svgd", "Iris multinomial logistic regression with SVGD", args.out, args.quick)

    import variational as vi

    X, y, species = load_iris()
    perm = np.random.default_rng(args.seed).permutation(len(y))
    n_train = int(0.75 * len(y))
    tr, te = perm[:n_train], perm[n_train:]
    history: dict[str, list] = {"step": [], "train": [], "test": []}

    def track(fit, losses, i):
        d = fit.sample(args.particles, seed=i)
        history["step"].append(i)
        history["train"].append(accuracy(d, X[tr], y[tr]))
        history["test"].append(accuracy(d, X[te], y[te]))

    track.every = args.every

    fit = vi.fit(iris_model, {"X": X[tr], "y": y[tr]}, method="svgd", n_particles=args.particles,
                 optimizer="adamax", learning_rate=0.1, steps=steps, seed=args.seed,
                 callbacks=[track], progress=not args.quick)
    final = fit.sample(4 * args.particles, seed=args.seed)
    train_acc, test_acc = accuracy(final, X[tr], y[tr]), accuracy(final, X[te], y[te])

    rep.say(f"- {len(tr)} training rows, {len(te)} test rows (seed {args.seed}); classes {species}")
    rep.say(f"- SVGD, {args.particles} particles, adamax (learning rate 0.1), {steps} steps, "
            f"{fit.skipped_steps} skipped")
    rep.say(f"- compile {fit.timings['compile_s']:.1f} s, run {fit.timings['run_s']:.1f} s "
            f"({steps / max(fit.timings['run_s'], 1e-9):.0f} steps/s)")
    rep.check("training accuracy of the posterior-predictive probabilities >= 0.9", train_acc, train_acc >= 0.9)
    rep.check("test accuracy of the posterior-predictive probabilities >= 0.9", test_acc, test_acc >= 0.9)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(history["step"], history["train"], label="train")
    ax.plot(history["step"], history["test"], label="test")
    ax.axhline(0.9, color="k", lw=0.8, ls="--")
    ax.set(xlabel="fitting step", ylabel="accuracy", ylim=(0, 1.02), title="SVGD on Iris")
    ax.legend()
    rep.savefig(fig, "accuracy.png")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(fit.hist)
    ax.set(xlabel="step", ylabel="-mean log p(particles)", yscale="symlog")
    rep.savefig(fig, "loss.png")
    beta = np.asarray(fit.sample(args.particles, seed=1)["beta"]).reshape(args.particles, -1)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.boxplot(beta, showfliers=False)
    ax.set(xlabel="coefficient (feature, class)", ylabel="value", title="SVGD particles of beta")
    rep.savefig(fig, "coefficients.png")
    return rep.finish()


if __name__ == "__main__":
    raise SystemExit(main())
