"""Two-component 2-D Gaussian mixture, labels marginalised, minibatch ADVI on 100,000 points.

The seed's workload: points from 0.2 N([-1, -1.5], I) + 0.8 N([1, 1], I); priors
mu_k ~ N(0, 10 I) (precision 0.1) and pi ~ Dirichlet(0.1, 0.1). The component label of each
point is summed out with logsumexp in a ``vi.Potential`` holding one term per point, so the
minibatch fit scales it by N/B automatically. Claim checked: the minibatch fit (200 points per
step) finds the same component means and weights as the full-batch fit, to within 3 posterior
standard deviations of the full-batch fit (and both are near the generating values).

    python examples/gaussian_mixture_minibatch.py [--quick] [--out DIR]
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
import optax  # noqa: E402

import variational as vi  # noqa: E402
from _common import Report, budget, parse_args, plt  # noqa: E402

MS = np.array([[-1.0, -1.5], [1.0, 1.0]])
PS = np.array([0.2, 0.8])


def make_data(n: int, seed: int = 123) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.random(n) < PS[1]
    return MS[z.astype(int)] + rng.normal(size=(n, 2))


def mixture(x):
    """The model: component means, weights, and the marginalised per-point likelihood."""
    mu = vi.MvNormal("mu", jnp.zeros(2), tau=0.1 * jnp.eye(2), shape=(2, 2))
    pi = vi.Dirichlet("pi", 0.1 * jnp.ones(2))
    comp = jax.scipy.stats.multivariate_normal.logpdf(x[:, None, :], mu[None], jnp.eye(2))  # (N, 2)
    vi.Potential("x", jax.scipy.special.logsumexp(jnp.log(pi) + comp, axis=1))


def _ordered(fit: vi.Fit) -> dict[str, np.ndarray]:
    """Means and sds with the components ordered by their first coordinate (labels are exchangeable)."""
    m, s = fit.mean, fit.std
    order = np.argsort(m["mu"][:, 0])
    return {"mu": m["mu"][order], "mu_sd": s["mu"][order], "pi": m["pi"][order], "pi_sd": s["pi"][order]}


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args("gaussian_mixture_minibatch", __doc__, argv)
    rep = Report("gaussian_mixture_minibatch", "Gaussian mixture, minibatch ADVI", a.out, a.quick)
    n, steps = (20_000, 2000) if a.quick else (100_000, 3000)
    steps = budget(steps)
    x = make_data(n)
    opt = optax.adam(optax.cosine_decay_schedule(0.05, steps))
    common = dict(steps=steps, optimizer=opt, objective=vi.Objective(num_particles=4), progress=False, seed=1,
                  init=vi.Start(values={"mu": np.array([[-1.0, -1.0], [1.0, 1.0]])}))
    t0 = time.perf_counter()
    full = vi.fit(mixture, {"x": x}, **common)
    t_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    mb = vi.fit(mixture, {"x": x}, batch_size=200, **common)
    t_mb = time.perf_counter() - t0
    f, m = _ordered(full), _ordered(mb)
    z_mu = np.abs(m["mu"] - f["mu"]) / f["mu_sd"]
    z_pi = np.abs(m["pi"] - f["pi"]) / f["pi_sd"]

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    show = x[:: max(1, n // 5000)]
    ax[0].scatter(show[:, 0], show[:, 1], s=2, alpha=0.2, c="g")
    ax[0].scatter(*MS.T, c="k", marker="x", s=80, label="generating means")
    ax[0].scatter(*f["mu"].T, facecolors="none", edgecolors="b", s=150, label="full batch")
    ax[0].scatter(*m["mu"].T, c="r", s=30, label="minibatch 200")
    ax[0].set(xlim=(-6, 6), ylim=(-6, 6), title=f"{n:,} points")
    ax[0].legend(loc="lower right")
    for fit, lab in ((full, "full batch"), (mb, "minibatch 200")):
        h = fit.hist / n
        w = 50
        ax[1].plot(np.convolve(h, np.ones(w) / w, mode="valid"), label=lab)
    ax[1].set(yscale="log", xlabel="step", ylabel="-ELBO per point (running mean)")
    ax[1].legend()
    rep.savefig(fig, "mixture.png")

    fmt = lambda v: ", ".join(f"{float(e):.3f}" for e in v)  # noqa: E731
    rep.say(f"{n:,} points, {steps} steps; minibatch of 200 points per step ({mb.epochs:.1f} epochs).\n")
    rep.table(["", "full batch", "minibatch 200", "generating"],
              [[f"mu[{k}]", fmt(f["mu"][k]), fmt(m["mu"][k]), fmt(MS[k])] for k in range(2)]
              + [["pi", fmt(f["pi"]), fmt(m["pi"]), fmt(PS)]])
    rep.say(f"Wall time: full batch {t_full:.1f}s, minibatch {t_mb:.1f}s (compilation included).")
    rep.check("largest abs(minibatch - full) of the means, in full-batch sds, below 3", z_mu.max(), bool(np.all(z_mu < 3)))
    rep.check("largest abs(minibatch - full) of the weights, in full-batch sds, below 3", z_pi.max(), bool(np.all(z_pi < 3)))
    dm = float(np.max(np.abs(m["mu"] - MS)))
    rep.check("minibatch means within 0.1 of the generating means", dm, dm < 0.1)
    return rep.finish()


if __name__ == "__main__":
    main()
