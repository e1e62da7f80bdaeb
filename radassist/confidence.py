"""When a suggestion may be pre-selected, and when the order goes to "needs review".

The site sets a target precision for pre-selected suggestions (default 98%) rather than a raw
threshold. ``fit_calibration`` finds the lowest top-1 score at which the suggestions on held-out
orders (whole writer styles held out, see ``radassist.training.style_folds``) reach that precision,
and the familiarity below which an order is unlike anything the model was trained on (the
``ood_quantile`` of held-out orders' similarity to their nearest training order). Both are stored with
the model. ``review_reason`` applies them, plus two rules no threshold replaces: a near tie is never
pre-selected, and neither is a suggestion that conflicts with a safety flag.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_TARGET_PRECISION = 0.98
DEFAULT_TIE_MARGIN = 0.15
TARGETS = (0.90, 0.95, 0.97, 0.98, 0.99)


def threshold_for(calibration: dict, target: float | None) -> float | None:
    """The stored review threshold for the site's target precision (the nearest stricter one fitted)."""
    if target is None or not calibration.get("thresholds"):
        return calibration.get("review_threshold")
    fitted = sorted((float(k), v) for k, v in calibration["thresholds"].items())
    for t, thr in fitted:
        if t >= target - 1e-9:
            return thr
    return fitted[-1][1]


def fit_calibration(confidences: Sequence[float], correct: Sequence[bool], familiarity: Sequence[float] | None = None,
                    target_precision: float = DEFAULT_TARGET_PRECISION, ood_quantile: float = 0.01,
                    tie_margin: float = DEFAULT_TIE_MARGIN, margins: Sequence[float] | None = None) -> dict:
    """Review threshold reaching ``target_precision`` on held-out predictions, and the OOD cut-off."""
    conf = np.asarray(confidences, dtype=float)
    ok = np.asarray(correct, dtype=float)
    eligible = np.ones(len(conf), dtype=bool)
    if margins is not None:  # near ties are never pre-selected, so they do not count against the threshold
        eligible = np.asarray(margins, dtype=float) >= tie_margin
    threshold = 1.0
    order = np.argsort(-conf[eligible], kind="stable")
    c, k = conf[eligible][order], ok[eligible][order]
    if len(c):
        precision = np.cumsum(k) / np.arange(1, len(c) + 1)
        good = np.nonzero(precision >= target_precision)[0]
        if len(good):
            threshold = float(c[good.max()])
    pre = eligible & (conf >= threshold)
    thresholds = {}
    for target in TARGETS:
        t = 1.0
        if len(c):
            good = np.nonzero(np.cumsum(k) / np.arange(1, len(c) + 1) >= target)[0]
            if len(good):
                t = float(c[good.max()])
        thresholds[f"{target:.3f}"] = round(t, 6)
    out = {
        "target_precision": target_precision,
        "review_threshold": round(threshold, 6),
        "tie_margin": tie_margin,
        "heldout_orders": int(len(conf)),
        "heldout_coverage": round(float(pre.mean()), 4) if len(conf) else 0.0,
        "heldout_precision": round(float(ok[pre].mean()), 4) if pre.any() else None,
        "thresholds": thresholds,  # for a site that sets another target precision
    }
    if familiarity is not None and len(familiarity):
        out["ood_threshold"] = round(float(np.quantile(np.asarray(familiarity, dtype=float), ood_quantile)), 6)
    return out


def review_reason(suggestions: Sequence, familiarity: float, calibration: dict, policy=None,
                  target_precision: float | None = None) -> str:
    """"" when the top suggestion may be pre-selected, else the reason shown to the radiologist."""
    if not suggestions:
        return "no suggestion"
    top = suggestions[0]
    if familiarity < calibration.get("ood_threshold", -1.0):
        return "unlike the orders the model was trained on"
    if top.conflicts:
        return "top suggestion conflicts with a safety flag"
    if len(suggestions) > 1 and top.score - suggestions[1].score < calibration.get("tie_margin", DEFAULT_TIE_MARGIN):
        return "two protocols nearly tied"
    threshold = threshold_for(calibration, target_precision)
    if threshold is not None and top.score < threshold:
        target = target_precision or calibration.get("target_precision", DEFAULT_TARGET_PRECISION)
        return f"confidence below the level that gives {target:.0%} precision"
    return ""
