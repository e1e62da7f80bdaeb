"""Reverting a decision (the core function behind Ctrl+Z): role-checked, audited, one transaction."""
from datetime import datetime

import pytest

from radassist import audit
from radassist.access import ADMIN, AUDITOR, RADIOLOGIST, Actor, PermissionDenied
from radassist.domain import Suggestion
from radassist.store import OrderRow
from radassist.worklist import (
    DecisionInput, RevertError, current_decisions, latest_decisions, record_decision, revert_decision,
)

RAD = Actor("rad", RADIOLOGIST)
RAD2 = Actor("rad2", RADIOLOGIST)
ADM = Actor("admin", ADMIN)
AUD = Actor("auditor", AUDITOR)
TOP = Suggestion("CT-HEAD-WO", "CT Head WO Contrast", 0.9)


def _decided(db, code="CT-HEAD-WO", actor=RAD, accession="A"):
    with db.session() as s:
        order = s.query(OrderRow).filter_by(accession=accession).one_or_none()
        if order is None:
            order = OrderRow(accession=accession, ordered_exam="CT HEAD", clinical_notes="", sex="F",
                             priority="ROUTINE", ordered_at=datetime(2026, 1, 1))
            s.add(order)
            s.flush()
        row = record_decision(s, actor, DecisionInput(order.id, code, TOP, "embedding/v1"))
        return order.id, row.id


def test_revert_returns_the_order_to_todo_audited(db):
    order_id, decision_id = _decided(db)
    with db.session() as s:
        assert current_decisions(s)[order_id].final_code == "CT-HEAD-WO"
        revert_decision(s, RAD, decision_id)
    with db.session() as s:
        assert s.get(OrderRow, order_id).status == "todo"
        assert latest_decisions(s) == [] and current_decisions(s) == {}
        event = audit.query_events(s, action="decision.revert")[-1]
        assert event.entity == "order:A" and event.username == "rad"
        assert event.details_dict == {"decision_id": decision_id, "final": "CT-HEAD-WO", "action": "accepted",
                                      "suggested": "CT-HEAD-WO", "decided_by": "rad"}
        assert audit.verify_chain(s).ok
    with db.session() as s, pytest.raises(RevertError, match="already back in To do"):
        revert_decision(s, RAD, decision_id)


def test_revert_is_role_checked_and_only_the_latest_own_decision(db):
    order_id, first = _decided(db)
    _, second = _decided(db, code="CT-HEAD-W")  # decided again
    with db.session() as s, pytest.raises(RevertError, match="decided again"):
        revert_decision(s, RAD, first)
    with db.session() as s, pytest.raises(PermissionDenied):
        revert_decision(s, AUD, second)
    with db.session() as s, pytest.raises(RevertError, match="made by rad"):
        revert_decision(s, RAD2, second)
    with db.session() as s:
        assert s.get(OrderRow, order_id).status == "done"  # nothing changed by the refusals
        assert audit.query_events(s, action="decision.revert") == []
        revert_decision(s, ADM, second)  # an admin may correct anyone's
    with db.session() as s:
        assert s.get(OrderRow, order_id).status == "todo"
    # decided once more: training sees only that answer
    _decided(db, code="MR-BRAIN-WO")
    with db.session() as s:
        assert [d.final_code for d in latest_decisions(s)] == ["MR-BRAIN-WO"]
