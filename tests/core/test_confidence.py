"""Target-precision review threshold, near ties, conflicts and out-of-distribution orders."""
import numpy as np

from radassist.confidence import fit_calibration, review_reason
from radassist.domain import Suggestion
from radassist.evaluation import coverage_at_precision


def test_threshold_reaches_the_target_precision_on_held_out_predictions():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0, 1, 2000)
    correct = rng.uniform(0, 1, 2000) < conf  # calibrated: accuracy rises with confidence
    cal = fit_calibration(conf, correct, target_precision=0.95)
    pre = conf >= cal["review_threshold"]
    assert correct[pre].mean() >= 0.95
    assert 0.0 < pre.mean() < 0.5
    assert cal["heldout_precision"] >= 0.95


def test_unreachable_target_pre_selects_nothing():
    cal = fit_calibration([0.9, 0.8], [False, False], target_precision=0.98)
    assert cal["review_threshold"] == 1.0 and cal["heldout_coverage"] == 0.0


def test_ood_threshold_is_a_low_quantile_of_familiarity():
    fam = np.linspace(0.2, 1.0, 101)
    cal = fit_calibration([0.9] * 101, [True] * 101, fam, ood_quantile=0.01)
    assert 0.2 <= cal["ood_threshold"] < 0.22


def s(code, score, conflicts=()):
    return Suggestion(code, code, score, conflicts)


def test_review_reasons():
    cal = {"review_threshold": 0.8, "target_precision": 0.98, "ood_threshold": 0.3, "tie_margin": 0.15}
    assert review_reason([s("A", 0.95), s("B", 0.03)], 0.9, cal) == ""
    assert "nearly tied" in review_reason([s("A", 0.51), s("B", 0.48)], 0.9, cal)
    assert "98%" in review_reason([s("A", 0.7), s("B", 0.1)], 0.9, cal)
    assert "conflicts" in review_reason([s("A", 0.99, ("pregnancy",))], 0.9, cal)
    assert "unlike" in review_reason([s("A", 0.99)], 0.1, cal)


def test_coverage_at_precision_never_splits_ties():
    conf = np.array([0.9, 0.9, 0.8, 0.7])
    correct = np.array([1.0, 0.0, 1.0, 1.0])
    cov, thr = coverage_at_precision(conf, correct, 0.98)
    assert cov == 0.0
    cov, thr = coverage_at_precision(np.array([0.99, 0.9, 0.5]), np.array([1.0, 1.0, 0.0]), 0.98)
    assert cov == 2 / 3 and thr == 0.9
