"""The promotion gate: may a candidate replace the active model? One rule, applied wherever a
promotion happens (`registry.promote`, so `radassist models promote` and the app alike).

- The held-out comparison (``training.run_service.compare_on_heldout``) must exist and hold at
  least ``MIN_HELDOUT`` decisions; fewer cannot tell a better model from a worse one (one case
  is 5 points at 20). An admin may override *only this* with an explicit, audited force (what
  the too-small set shows, falls included, cannot tell either way).
- Neither top-1 nor top-3 may fall by more than the site's ``promotion_gate`` (0 by default).
  A measured fall is not overridable: retrain, or change the site's gate (an audited setting).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MIN_HELDOUT = 20
EPS = 1e-9


@dataclass(frozen=True)
class GateResult:
    passed: bool
    summary: str                       # one line for the CLI, the panel and the audit trail
    heldout: int = 0
    too_small: bool = False            # fewer held-out decisions than MIN_HELDOUT (or none)
    top1_fell: bool = False
    top3_fell: bool = False
    reasons: list[str] = field(default_factory=list)

    @property
    def overridable(self) -> bool:
        """Only a held-out set too small to tell may be overridden by an admin (its numbers, rises or
        falls, mean little); a fall measured on enough decisions never is."""
        return not self.passed and self.too_small

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "summary": self.summary, "heldout": self.heldout,
                "too_small": self.too_small, "top1_fell": self.top1_fell, "top3_fell": self.top3_fell,
                "reasons": list(self.reasons)}


def evaluate_gate(comparison: Mapping[str, Any] | None, gate: float = 0.0,
                  min_heldout: int = MIN_HELDOUT) -> GateResult:
    """Judge a candidate from its held-out comparison with the active model."""
    n = int((comparison or {}).get("heldout") or 0)
    if not comparison or n == 0 or "candidate" not in comparison or "active" not in comparison:
        return GateResult(False, "no held-out decisions to judge the candidate on", 0, too_small=True,
                          reasons=["no held-out decisions"])
    cand, act = comparison["candidate"], comparison["active"]
    top1_fell = float(cand["top1"]) + EPS < float(act["top1"]) - gate
    top3_fell = float(cand["top3"]) + EPS < float(act["top3"]) - gate
    too_small = n < min_heldout
    reasons = []
    if top1_fell:
        reasons.append(f"top-1 fell from {act['top1']:.1%} to {cand['top1']:.1%}")
    if top3_fell:
        reasons.append(f"top-3 fell from {act['top3']:.1%} to {cand['top3']:.1%}")
    if too_small:
        reasons.append(f"only {n} held-out decisions (at least {min_heldout} are needed to tell)")
    numbers = (f"top-1 {cand['top1']:.1%} vs {act['top1']:.1%}, top-3 {cand['top3']:.1%} vs {act['top3']:.1%} "
               f"(candidate vs active, {n} held-out)")
    if not reasons:
        allowed = f"; gate: at most {gate:.1%} worse" if gate else ""
        return GateResult(True, numbers + allowed, n)
    return GateResult(False, "; ".join(reasons) + f" — {numbers}", n, too_small, top1_fell, top3_fell, reasons)
