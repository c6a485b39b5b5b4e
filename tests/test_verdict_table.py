"""Verdict rules found by the accuracy benchmark's table (docs/accuracy.md): each on a small case
with a known answer."""

import numpy as np
import pytest

import variational as vi
from variational.posterior.verdict import KHAT_BAD, verdict


def test_a_direct_method_whose_own_weights_failed_is_bad_whatever_a_second_khat_says():
    """Pathfinder on a dollar-scale regression found k-hat 0.89 over its own 4000 draws (so it
    reported q's unweighted draws, sds 20x too small), and diagnose()'s fresh draws 0.70: one
    k-hat under 0.7 by chance must not turn that into "ok"."""
    status, text = verdict(0.69, True, "", 0, 10, "pathfinder", None, None, (),
                           {"weighted": False, "khat": 0.89})
    assert status == "bad" and "0.89" in text
    status, _ = verdict(0.3, True, "", 0, 10, "pathfinder", None, None, (), {"weighted": True, "khat": 0.3})
    assert status == "good"


def _t3():
    vi.StudentT("x", 3.0, 0.0, 1.0)


T3_SD = np.sqrt(3.0)    # the sd of a Student-t with 3 degrees of freedom


@pytest.mark.parametrize("method", ["laplace", "dadvi"])
def test_direct_methods_on_a_heavy_tailed_posterior_are_not_good(method):
    """A Student-t posterior with 3 degrees of freedom (sd sqrt(3) = 1.73). Laplace's Gaussian at
    the mode has sd sqrt(3/4) = 0.87; its importance-weighted sd is still about 0.68 of the truth
    (k-hat between 0.5 and 0.7: the weights underestimate the tails). DADVI's sd is about 0.72 of
    the truth with a k-hat far above 1. Neither may be called "good"."""
    fit = vi.fit(_t3, method=method, progress=False, seed=0)
    d = fit.diagnose()
    assert float(fit.std["x"]) < 0.8 * T3_SD                       # the answer is too narrow
    if method == "laplace":
        chol = np.asarray(fit.approximation.params["chol"])
        assert abs(float(chol[0, 0]) - np.sqrt(0.75)) < 0.01      # q: the Gaussian at the mode
    assert d.status in ("ok", "bad"), d.verdict
