"""An order re-sent with different content after its decision comes back to To do marked "amended after
decision", and the order view shows what changed (the importer / interface feed record the difference in
``order_amendments``; here it is recorded as they record it)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("PySide6")

from support.gui import make_db, open_window  # noqa: E402

from radassist.access import RADIOLOGIST, Actor  # noqa: E402
from radassist.gui.worklist_model import COL_EXAM  # noqa: E402
from radassist.store.models import OrderAmendmentRow, OrderRow, utcnow  # noqa: E402
from radassist.worklist import DecisionInput, record_decision  # noqa: E402
from radassist.worklist_queries import amendment_of  # noqa: E402

ORDER = {"accession": "AM1", "ordered_exam": "CT ABDOMEN", "priority": "URGENT", "age": 58, "sex": "F",
         "clinical_notes": "RLQ pain, r/o appendicitis", "patient_name": "Doe, Ann", "mrn": "M9",
         "ordered_at": "2024-01-01T08:00:00Z"}
NEW_NOTES = "RLQ pain, r/o appendicitis. Anaphylaxis to iodinated contrast."


def _decide_then_amend(db) -> int:
    with db.session() as s:
        order = s.query(OrderRow).filter_by(accession="AM1").one()
        record_decision(s, Actor("rad", RADIOLOGIST), DecisionInput(order.id, "CT-ABD-PEL-W"))
    with db.session() as s:  # what the feed does when the order is re-sent with new notes
        order = s.query(OrderRow).filter_by(accession="AM1").one()
        s.add(OrderAmendmentRow(order_id=order.id, amended_at=utcnow(), source="hl7", username="interface",
                                previous_status="done", after_decision=True,
                                changes_json=json.dumps({"clinical_notes": [order.clinical_notes, NEW_NOTES]}),
                                flags_before_json="[]", flags_after_json='["contrast-allergy"]'))
        order.clinical_notes, order.status = NEW_NOTES, "todo"
        return order.id


def test_amended_after_decision_shows_the_badge_and_the_difference(qtbot, tmp_path):
    db = make_db(tmp_path, [ORDER])
    order_id = _decide_then_amend(db)
    with db.session() as s:
        assert amendment_of(s, order_id).flags_added == ("contrast-allergy",)
    window = open_window(qtbot, db, tmp_path, start_worker=False)
    qtbot.waitUntil(lambda: window.order_view.order is not None and window.order_view.order.id == order_id)
    view = window.order_view
    assert view.amended.isVisible() and "Amended after decision" in view.amended.text()
    assert "Anaphylaxis" in view.amended.text() and "Contrast allergy" in view.amended.text()
    row = window.proxy.proxy_row_of(order_id)
    assert window.proxy.index(row, COL_EXAM).data().startswith("✎")


def test_the_badge_goes_once_the_order_is_decided_again(qtbot, tmp_path):
    db = make_db(tmp_path, [ORDER])
    order_id = _decide_then_amend(db)
    with db.session() as s:
        record_decision(s, Actor("rad", RADIOLOGIST), DecisionInput(order_id, "CT-ABD-PEL-WO"))
    with db.session() as s:
        assert amendment_of(s, order_id) is None
