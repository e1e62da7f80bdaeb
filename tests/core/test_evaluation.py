import numpy as np
import pytest

from radassist.domain import LabelledOrder, Order, Prediction, Suggestion
from radassist.evaluation import evaluate_predictions, expected_calibration_error, macro_f1


def _ex(code, acceptable=()):
    return LabelledOrder(Order("A", "CT", ""), code, tuple(acceptable))


def _pred(*pairs):
    return Prediction("A", [Suggestion(c, c, s) for c, s in pairs])


def test_top1_top3_count_acceptable_codes():
    examples = [_ex("A"), _ex("B", ["B", "C"]), _ex("D")]
    preds = [_pred(("A", 0.9), ("B", 0.05)), _pred(("C", 0.6), ("A", 0.3)), _pred(("X", 0.5), ("Y", 0.3), ("D", 0.1))]
    r = evaluate_predictions(examples, preds, threshold=0.55)
    assert r.top1 == pytest.approx(2 / 3) and r.top3 == 1.0
    assert r.coverage == pytest.approx(2 / 3) and r.precision_at_threshold == 1.0


def test_ece_is_zero_when_confidence_matches_accuracy():
    conf = np.array([0.8] * 10)
    correct = np.array([1] * 8 + [0] * 2, dtype=float)
    assert expected_calibration_error(conf, correct) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([0.0, 0.0])) == pytest.approx(1.0)


def test_macro_f1():
    assert macro_f1(["a", "b"], ["a", "b"]) == 1.0
    assert macro_f1(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_confidence_is_never_shown_as_certainty():
    from radassist.domain import format_confidence

    assert format_confidence(0.996) == ">99%"
    assert format_confidence(1.0) == "100%"
    assert format_confidence(0.004) == "<1%"
    assert format_confidence(0.0) == "0%"
    assert format_confidence(0.456) == "46%"


def test_per_category_accuracy_and_the_table_print():
    from radassist.domain import LabelledOrder, Order, Prediction, Suggestion
    from radassist.evaluation import evaluate_predictions

    ex = [LabelledOrder(Order(f"A{i}", "CT"), "CT-HEAD-WO", ("CT-HEAD-WO",), cat)
          for i, cat in enumerate(["ordinary", "ordinary", "noisy", "noisy"])]
    preds = [Prediction(e.order.accession, [Suggestion(code, code, 0.9)], review=(i == 3))
             for i, (e, code) in enumerate(zip(ex, ["CT-HEAD-WO", "CT-HEAD-WO", "CT-HEAD-WO", "MR-BRAIN-WO"]))]
    r = evaluate_predictions(ex, preds)
    assert r.per_category["ordinary"]["top1"] == 1.0 and r.per_category["noisy"]["top1"] == 0.5
    assert r.review_rate == 0.25 and r.precision_pre_selected == 1.0
    text = r.table()
    assert "noisy" in text and "confidence" in text
