"""The low-rank family in whitened coordinates: rewhitening keeps q, and its schedule floor."""

import jax
import jax.numpy as jnp
import numpy as np

from variational.engine.control import build_optimizer
from variational.engine.schedule import ScheduleSpec
from variational.families import low_rank


def test_rewhitening_keeps_q_and_gives_unit_marginal_sds():
    fam = low_rank(rank=2)
    p = fam.init(jax.random.PRNGKey(0), jnp.array([1.0, -2.0, 0.5, 3.0]))
    p = {**p, "W": jnp.array([[1.0, 0.2], [0.5, -1.0], [0.0, 0.3], [2.0, 0.1]]),
         "rho": jnp.array([0.1, -1.0, 0.7, 0.0])}
    w, d = np.asarray(p["W"], float), np.log1p(np.exp(np.asarray(p["rho"], float)))
    cov = w @ w.T + np.diag(d ** 2)            # q's covariance in the plain form
    q = fam.rewhiten(p)
    np.testing.assert_allclose(fam.cov(q), cov, rtol=1e-5)
    np.testing.assert_allclose(fam.mean(q), [1.0, -2.0, 0.5, 3.0], rtol=1e-6)
    # trained parameters in q's own sds: every coordinate's variance is 1 in them
    unit = np.sum(np.asarray(q["W"]) ** 2, 1) + np.log1p(np.exp(np.asarray(q["rho"]))) ** 2
    np.testing.assert_allclose(unit, 1.0, rtol=1e-5)
    shown = fam.user_params(q)               # fit.params: the plain form again
    np.testing.assert_allclose(np.asarray(shown["W"]) @ np.asarray(shown["W"]).T, w @ w.T, rtol=1e-5)
    z = np.asarray(fam.draw(q, jax.random.PRNGKey(1), 1))[0]
    np.testing.assert_allclose(fam.log_q(q, z), fam.log_q(p, z), rtol=1e-5)


def test_the_schedule_floor_is_lower_by_the_rank():
    _, _, spec = build_optimizer("adam", 0.03, family=low_rank(rank=8), schedule="adaptive")
    assert spec.min_lr == ScheduleSpec.min_lr / 4.0
    _, _, spec = build_optimizer("adam", 0.03, family=low_rank(rank=8), schedule="adaptive", batch_fraction=0.25)
    assert spec.min_lr == ScheduleSpec.min_lr / 8.0
