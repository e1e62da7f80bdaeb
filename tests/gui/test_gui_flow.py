"""Keyboard-only protocoling: accept, alternatives, type-ahead override, comment, needs review,
persistence across restart, window layout in QSettings."""
from __future__ import annotations

import sqlite3

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from support.gui import (  # noqa: E402
    KeywordEngine, catalog_of, decisions_by_accession, make_db, open_window, top_codes, ui_settings,
    wait_all_suggested,
)

from radassist.store import open_database  # noqa: E402

MODEL = "keyword/test-1"


def focused(window):
    return QApplication.focusWidget() or window.order_view


def press(qtbot, window, key, modifier=Qt.KeyboardModifier.NoModifier):
    qtbot.keyClick(focused(window), key, modifier)


def type_text(qtbot, window, text):
    for ch in text:
        qtbot.keyClicks(focused(window), ch)


def current_accession(window):
    return window.order_view.order.accession if window.order_view.order else None


def test_keyboard_flow_over_the_worklist_records_the_right_decisions(qtbot, tmp_path):
    db = make_db(tmp_path)
    window = open_window(qtbot, db, tmp_path)
    wait_all_suggested(qtbot, window)
    qtbot.waitUntil(lambda: window.order_view.prediction is not None
                    and window.order_view.prediction.model == MODEL)
    window.activateWindow()
    window.focus_order()

    assert current_accession(window) == "T2"  # STAT first
    assert window.order_view.selected == 0  # confident: top-1 pre-selected
    press(qtbot, window, Qt.Key.Key_Return)  # accept top-1
    assert current_accession(window) == "T3"  # the next to-do opened by itself
    qtbot.waitUntil(lambda: window.order_view.prediction is not None)
    press(qtbot, window, Qt.Key.Key_2)  # second suggestion
    assert current_accession(window) == "T4"
    type_text(qtbot, window, "mrcp")  # type-ahead override
    assert window.order_view.search.hasFocus() or focused(window) is window.order_view.search
    assert window.order_view.results.currentItem().data(Qt.ItemDataRole.UserRole) == "MRCP"
    press(qtbot, window, Qt.Key.Key_Return)
    assert current_accession(window) == "T1"
    press(qtbot, window, Qt.Key.Key_M, Qt.KeyboardModifier.ControlModifier)  # comment, then Enter
    assert focused(window) is window.order_view.comment
    type_text(qtbot, window, "on DOAC")
    press(qtbot, window, Qt.Key.Key_Return)
    assert window.order_view.order is None  # all protocoled

    got = decisions_by_accession(db)
    t2, t3, t1 = (top_codes(db, a, MODEL) for a in ("T2", "T3", "T1"))
    assert got["T2"][:4] == (t2[0], "accepted", t2[0], MODEL)
    assert got["T3"][:4] == (t3[1], "overridden", t3[0], MODEL)
    assert got["T4"][0] == "MRCP" and got["T4"][1] == ("accepted" if top_codes(db, "T4", MODEL)[0] == "MRCP"
                                                       else "overridden")
    assert got["T1"][:3] == (t1[0], "accepted", t1[0]) and got["T1"][4] == "on DOAC"
    assert all(v[5] is not None and v[5] >= 0 for v in got.values())  # time to decide recorded
    assert all(e.status == "done" for e in window.model.entries())


def test_override_via_type_ahead_by_indication_words(qtbot, tmp_path):
    db = make_db(tmp_path)
    window = open_window(qtbot, db, tmp_path)
    wait_all_suggested(qtbot, window)
    window.activateWindow()
    window.focus_order()
    assert current_accession(window) == "T2"
    type_text(qtbot, window, "head trau")  # indication words, not the code
    item = window.order_view.results.currentItem()
    assert item.data(Qt.ItemDataRole.UserRole) == "CT-HEAD-WO"
    press(qtbot, window, Qt.Key.Key_Escape)  # cancel: nothing recorded, back to the suggestions
    assert window.order_view.search.text() == "" and decisions_by_accession(db) == {}
    type_text(qtbot, window, "ct-head-w")
    press(qtbot, window, Qt.Key.Key_Down)  # pick the second result
    chosen = window.order_view.results.currentItem().data(Qt.ItemDataRole.UserRole)
    press(qtbot, window, Qt.Key.Key_Return)
    final, action, suggested, *_ = decisions_by_accession(db)["T2"]
    assert final == chosen and final.startswith("CT-HEAD-W")
    assert action == "overridden" and suggested == top_codes(db, "T2", MODEL)[0]


def test_low_confidence_needs_review_and_enter_does_not_accept(qtbot, tmp_path):
    db = make_db(tmp_path)
    catalog = catalog_of(db)
    window = open_window(qtbot, db, tmp_path, engine=lambda: KeywordEngine(catalog, temperature=50.0))
    wait_all_suggested(qtbot, window)
    qtbot.waitUntil(lambda: window.order_view.prediction is not None and window.order_view.prediction.model == MODEL)
    window.activateWindow()
    window.focus_order()
    view = window.order_view
    assert view.needs_review and view.selected is None and view.review.isVisible()
    assert "Needs review" in view.review.text()
    press(qtbot, window, Qt.Key.Key_Return)
    assert decisions_by_accession(db) == {} and current_accession(window) == "T2"
    press(qtbot, window, Qt.Key.Key_1)  # an explicit choice
    assert decisions_by_accession(db)["T2"][1] == "accepted"
    assert current_accession(window) == "T3"


