"""Per-step cost of model parameters and of enumeration, as ratios measured in one process.

Two pairs of models with the same data, each timed over 5 refines of 4000 compiled steps
(median steps/s): a hierarchical normal model with its scale as ``numpyro.param`` against the
same model with the scale latent; a two-component mixture (500 points) with the labels
enumerated against the same mixture marginalised by hand (``MixtureSameFamily``).

    python benchmarks/params_enum_steps.py
"""
import time, numpy as np, numpyro, numpyro.distributions as dist
from numpyro.distributions import constraints
import variational as vi
rng = np.random.default_rng(1); y = rng.normal(0, np.sqrt(5.0), size=50)
def with_param(y):
    tau = numpyro.param("tau", 1.0, constraint=constraints.positive)
    with numpyro.plate("g", y.shape[0]):
        th = numpyro.sample("theta", dist.Normal(0.0, tau)); numpyro.sample("y", dist.Normal(th, 1.0), obs=y)
def with_latent(y):
    tau = numpyro.sample("tau", dist.HalfNormal(5.0))
    with numpyro.plate("g", y.shape[0]):
        th = numpyro.sample("theta", dist.Normal(0.0, tau)); numpyro.sample("y", dist.Normal(th, 1.0), obs=y)
W = np.array([0.3, 0.7]); x = np.where(rng.random(500) < 0.7, rng.normal(1.5, 1, 500), rng.normal(-1.5, 1, 500))
def enum(y):
    mu = numpyro.sample("mu", dist.Normal(np.array([-2., 2.]), 1.0).to_event(1))
    with numpyro.plate("rows", y.shape[0]):
        z = numpyro.sample("z", dist.Categorical(W), infer={"enumerate": "parallel"}); numpyro.sample("y", dist.Normal(mu[z], 1.0), obs=y)
def hand(y):
    mu = numpyro.sample("mu", dist.Normal(np.array([-2., 2.]), 1.0).to_event(1))
    with numpyro.plate("rows", y.shape[0]):
        numpyro.sample("y", dist.MixtureSameFamily(dist.Categorical(W), dist.Normal(mu, 1.0)), obs=y)
def rate(model, data, steps=4000):
    f = vi.fit(model, data, steps=0, progress=False); f.refine(10)  # compile
    out = []
    for _ in range(5):
        t = time.perf_counter(); f.refine(steps); out.append(steps / (time.perf_counter() - t))
    return float(np.median(out))
a, b = rate(with_param, {"y": y}), rate(with_latent, {"y": y})
c, d = rate(enum, {"y": x}), rate(hand, {"y": x})
print(f"steps/s: tau as numpyro.param {a:.0f}, tau latent {b:.0f}, ratio {a/b:.2f}")
print(f"steps/s: mixture enumerated {c:.0f}, hand-marginalised {d:.0f}, ratio {c/d:.2f}")
