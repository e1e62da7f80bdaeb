from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from radassist.access import ADMIN, AUDITOR, RADIOLOGIST, Actor, PermissionDenied
from radassist.domain import Prediction, SafetyFlag, Suggestion
from radassist.store import AuditEventRow, DecisionRow, OrderRow
from radassist.worklist import (
    DecisionError, DecisionInput, cached_prediction, latest_decisions, list_orders, record_decision,
    save_prediction, todo_order_ids,
)

RAD = Actor("rad", RADIOLOGIST)


def _order(s, accession, priority="ROUTINE", minutes_ago=0):
    row = OrderRow(accession=accession, ordered_exam="CT HEAD", clinical_notes="", sex="F", priority=priority,
                   ordered_at=datetime(2026, 1, 1, 12) - timedelta(minutes=minutes_ago))
    s.add(row)
    s.flush()
    return row.id


def test_worklist_order_is_stat_first_then_oldest(db):
    with db.session() as s:
        _order(s, "R-old", "ROUTINE", 100)
        _order(s, "S-new", "STAT", 1)
        _order(s, "S-old", "STAT", 50)
        _order(s, "U", "URGENT", 500)
    with db.session() as s:
        assert [o.accession for o in list_orders(s)] == ["S-old", "S-new", "U", "R-old"]


def test_accept_and_override_are_recorded_with_audit(db):
    with db.session() as s:
        a, b = _order(s, "A"), _order(s, "B")
    top = Suggestion("CT-HEAD-WO", "CT Head WO Contrast", 0.91)
    with db.session() as s:
        record_decision(s, RAD, DecisionInput(a, "CT-HEAD-WO", top, "embedding/v1", time_to_decide_ms=1500))
        record_decision(s, RAD, DecisionInput(b, "MR-BRAIN-WO", top, "embedding/v1", comment=" pacemaker ok "))
    with db.session() as s:
        rows = {d.order.accession: d for d in s.scalars(select(DecisionRow))}
        assert rows["A"].action == "accepted" and rows["A"].time_to_decide_ms == 1500
        assert rows["B"].action == "overridden" and rows["B"].final_code == "MR-BRAIN-WO"
        assert rows["B"].comment == "pacemaker ok" and rows["B"].suggested_score == pytest.approx(0.91)
        assert todo_order_ids(s) == []
        actions = [e.action for e in s.scalars(select(AuditEventRow))]
        assert actions[-2:] == ["decision.accept", "decision.override"]


def test_decision_outside_catalog_is_refused(db):
    with db.session() as s:
        a = _order(s, "A")
    with pytest.raises(DecisionError):
        with db.session() as s:
            record_decision(s, RAD, DecisionInput(a, "NOT-A-CODE"))
    with db.session() as s:
        assert s.get(OrderRow, a).status == "todo"


def test_auditor_cannot_decide_admin_can(db):
    with db.session() as s:
        a = _order(s, "A")
    with pytest.raises(PermissionDenied):
        with db.session() as s:
            record_decision(s, Actor("aud", AUDITOR), DecisionInput(a, "CT-HEAD-WO"))
    with db.session() as s:
        record_decision(s, Actor("adm", ADMIN), DecisionInput(a, "CT-HEAD-WO"))


def test_latest_decision_per_order_wins(db):
    with db.session() as s:
        a = _order(s, "A")
    for code in ("CT-HEAD-WO", "MR-BRAIN-WO"):
        with db.session() as s:
            record_decision(s, RAD, DecisionInput(a, code))
    with db.session() as s:
        assert [d.final_code for d in latest_decisions(s)] == ["MR-BRAIN-WO"]


def test_prediction_cache_round_trip(db):
    with db.session() as s:
        a = _order(s, "A")
    pred = Prediction("A", [Suggestion("CT-HEAD-WO", "CT Head WO Contrast", 0.7)],
                      [SafetyFlag("anticoagulation", "on apixaban", 5, 16)], "embedding/v1", 3.2)
    with db.session() as s:
        save_prediction(s, a, pred)
        save_prediction(s, a, pred)  # idempotent per model version
    with db.session() as s:
        got = cached_prediction(s, a, "embedding/v1")
        assert got.suggestions == pred.suggestions and got.flags == pred.flags
        assert cached_prediction(s, a, "other/v2") is None


def test_stored_suggestions_keep_flags_conflicts_reasons_and_review(db):
    """What the engine said about an order survives the database: the GUI shows the stored assessment."""
    with db.session() as s:
        a = _order(s, "RV1")
    flag = SafetyFlag("renal-impairment", "eGFR 19", 10, 17, "impaired", "active", note="")
    pred = Prediction("RV1", [Suggestion("NM-VQ", "NM Lung Ventilation Perfusion", 0.7, (), ("?PE",)),
                              Suggestion("CTA-CHEST-PE", "CTA Chest Pulmonary Embolism", 0.2, ("renal-impairment",))],
                      [flag], "embedding/v9", 3.0, review=True, review_reason="two protocols nearly tied")
    with db.session() as s:
        save_prediction(s, a, pred)
    with db.session() as s:
        got = cached_prediction(s, a, "embedding/v9")
    assert got.flags == [flag]
    assert got.suggestions[1].conflicts == ("renal-impairment",) and got.suggestions[0].why == ("?PE",)
    assert got.review and got.review_reason == "two protocols nearly tied"


def _flagged_order(s, accession, notes):
    row = OrderRow(accession=accession, ordered_exam="CT CHEST", clinical_notes=notes, sex="F", age=70,
                   priority="STAT", ordered_at=datetime(2026, 1, 1, 12))
    s.add(row)
    s.flush()
    return row.id


def test_decision_against_a_flag_needs_acknowledgement_which_is_stored_and_audited(db):
    from radassist.worklist import ConflictNotAcknowledged

    with db.session() as s:
        a = _flagged_order(s, "F1", "suspected PE, eGFR 19, not on dialysis")
    with pytest.raises(ConflictNotAcknowledged, match="renal-impairment"):
        with db.session() as s:
            record_decision(s, RAD, DecisionInput(a, "CTA-CHEST-PE"))
    with db.session() as s:
        assert s.get(OrderRow, a).status == "todo"  # nothing saved
        record_decision(s, RAD, DecisionInput(a, "CTA-CHEST-PE", acknowledged=("renal-impairment",)))
    with db.session() as s:
        row = s.scalars(select(DecisionRow).where(DecisionRow.order_id == a)).one()
        assert row.acknowledged_conflicts == '["renal-impairment"]'
        event = s.scalars(select(AuditEventRow).where(AuditEventRow.action == "decision.override")
                          .order_by(AuditEventRow.id.desc())).first() or s.scalars(
            select(AuditEventRow).where(AuditEventRow.action == "decision.accept").order_by(AuditEventRow.id.desc())).first()
        assert "renal-impairment" in event.details


def test_safe_alternative_needs_no_acknowledgement(db):
    with db.session() as s:
        a = _flagged_order(s, "F2", "suspected PE, eGFR 19, not on dialysis")
        record_decision(s, RAD, DecisionInput(a, "NM-VQ"))
        assert s.get(OrderRow, a).status == "done"
