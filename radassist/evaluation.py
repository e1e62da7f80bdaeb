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

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}

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
        ]
        width = max(len(r[0]) for r in rows)
        head = f"model: {self.model}\n" if self.model else ""
        return head + "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


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
                         model: str = "") -> EvaluationReport:
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
    )
