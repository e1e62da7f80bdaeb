"""Issue 10, items 1, 2, 4, 7: browsing never decides, re-deciding asks, Ctrl+Z undoes (audited),
Done/All show the decision, a flags column, the next order is the top of the queue, sign-out goes
back to the sign-in dialog with the engine kept (pytest-qt, offscreen, real widgets, real SQLite)."""
from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox  # noqa: E402
from support.gui import (  # noqa: E402
    KeywordEngine, catalog_of, decisions_by_accession, make_db, open_window, wait_all_suggested,
)

from radassist import audit  # noqa: E402
from radassist.gui.worklist_model import COL_FLAGS, COL_STATUS, COL_SUGGESTION  # noqa: E402

CTRL = Qt.KeyboardModifier.ControlModifier


class FlaggingEngine(KeywordEngine):
    """The keyword engine with the flags assessed from the notes, as the real engines fill them in."""

    def predict_batch(self, orders, top_k: int = 3):
        from dataclasses import replace

        from radassist.flag_assessment import assess_order

        return [replace(p, flags=list(assess_order(o))) for p, o in zip(super().predict_batch(orders, top_k), orders)]


def focused(window):
    return QApplication.focusWidget() or window.order_view


def press(qtbot, window, key, modifier=Qt.KeyboardModifier.NoModifier):
    qtbot.keyClick(focused(window), key, modifier)


def current(window):
    return window.order_view.order.accession if window.order_view.order else None


def ready_window(qtbot, db, tmp_path, engine=None):
    window = open_window(qtbot, db, tmp_path, engine=engine)
    wait_all_suggested(qtbot, window)
    qtbot.waitUntil(lambda: window.order_view.prediction is not None)
    window.activateWindow()
    window.focus_order()
    return window


def answer_message_box(qtbot, seen, *, key=None, button=None):
    """Poll for the modal question box (its own event loop) and answer it by key or by button."""
    def poll():
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox) or not box.isVisible():
            QTimer.singleShot(20, poll)
            return
        seen.append(box.text())
        if button is not None:
            box.button(button).click()
        else:
            qtbot.keyClick(box, key)

    QTimer.singleShot(20, poll)


def row_of(window, accession):
    for r in range(window.proxy.rowCount()):
        if window.proxy.entry(r).accession == accession:
            return r
    return None


def cell(window, accession, col):
    return window.proxy.index(row_of(window, accession), col).data()


# --- (1) browsing never decides; re-deciding asks; undo -----------------------------------------

def test_reported_down_arrow_enter_sequence_decides_nothing_and_keeps_focus(qtbot, tmp_path):
    db = make_db(tmp_path)
    window = ready_window(qtbot, db, tmp_path)
    press(qtbot, window, Qt.Key.Key_Return)  # T2 accepted: one done order to browse later
    assert set(decisions_by_accession(db)) == {"T2"}
    before = decisions_by_accession(db)

    # To do list: the first Down opens the next order, but the focus stays in the worklist
    press(qtbot, window, Qt.Key.Key_L, CTRL)
    assert focused(window) is window.table
    for expected in ("T4", "T1"):
        press(qtbot, window, Qt.Key.Key_Down)
        assert current(window) == expected  # opened (viewed), not decided
        assert focused(window) is window.table
        assert window.order_view.selected == 0  # the suggestion highlight did not move either
    press(qtbot, window, Qt.Key.Key_Return)  # Enter in the worklist moves into the order, decides nothing
    assert focused(window) is window.order_view
    assert decisions_by_accession(db) == before

    # Done list: Ctrl+2, Ctrl+L, Down/Enter browse; Enter on the open done order asks, and a stray
    # Enter on the question (default No) keeps the earlier decision
    press(qtbot, window, Qt.Key.Key_2, CTRL)
    press(qtbot, window, Qt.Key.Key_L, CTRL)
    press(qtbot, window, Qt.Key.Key_Down)
    press(qtbot, window, Qt.Key.Key_Return)
    assert current(window) == "T2" and focused(window) is window.order_view
    seen: list = []
    answer_message_box(qtbot, seen, key=Qt.Key.Key_Return)
    press(qtbot, window, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: bool(seen))
    assert "Roe, Rick" in seen[0] and "already protocoled" in seen[0]
    assert decisions_by_accession(db) == before
    with db.session() as s:
        assert len(audit.query_events(s, action="decision.*")) == 1


def test_redeciding_a_done_order_replaces_it_only_after_yes(qtbot, tmp_path):
    db = make_db(tmp_path)
    window = ready_window(qtbot, db, tmp_path)
    press(qtbot, window, Qt.Key.Key_Return)  # T2
    t2 = window.model.entries()[[e.accession for e in window.model.entries()].index("T2")].id
    window.set_status_filter("done")
    window.open_order(t2)
    window.focus_order()
    seen: list = []
    answer_message_box(qtbot, seen, button=QMessageBox.StandardButton.Yes)
    press(qtbot, window, Qt.Key.Key_2)
    qtbot.waitUntil(lambda: decisions_by_accession(db)["T2"][1] == "overridden")
    assert seen and "Replace it with" in seen[0]


