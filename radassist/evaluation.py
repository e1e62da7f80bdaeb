"""Metrics for protocol suggestions: what `radassist evaluate` and the benchmarks report."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from radassist.domain import LabelledOrder, Prediction


@dataclass
class EvaluationReport:
    n: int
    top1: float
    top3: float
    macro_f1: float
    semantic_similarity: float
    ece: float
    threshold: float
    coverage: float
    precision_at_threshold: float
    model: str = ""
    target_precision: float = 0.98
    coverage_at_target: float = float("nan")      # best coverage on this set at the target precision
    review_rate: float = float("nan")             # share of orders the engine marked "review"
    precision_pre_selected: float = float("nan")  # top-1 precision on the orders it did not mark
    per_category: dict | None = None              # category -> {"n", "top1", "top3"}
    reliability: list | None = None                     # [{"bin": "0.9-1.0", "n", "confidence", "accuracy"}]

    def to_json(self) -> dict:
        def clean(v):
            if isinstance(v, float):
                return None if v != v else round(v, 4)
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v
        return {k: clean(v) for k, v in self.__dict__.items()}

    def table(self) -> str:
        rows = [
            ("orders", f"{self.n}"),
            ("top-1 accuracy", f"{self.top1:.3f}"),
            ("top-3 accuracy", f"{self.top3:.3f}"),
            ("macro-F1 (top-1)", f"{self.macro_f1:.3f}"),
            ("semantic similarity", f"{self.semantic_similarity:.3f}"),
            ("expected calibration error", f"{self.ece:.3f}"),
            (f"coverage at >= {self.threshold:.2f}", f"{self.coverage:.3f}"),
            (f"precision at >= {self.threshold:.2f}", f"{self.precision_at_threshold:.3f}"),
            (f"coverage at {self.target_precision:.0%} precision (best on this set)", f"{self.coverage_at_target:.3f}"),
            ("pre-selected (not 'review')", f"{1 - self.review_rate:.3f}"),
            ("precision of pre-selected", f"{self.precision_pre_selected:.3f}"),
        ]
        width = max(len(r[0]) for r in rows)
        head = f"model: {self.model}\n" if self.model else ""
        text = head + "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
        if self.per_category and len(self.per_category) > 1 or (self.per_category and "" not in self.per_category):
            text += "\n\ncategory                 n   top-1  top-3\n"
            text += "\n".join(f"{c or '(none)':<22} {d['n']:>4}  {d['top1']:.3f}  {d['top3']:.3f}"
                               for c, d in sorted(self.per_category.items()))
        if self.reliability:
            text += "\n\nconfidence   n   mean conf  accuracy\n"
            text += "\n".join(f"{b['bin']:<9} {b['n']:>4}   {b['confidence']:.3f}      {b['accuracy']:.3f}"
                               for b in self.reliability if b["n"])
        return text


def _acceptable(example: LabelledOrder) -> set[str]:
    return {example.code, *example.acceptable}


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (confidences > lo) & (confidences <= hi)
        if mask.any():
            ece += mask.mean() * abs(confidences[mask].mean() - correct[mask].mean())
    return float(ece)


def reliability_table(confidences: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[dict]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (confidences > lo) & (confidences <= hi) if lo > 0 else (confidences <= hi)
        n = int(mask.sum())
        out.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": n,
                    "confidence": float(confidences[mask].mean()) if n else float("nan"),
                    "accuracy": float(correct[mask].mean()) if n else float("nan")})
    return out


def coverage_at_precision(confidences: np.ndarray, correct: np.ndarray, target: float) -> tuple[float, float]:
    """Largest share of orders that can be pre-selected (most confident first) with precision >= target,
    and the confidence threshold that does it (inf when none)."""
    order = np.argsort(-confidences, kind="stable")
    hits = np.cumsum(correct[order])
    precision = hits / np.arange(1, len(order) + 1)
    ok = np.nonzero(precision >= target)[0]
    if len(ok) == 0:
        return 0.0, float("inf")
    k = int(ok.max())
    # ties: a threshold cannot split equal confidences
    thr = float(confidences[order][k])
    n = int((confidences >= thr).sum())
    if n and correct[confidences >= thr].mean() < target:
        return k / len(order), float(np.nextafter(thr, np.inf))
    return n / len(order), thr


def macro_f1(true: Sequence[str], pred: Sequence[str]) -> float:
    labels = sorted(set(true) | set(pred))
    f1s = []
    for label in labels:
        tp = sum(t == label and p == label for t, p in zip(true, pred))
        fp = sum(t != label and p == label for t, p in zip(true, pred))
        fn = sum(t == label and p != label for t, p in zip(true, pred))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def evaluate_predictions(examples: Sequence[LabelledOrder], predictions: Sequence[Prediction],
                         threshold: float = 0.5, name_similarity=None, names: dict[str, str] | None = None,
                         model: str = "", target_precision: float = 0.98) -> EvaluationReport:
    """Top-1/top-3 count any acceptable code as a hit; macro-F1 uses the hit-or-expected label.

    ``name_similarity(pred_names, true_names) -> list[float]``: cosine similarity of label names
    (the measure of the original pipeline), with ``names`` mapping codes to protocol names;
    skipped (NaN) when not given.
    """
    if not examples:
        raise ValueError("no examples to evaluate")
    top1, top3, conf = [], [], []
    names = names or {}
    true_labels, pred_labels, pred_names, true_names = [], [], [], []
    for ex, pred in zip(examples, predictions, strict=True):
        ok = _acceptable(ex)
        codes = [s.code for s in pred.suggestions]
        hit1 = bool(codes) and codes[0] in ok
        top1.append(hit1)
        top3.append(any(c in ok for c in codes[:3]))
        conf.append(pred.suggestions[0].score if pred.suggestions else 0.0)
        true_labels.append(ex.code)
        pred_labels.append(ex.code if hit1 else (codes[0] if codes else ""))
        pred_names.append(pred.suggestions[0].name if pred.suggestions else "")
        true_names.append(names.get(ex.code, ex.code))
    top1_a, conf_a = np.array(top1, dtype=float), np.array(conf)
    covered = conf_a >= threshold
    review = np.array([bool(getattr(p, "review", False)) for p in predictions])
    per_category: dict = {}
    for ex, h1, h3 in zip(examples, top1, top3):
        d = per_category.setdefault(ex.category, {"n": 0, "top1": 0.0, "top3": 0.0})
        d["n"] += 1
        d["top1"] += h1
        d["top3"] += h3
    for d in per_category.values():
        d["top1"] /= d["n"]
        d["top3"] /= d["n"]
    sim = float("nan")
    if name_similarity is not None:
        sim = float(np.mean(name_similarity(pred_names, true_names)))
    return EvaluationReport(
        n=len(examples),
        top1=float(top1_a.mean()),
        top3=float(np.mean(top3)),
        macro_f1=macro_f1(true_labels, pred_labels),
        semantic_similarity=sim,
        ece=expected_calibration_error(conf_a, top1_a),
        threshold=threshold,
        coverage=float(covered.mean()),
        precision_at_threshold=float(top1_a[covered].mean()) if covered.any() else float("nan"),
        model=model,
        target_precision=target_precision,
        coverage_at_target=coverage_at_precision(conf_a, top1_a, target_precision)[0],
        review_rate=float(review.mean()),
        precision_pre_selected=float(top1_a[~review].mean()) if (~review).any() else float("nan"),
        per_category=per_category,
        reliability=reliability_table(conf_a, top1_a),
    )
