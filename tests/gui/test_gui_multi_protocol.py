"""Multi-protocol orders (+ adds a protocol, Enter saves all) and return to referrer (Ctrl+R), by keyboard."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from support.gui import make_db, open_window  # noqa: E402

from radassist.gui.return_dialog import ReturnDialog  # noqa: E402
from radassist.gui.worklist_model import COL_STATUS, COL_SUGGESTION  # noqa: E402
from radassist.store.models import DecisionRow, OrderRow  # noqa: E402

STROKE = [
    {"accession": "S1", "ordered_exam": "CT HEAD", "priority": "STAT", "age": 71, "sex": "M",
     "clinical_notes": "Code stroke, left arm weakness and facial droop since 07:40", "patient_name": "Stroke, Sam",
     "mrn": "M1", "ordered_at": "2024-01-01T08:00:00Z"},
    {"accession": "S2", "ordered_exam": "CT HEAD", "priority": "ROUTINE", "age": 64, "sex": "F",
     "clinical_notes": "Headache. Anaphylaxis to iodinated contrast in 2019.", "patient_name": "Allergy, Ann",
     "mrn": "M2", "ordered_at": "2024-01-01T09:00:00Z"},
]


def focused(window):
    return QApplication.focusWidget() or window.order_view


def keys(qtbot, window, text):
    for ch in text:
        qtbot.keyClicks(focused(window), ch)


def press(qtbot, window, key, modifier=Qt.KeyboardModifier.NoModifier):
    qtbot.keyClick(focused(window), key, modifier)


def ready(qtbot, window, accession):
    qtbot.waitUntil(lambda: window.order_view.order is not None and window.order_view.order.accession == accession
                    and window.order_view.prediction is not None, timeout=15000)
    window.activateWindow()
    window.focus_order()


def stored(db, accession):
    with db.session() as s:
        order = s.query(OrderRow).filter_by(accession=accession).one()
        rows = s.query(DecisionRow).filter_by(order_id=order.id).order_by(DecisionRow.id).all()
        return order.status, [(r.final_code, json.loads(r.additional_codes), r.action, r.question,
                               json.loads(r.acknowledged_conflicts)) for r in rows]


def test_plus_adds_protocols_and_enter_saves_them_all_in_order(qtbot, tmp_path):
    db = make_db(tmp_path, STROKE)
    window = open_window(qtbot, db, tmp_path)
    ready(qtbot, window, "S1")
    keys(qtbot, window, "ct-head-wo")
    assert window.order_view.results.currentItem().data(Qt.ItemDataRole.UserRole) == "CT-HEAD-WO"
    press(qtbot, window, Qt.Key.Key_Plus)                  # first protocol added, nothing saved
    assert window.order_view.plan == ["CT-HEAD-WO"] and stored(db, "S1") == ("todo", [])
    assert window.order_view.plan_label.isVisible() and "CT-HEAD-WO" in window.order_view.plan_label.text()
    keys(qtbot, window, "cta-head")
    press(qtbot, window, Qt.Key.Key_Plus)
    keys(qtbot, window, "ct-perf")
    press(qtbot, window, Qt.Key.Key_Plus)
    assert window.order_view.plan == ["CT-HEAD-WO", "CTA-HEAD-NECK", "CT-PERF-HEAD"]
    keys(qtbot, window, "mr-brain")
    press(qtbot, window, Qt.Key.Key_Plus)                  # a fourth is refused
    assert len(window.order_view.plan) == 3
    window.order_view.cancel_search()
    press(qtbot, window, Qt.Key.Key_Return)                # Enter saves the three
    status, rows = stored(db, "S1")
    assert status == "done"
    assert rows[0][:2] == ("CT-HEAD-WO", ["CTA-HEAD-NECK", "CT-PERF-HEAD"])
    assert "CT-HEAD-WO + CTA-HEAD-NECK + CT-PERF-HEAD" in window.saved_label.full_text()
    window.set_status_filter("done")
    row = window.proxy.proxy_row_of(window.model.entry_by_id(_id(db, "S1")).id)
    assert window.proxy.index(row, COL_SUGGESTION).data() == "CT-HEAD-WO +2"
    tip = window.proxy.index(row, COL_SUGGESTION).data(Qt.ItemDataRole.ToolTipRole)
    assert "CT-HEAD-WO + CTA-HEAD-NECK + CT-PERF-HEAD" in tip


def _id(db, accession):
    with db.session() as s:
        return s.query(OrderRow).filter_by(accession=accession).one().id


def test_backspace_removes_the_last_added_and_a_number_key_adds_the_last_and_saves(qtbot, tmp_path):
    db = make_db(tmp_path, STROKE)
    window = open_window(qtbot, db, tmp_path)
    ready(qtbot, window, "S1")
    first = window.order_view.suggestions[0].code
    press(qtbot, window, Qt.Key.Key_Plus)                  # the selected (top-1) suggestion
    assert window.order_view.plan == [first]
    keys(qtbot, window, "mr-brain-wo")
    press(qtbot, window, Qt.Key.Key_Plus)
    press(qtbot, window, Qt.Key.Key_Backspace)
    assert window.order_view.plan == [first]
    second = window.order_view.suggestions[1].code
    press(qtbot, window, Qt.Key.Key_2)                     # adds suggestion 2 as the last one and saves
    assert stored(db, "S1")[1][0][:2] == (first, [second])


def test_conflicts_of_every_protocol_need_the_extra_key(qtbot, tmp_path):
    db = make_db(tmp_path, STROKE)
    window = open_window(qtbot, db, tmp_path)
    qtbot.waitUntil(lambda: window.order_view.prediction is not None, timeout=15000)
    window.open_order(_id(db, "S2"))
    ready(qtbot, window, "S2")
    keys(qtbot, window, "ct-head-wo")
    press(qtbot, window, Qt.Key.Key_Plus)
    keys(qtbot, window, "cta-head")
    press(qtbot, window, Qt.Key.Key_Return)                # the CTA goes against the allergy
    assert window.order_view.conflict_banner.isVisible()
    assert "CT-HEAD-WO + CTA-HEAD-NECK" in window.order_view.conflict_banner.text()
    assert stored(db, "S2") == ("todo", [])
    press(qtbot, window, Qt.Key.Key_Return)                # acknowledged
    status, rows = stored(db, "S2")
    assert status == "done" and rows[0][1] == ["CTA-HEAD-NECK"] and rows[0][4] == ["contrast-allergy"]


def test_return_to_referrer_by_keyboard_shows_returned_and_undo_brings_it_back(qtbot, tmp_path):
    db = make_db(tmp_path, STROKE)
    window = open_window(qtbot, db, tmp_path)
    ready(qtbot, window, "S1")

    def answer():
        dialog = window.return_dialog
        assert not dialog.ok.isEnabled()                   # a question is required
        qtbot.keyClicks(dialog.text, "Which side is weak?")
        assert dialog.ok.isEnabled()
        qtbot.keyClick(dialog.text, Qt.Key.Key_Return)     # Enter sends

    QTimer.singleShot(0, answer)
    press(qtbot, window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    status, rows = stored(db, "S1")
    assert status == "returned" and rows[0][0] == "" and rows[0][2] == "returned"
    assert rows[0][3] == "Which side is weak?"
    assert window.order_view.order.accession == "S2"        # the next order opened
    entry = window.model.entry_by_id(_id(db, "S1"))
    assert window.proxy.proxy_row_of(entry.id) is None      # left To do
    window.set_status_filter("done")
    row = window.proxy.proxy_row_of(entry.id)
    assert window.proxy.index(row, COL_STATUS).data() == "Returned"
    assert window.proxy.index(row, COL_SUGGESTION).data() == "Returned"
    assert "Which side is weak?" in window.proxy.index(row, COL_SUGGESTION).data(Qt.ItemDataRole.ToolTipRole)
    window.set_status_filter("todo")
    assert window.undo_last_decision()
    assert stored(db, "S1")[0] == "todo" and window.order_view.order.accession == "S1"


def test_return_dialog_refuses_empty_and_over_500_characters(qtbot):
    dialog = ReturnDialog("Doe, Jane (T1)", "CT HEAD")
    qtbot.addWidget(dialog)
    assert not dialog.ok.isEnabled()
    dialog.text.setPlainText("   ")
    assert not dialog.ok.isEnabled()
    dialog.text.setPlainText("x" * 501)
    assert not dialog.ok.isEnabled() and "too long" in dialog.counter.text()
    dialog.accept()
    assert dialog.result() == 0
    dialog.text.setPlainText("Please confirm the side.")
    assert dialog.ok.isEnabled() and dialog.question() == "Please confirm the side."
