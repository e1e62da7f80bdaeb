"""Multi-protocol decisions and return to referrer (core): stored in order, audited, conflicts over every
protocol, training reads only the primary code, a returned order feeds nothing and undo works for it."""
import json
from datetime import datetime

import pytest

from radassist import audit
from radassist.access import AUDITOR, RADIOLOGIST, Actor, PermissionDenied
from radassist.domain import Suggestion
from radassist.store import OrderRow
from radassist.store.models import DecisionRow
from radassist.training.dataset import decision_examples
from radassist.worklist import (
    MAX_QUESTION, ConflictNotAcknowledged, DecisionError, DecisionInput, current_decisions, decision_codes,
    decision_conflicts, latest_decisions, record_decision, return_to_referrer, revert_decision,
)
from radassist.worklist_queries import order_details, worklist_entries

RAD = Actor("rad", RADIOLOGIST)
TOP = Suggestion("CT-HEAD-WO", "CT Head WO Contrast", 0.9)
STROKE = ("CT-HEAD-WO", "CTA-HEAD-NECK", "CT-PERF-HEAD")


def _order(db, accession="S1", notes="Code stroke, left sided weakness onset 40 minutes ago", exam="CT HEAD"):
    with db.session() as s:
        order = OrderRow(accession=accession, ordered_exam=exam, clinical_notes=notes, sex="M", age=71,
                         priority="STAT", ordered_at=datetime(2026, 1, 1), patient_name="Stroke, Sam")
        s.add(order)
        s.flush()
        return order.id


def test_stroke_codes_exist_in_the_catalog(catalog):
    codes = {p.code for p in catalog}
    assert set(STROKE) <= codes


def test_multi_protocol_decision_stores_all_in_order_and_is_audited(db):
    order_id = _order(db)
    with db.session() as s:
        row = record_decision(s, RAD, DecisionInput(order_id, STROKE[0], TOP, "embedding/v1",
                                                    additional_codes=STROKE[1:]))
        assert decision_codes(row) == STROKE
    with db.session() as s:
        summary = current_decisions(s)[order_id]
        assert summary.codes == STROKE and summary.label() == "CT-HEAD-WO +2" and summary.action == "accepted"
        event = audit.query_events(s, action="decision.accept")[-1]
        assert event.details_dict["final"] == "CT-HEAD-WO"
        assert event.details_dict["additional"] == ["CTA-HEAD-NECK", "CT-PERF-HEAD"]
        entry = next(e for e in worklist_entries(s, None) if e.id == order_id)
        assert entry.decided_label == "CT-HEAD-WO +2" and entry.decided_extra == STROKE[1:]
        details, _ = order_details(s, RAD, order_id)
        assert details.decided_codes == STROKE


def test_training_uses_only_the_primary_protocol(db):
    order_id = _order(db)
    with db.session() as s:
        record_decision(s, RAD, DecisionInput(order_id, STROKE[0], TOP, "embedding/v1", additional_codes=STROKE[1:]))
    with db.session() as s:
        examples, _, _ = decision_examples(s)
        assert [ex.code for _, ex in examples] == ["CT-HEAD-WO"]


@pytest.mark.parametrize("codes, message", [
    (("CT-HEAD-WO", "CT-HEAD-WO"), "twice"),
    (("CT-HEAD-WO", "CTA-HEAD-NECK", "CT-PERF-HEAD", "MR-BRAIN-WO"), "at most 3"),
    (("CT-HEAD-WO", "NOT-A-CODE"), "not in the catalog"),
])
def test_bad_protocol_lists_are_refused_and_nothing_is_stored(db, codes, message):
    order_id = _order(db)
    with db.session() as s:
        with pytest.raises(DecisionError, match=message):
            record_decision(s, RAD, DecisionInput(order_id, codes[0], TOP, additional_codes=codes[1:]))
    with db.session() as s:
        assert s.query(DecisionRow).count() == 0 and s.get(OrderRow, order_id).status == "todo"