def test_ctrl_z_and_the_undo_button_revert_decisions_audited(qtbot, tmp_path):
    from radassist.worklist import latest_decisions

    db = make_db(tmp_path)
    window = ready_window(qtbot, db, tmp_path)
    press(qtbot, window, Qt.Key.Key_Return)  # T2 (Roe, Rick)
    press(qtbot, window, Qt.Key.Key_Return)  # T3 (Poe, Ed)
    assert current(window) == "T4"
    assert window.undo_box.isVisible()
    assert "Poe, Ed (T3)" in window.saved_label.full_text() and "accepted" in window.saved_label.full_text()

    press(qtbot, window, Qt.Key.Key_Z, CTRL)  # reverts T3, the last one
    status = {e.accession: e.status for e in window.model.entries()}
    assert status["T3"] == "todo" and status["T2"] == "done"
    assert current(window) == "T3"  # the reverted order is open again
    assert "Poe, Ed" in window.statusBar().currentMessage()
    window.undo_button.click()  # then T2
    assert {e.accession: e.status for e in window.model.entries()}["T2"] == "todo"
    assert not window.act_undo.isEnabled()
    press(qtbot, window, Qt.Key.Key_Z, CTRL)  # nothing left: nothing happens
    with db.session() as s:
        from radassist.store.models import OrderRow

        assert {o.accession: o.status for o in s.query(OrderRow)}["T3"] == "todo"
        assert latest_decisions(s) == []  # reverted decisions are no training data
        reverts = audit.query_events(s, action="decision.revert")
        assert [e.entity for e in reverts] == ["order:T3", "order:T2"]
        assert reverts[0].details_dict["action"] == "accepted" and reverts[0].username == "dr.test"
        assert audit.verify_chain(s).ok
    window.model.reload()  # what another workstation would see
    assert sum(e.status == "todo" for e in window.model.entries()) == 4


# --- (2) Done / All show the decision -----------------------------------------------------------

def test_done_and_all_lists_show_the_decided_protocol_and_how(qtbot, tmp_path):
    from radassist.gui.worklist_model import WorklistModel

    db = make_db(tmp_path)
    window = ready_window(qtbot, db, tmp_path)
    suggested_t3 = window.model.entry_by_id(
        next(e.id for e in window.model.entries() if e.accession == "T3")).suggestion_code
    press(qtbot, window, Qt.Key.Key_Return)  # T2 accepted
    for ch in "mrcp":  # T3 overridden
        qtbot.keyClicks(focused(window), ch)
    press(qtbot, window, Qt.Key.Key_Return)
    decided = decisions_by_accession(db)
    for status in ("done", "all"):
        window.set_status_filter(status)
        assert cell(window, "T2", COL_STATUS) == "Accepted"
        assert cell(window, "T2", COL_SUGGESTION) == decided["T2"][0]
        assert cell(window, "T3", COL_STATUS) == "Overridden"
        assert cell(window, "T3", COL_SUGGESTION) == "MRCP"
    tip = window.proxy.index(row_of(window, "T3"), COL_SUGGESTION).data(Qt.ItemDataRole.ToolTipRole)
    assert "MRCP" in tip and suggested_t3 in tip
    assert cell(window, "T4", COL_STATUS) == "To do"
    fresh = WorklistModel(db, poll_ms=60_000)  # the same from the database alone
    by_acc = {e.accession: e for e in fresh.entries()}
    assert (by_acc["T3"].decided_code, by_acc["T3"].decided_action) == ("MRCP", "overridden")
    assert (by_acc["T2"].decided_code, by_acc["T2"].decided_action) == (decided["T2"][0], "accepted")


# --- (4) flags column; next order = top of the queue --------------------------------------------

def test_flags_column_shows_the_stored_flags_with_tooltips(qtbot, tmp_path):
    from radassist.gui.worklist_model import FLAGS_ROLE, WorklistModel

    db = make_db(tmp_path)
    catalog = catalog_of(db)
    window = ready_window(qtbot, db, tmp_path, engine=lambda: FlaggingEngine(catalog, temperature=0.3))
    window.set_status_filter("all")
    qtbot.waitUntil(lambda: bool(cell(window, "T4", COL_FLAGS)))
    assert cell(window, "T4", COL_FLAGS) == "Cx"  # allergic to iodinated contrast
    assert cell(window, "T1", COL_FLAGS) == "Ac"  # on anticoagulation
    assert cell(window, "T3", COL_FLAGS) == ""
    tip = window.proxy.index(row_of(window, "T4"), COL_FLAGS).data(Qt.ItemDataRole.ToolTipRole)
    assert "Contrast allergy" in tip and "iodinated contrast" in tip
    assert window.proxy.index(row_of(window, "T4"), COL_FLAGS).data(FLAGS_ROLE) == [("Cx", "current")]
    fresh = WorklistModel(db, poll_ms=60_000)  # read back from the stored assessment
    assert [f.type for f in {e.accession: e for e in fresh.entries()}["T4"].flags] == ["contrast-allergy"]


def test_after_a_decision_the_top_of_the_queue_opens_not_the_next_row(qtbot, tmp_path):
    from radassist.gui.worklist_model import COL_PATIENT

    db = make_db(tmp_path)
    window = ready_window(qtbot, db, tmp_path)
    window.table.sortByColumn(COL_PATIENT, Qt.SortOrder.AscendingOrder)  # Doe, Moe, Poe, Roe
    window.open_order(next(e.id for e in window.model.entries() if e.accession == "T1"))  # Doe, ROUTINE
    window.focus_order()
    press(qtbot, window, Qt.Key.Key_Return)
    assert current(window) == "T2"  # the STAT order, not the next row (Moe, T4)
    press(qtbot, window, Qt.Key.Key_Return)
    assert current(window) == "T3"  # then the URGENT one
    press(qtbot, window, Qt.Key.Key_Return)
    assert current(window) == "T4"