def test_decisions_are_committed_before_the_row_shows_done_and_survive_restart(qtbot, tmp_path):
    db = make_db(tmp_path)
    window = open_window(qtbot, db, tmp_path)
    wait_all_suggested(qtbot, window)
    seen_in_db_when_done = []

    def on_change(top_left, bottom_right, roles=()):
        for row in range(top_left.row(), bottom_right.row() + 1):
            entry = window.model.entry(row)
            if entry.status == "done":
                with sqlite3.connect(db.path) as conn:  # an independent connection: committed data only
                    n = conn.execute("SELECT count(*) FROM decisions WHERE order_id = ?", (entry.id,)).fetchone()[0]
                seen_in_db_when_done.append((entry.accession, n))

    window.model.dataChanged.connect(on_change)
    window.activateWindow()
    window.focus_order()
    press(qtbot, window, Qt.Key.Key_Return)
    press(qtbot, window, Qt.Key.Key_Return)
    assert seen_in_db_when_done and all(n == 1 for _, n in seen_in_db_when_done)
    window.close()
    db.dispose()

    db2 = open_database(db.path)
    window2 = open_window(qtbot, db2, tmp_path)
    done = {e.accession for e in window2.model.entries() if e.status == "done"}
    assert done == {"T2", "T3"} == set(decisions_by_accession(db2))
    qtbot.waitUntil(lambda: current_accession(window2) == "T4")  # opens the first order still to do
    window2.set_status_filter("done")
    assert window2.proxy.rowCount() == 2


def test_window_layout_persists_in_qsettings(qtbot, tmp_path):
    db = make_db(tmp_path)
    settings = ui_settings(tmp_path)
    window = open_window(qtbot, db, tmp_path, settings=settings, start_worker=False)
    screen = window.screen().availableGeometry()  # the offscreen screen is small: stay inside it
    window.resize(min(1200, screen.width() - 20), min(800, screen.height() - 40))
    size = window.size()
    total = sum(window.splitter.sizes())
    window.splitter.setSizes([total - 330, 330])
    sizes = window.splitter.sizes()
    window.table.horizontalHeader().resizeSection(2, 222)
    window.close()
    assert settings.contains("main/splitter") and settings.contains("main/geometry")

    window2 = open_window(qtbot, db, tmp_path, settings=ui_settings(tmp_path), start_worker=False)
    # the offscreen screen (800 px) may be narrower than the window's minimum: Qt then clamps
    if size.width() <= screen.width() and size.height() <= screen.height():
        assert window2.size() == size
        assert window2.splitter.sizes() == sizes
    else:
        assert window2.splitter.sizes()[1] == pytest.approx(sizes[1], abs=60)
    assert window2.table.horizontalHeader().sectionSize(2) == 222


def test_shortcuts_dialog_lists_the_keys(qtbot, tmp_path):
    from radassist.gui.shortcuts_dialog import SHORTCUTS, ShortcutsDialog

    dialog = ShortcutsDialog()
    qtbot.addWidget(dialog)
    texts = [dialog.table.item(r, 0).text() for r in range(dialog.table.rowCount()) if dialog.table.item(r, 0)]
    for key in ("Enter", "1 / 2 / 3", "Ctrl+M", "F1"):
        assert key in texts
    assert sum(len(items) for _, items in SHORTCUTS) >= 15


def test_decision_against_a_flag_takes_one_more_key_and_is_stored_acknowledged(qtbot, tmp_path):
    import json as _json

    from sqlalchemy import select

    from radassist.store.models import DecisionRow, OrderRow

    orders = [{"accession": "K1", "ordered_exam": "CT CHEST", "priority": "STAT", "age": 72, "sex": "F",
               "clinical_notes": "Pulmonary embolism suspected, shortness of breath. eGFR 19, not on dialysis.",
               "patient_name": "Doe, Kay", "mrn": "K1", "ordered_at": "2024-01-01T08:00:00Z"}]
    db = make_db(tmp_path, orders=orders)
    window = open_window(qtbot, db, tmp_path)
    wait_all_suggested(qtbot, window)
    qtbot.waitUntil(lambda: window.order_view.prediction is not None)
    window.activateWindow()
    window.focus_order()
    view = window.order_view
    code = view.suggestions[0].code
    assert code == "CTA-CHEST-PE" and view.conflicts_for(code) == ("renal-impairment",)
    press(qtbot, window, Qt.Key.Key_1)
    assert view.conflict_banner.isVisible() and "eGFR 19" in view.conflict_banner.text()
    assert current_accession(window) == "K1"  # nothing decided yet
    press(qtbot, window, Qt.Key.Key_Escape)  # cancel: the banner goes, still nothing decided
    assert not view.conflict_banner.isVisible() and current_accession(window) == "K1"
    press(qtbot, window, Qt.Key.Key_1)
    press(qtbot, window, Qt.Key.Key_Return)  # the one extra key
    qtbot.waitUntil(lambda: current_accession(window) is None)
    with db.session() as s:
        row = s.scalars(select(DecisionRow).join(OrderRow).where(OrderRow.accession == "K1")).one()
        assert row.final_code == "CTA-CHEST-PE"
        assert _json.loads(row.acknowledged_conflicts) == ["renal-impairment"]
