"""``method="auto"`` after its first fit, and the verdict of Gaussian fits with correlations.

Truths: the marginal and conditional sds of a Gaussian with known covariance (linear algebra).
"""

import numpy as np
import pytest

from variational.posterior.verdict import MomentCheck, curvature_check, verdict

D = 120


def _gaussian_curvature(q_sd):
    # the log density of N(0, C) with C an AR(1) correlation (rho 0.6): its Hessian is -C^{-1}
    cov = 0.6 ** np.abs(np.subtract.outer(np.arange(D), np.arange(D)))
    hessian = -np.linalg.inv(cov)
    return curvature_check(lambda _: hessian, np.zeros((1, D)), q_sd(cov), [f"x[{i}]" for i in range(D)])


def _verdict(method, curv, moments=None):
    return verdict(0.92, True, "", 0, 1000, method, moments, curv)


@pytest.mark.parametrize("method", ["fullrank_advi", "lowrank_advi", "structured"])
def test_a_high_khat_with_the_curvatures_marginal_sds_is_ok_for_a_correlated_gaussian(method):
    marginal = _gaussian_curvature(lambda c: np.sqrt(np.diag(c)))          # q sd = the posterior's
    assert marginal.close == D and abs(marginal.ratio - 1) < 1e-6 and abs(marginal.largest - 1) < 1e-6
    status, text = _verdict(method, marginal)
    assert status == "ok" and f"{D} of {D} sds" in text
    # the mean-field optimum's sds are the conditional ones, sqrt((1 - 0.36) / (1 + 0.36)) = 0.686
    # of the marginals inside the chain: not "ok" for a family that should hold the correlations
    conditional = _gaussian_curvature(lambda c: 1 / np.sqrt(np.diag(np.linalg.inv(c))))
    assert conditional.close < 0.9 * D and _verdict(method, conditional)[0] == "bad"
    # sds 2.5 times too wide, or a mean the importance weights move by 0.6 sd: "bad"
    assert _verdict(method, _gaussian_curvature(lambda c: 2.5 * np.sqrt(np.diag(c))))[0] == "bad"
    far = MomentCheck(shift=0.6, shift_at="x[3]", sd_ratio=1.0, sd_at="x[3]", median_sd_ratio=1.0)
    assert _verdict(method, marginal, far)[0] == "bad"
    # every sd right but one at 0.55 of its marginal (119 of 120 close): that parameter's sd is
    # not usable, so the fit is not "ok"; at 0.75 (within 2/3-1.5) it is
    for scale, status in ((0.55, "bad"), (0.75, "ok")):
        one_off = _gaussian_curvature(lambda c: np.sqrt(np.diag(c)) * np.r_[scale, np.ones(D - 1)])
        assert one_off.close == D - 1 and abs(one_off.ratio - scale) < 1e-6 and one_off.at == "x[0]"
        assert _verdict(method, one_off)[0] == status


def test_a_mean_field_fit_keeps_its_own_rule():
    # a mean-field q with the conditional sds (0.686 of the marginals): "ok" for its own means and sds
    conditional = _gaussian_curvature(lambda c: 1 / np.sqrt(np.diag(np.linalg.inv(c))))
    assert abs(conditional.ratio - np.sqrt(0.64 / 1.36)) < 1e-6
    assert _verdict("advi", conditional)[0] == "ok"


class _Fit:
    """What ``settle`` reads of a fit: its family, dimension, convergence and diagnosis."""

    def __init__(self, name, diagnosis):
        self.family = type("F", (), {"name": name})()
        self.logdensity = type("L", (), {"dim": 175})()
        self.converged, self.interrupted, self.message, self.notes = True, False, "", []
        self._d = diagnosis

    def diagnose(self):
        return self._d


def _diagnosis(status, funnel=()):
    from variational.posterior.diagnostics import Diagnosis
    return Diagnosis(khat=0.92, converged=True, skipped_steps=0, verdict="", status=status, ess=10.0,
                     n_draws=4000, rel_change=0.0, funnel=funnel)


def test_a_funnel_is_not_refitted_full_rank_and_a_bad_fit_without_one_is():
    from variational.engine.auto import settle
    refits = []

    def fit_again(**kw):
        refits.append(kw["method"])
        return _Fit(kw["method"], _diagnosis("ok"))

    call = {"method": "auto", "steps": None}
    fit = _Fit("lowrank_advi", _diagnosis("bad", funnel=("alpha", "beta")))
    assert settle(fit, fit_again, call, 0.0, True) is fit and refits == []
    assert "alpha, beta is a funnel" in fit.message and "non-centre" in fit.message
    chosen = settle(_Fit("lowrank_advi", _diagnosis("bad")), fit_again, call, 0.0, True)
    assert refits == ["fullrank_advi"] and chosen.family.name == "fullrank_advi"