def test_flag_conflicts_apply_to_every_protocol_of_the_decision(db):
    order_id = _order(db, notes="Code stroke. Anaphylaxis to iodinated contrast in 2019.")
    with db.session() as s:
        order = s.get(OrderRow, order_id)
        assert decision_conflicts(s, order, "CT-HEAD-WO") == ()  # no contrast
        assert "contrast-allergy" in decision_conflicts(s, order, STROKE)  # the CTA and perfusion have some
        with pytest.raises(ConflictNotAcknowledged) as info:
            record_decision(s, RAD, DecisionInput(order_id, "CT-HEAD-WO", TOP, additional_codes=("CTA-HEAD-NECK",)))
        assert info.value.conflicts == ("contrast-allergy",)
    with db.session() as s:
        row = record_decision(s, RAD, DecisionInput(order_id, "CT-HEAD-WO", TOP, additional_codes=("CTA-HEAD-NECK",),
                                                    acknowledged=("contrast-allergy",)))
        assert row.acknowledged_conflicts == '["contrast-allergy"]'


def test_return_to_referrer_is_its_own_outcome_audited_without_the_text(db):
    order_id = _order(db)
    question = "Which side is weak? Notes say left, the request says right."
    with db.session() as s:
        row = return_to_referrer(s, RAD, order_id, question, suggested=TOP, model_version="embedding/v1")
        assert row.action == "returned" and row.final_code == "" and decision_codes(row) == ()
    with db.session() as s:
        assert s.get(OrderRow, order_id).status == "returned"
        summary = current_decisions(s)[order_id]
        assert summary.label() == "Returned" and summary.question == question
        assert latest_decisions(s) == []  # feeds no training
        assert decision_examples(s)[0] == []
        event = audit.query_events(s, action="decision.return")[-1]
        assert event.entity == "order:S1" and event.details_dict["question_chars"] == len(question)
        assert "side" not in json.dumps(event.details_dict)
        entry = next(e for e in worklist_entries(s, None) if e.id == order_id)
        assert entry.status == "returned" and entry.decided_label == "Returned" and entry.question == question


def test_undo_brings_a_returned_order_back(db):
    order_id = _order(db)
    with db.session() as s:
        decision_id = return_to_referrer(s, RAD, order_id, "Please confirm the clinical question").id
    with db.session() as s:
        revert_decision(s, RAD, decision_id)
    with db.session() as s:
        assert s.get(OrderRow, order_id).status == "todo" and current_decisions(s) == {}
        assert audit.query_events(s, action="decision.revert")[-1].details_dict["action"] == "returned"


@pytest.mark.parametrize("question", ["", "   ", "x" * (MAX_QUESTION + 1)])
def test_return_needs_a_short_question(db, question):
    order_id = _order(db)
    with db.session() as s:
        with pytest.raises(DecisionError):
            return_to_referrer(s, RAD, order_id, question)
    with db.session() as s:
        assert s.get(OrderRow, order_id).status == "todo"


def test_return_is_role_checked(db):
    order_id = _order(db)
    with db.session() as s:
        with pytest.raises(PermissionDenied):
            return_to_referrer(s, Actor("aud", AUDITOR), order_id, "Why?")


def test_a_returned_order_can_be_protocoled_later(db):
    order_id = _order(db)
    with db.session() as s:
        return_to_referrer(s, RAD, order_id, "Please confirm onset time")
    with db.session() as s:
        record_decision(s, RAD, DecisionInput(order_id, "CT-HEAD-WO", TOP))
    with db.session() as s:
        assert s.get(OrderRow, order_id).status == "done"
        assert [d.final_code for d in latest_decisions(s)] == ["CT-HEAD-WO"]


def test_a_returned_interface_order_sends_no_protocol_result(db):
    from sqlalchemy import select

    from radassist.interop.outbox import Destination, enqueue_decisions
    from radassist.interop.receiver import HL7Receiver
    from support.mllp import order_message

    receiver = HL7Receiver(db)
    assert receiver.handle(order_message(1, "ORM^O01", "2.3")).code == "AA"
    with db.session() as s:
        order_id = s.scalar(select(OrderRow.id).where(OrderRow.accession == "ACC000001"))
        return_to_referrer(s, RAD, order_id, "Please give the clinical question")
    dest = Destination("mllp", host="127.0.0.1", port=1, facility="RADDEPT")
    with db.session() as s:
        assert enqueue_decisions(s, dest) == 0  # nothing to send: no protocol was decided
    with db.session() as s:
        record_decision(s, RAD, DecisionInput(order_id, "CT-HEAD-WO"))  # protocoled after the answer
    with db.session() as s:
        assert enqueue_decisions(s, dest) == 1
