"""Every text fits at 1366x768 and 1920x1080 (no sideways scrolling, the window keeps its size), and the
modality filter and sorting are reachable by keyboard (and listed in the shortcuts dialog)."""
from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from support.gui import make_db, open_window  # noqa: E402

from radassist.domain import Prediction, Suggestion  # noqa: E402
from radassist.gui.shortcuts_dialog import SHORTCUTS  # noqa: E402
from radassist.gui.worklist_model import (  # noqa: E402
    COL_ACCESSION, COL_CONFIDENCE, COL_PATIENT, COL_PRIORITY, COL_STATUS, COL_WAITING,
)


@pytest.mark.parametrize("size", [(1366, 768), (1920, 1080)])
def test_worklist_never_scrolls_sideways_and_the_window_keeps_its_size(qtbot, tmp_path, size):
    db = make_db(tmp_path)
    window = open_window(qtbot, db, tmp_path, start_worker=False)
    window.resize(*size)
    qtbot.waitUntil(lambda: window.order_view.order is not None)
    for status in ("todo", "done", "all"):
        window.set_status_filter(status)
        QApplication.processEvents()
        header = window.table.horizontalHeader()
        shown = sum(header.sectionSize(c) for c in range(header.count()) if not window.table.isColumnHidden(c))
        assert shown <= window.table.viewport().width() + 1
        assert window.table.horizontalScrollBar().maximum() == 0
    assert (window.width(), window.height()) == size  # nothing pushes the window past the screen
    window.order_view.add_protocol("CT-HEAD-WO")
    window.order_view.add_protocol("CTA-HEAD-NECK")
    window.order_view.start_search("head")
    QApplication.processEvents()
    assert (window.width(), window.height()) == size
    assert window.order_scroll.horizontalScrollBar().maximum() == 0


def test_a_long_row_of_flags_wraps_instead_of_widening_the_order_panel(qtbot, tmp_path):
    notes = ("Anaphylaxis to iodinated contrast. eGFR 22. 14 weeks pregnant. Pacemaker (not MR-conditional). "
             "On warfarin, INR 2.8. Takes metformin. Severe claustrophobia.")
    db = make_db(tmp_path, [{"accession": "F1", "ordered_exam": "CT ABDOMEN", "priority": "STAT", "age": 33,
                             "sex": "F", "clinical_notes": notes, "ordered_at": "2024-01-01T08:00:00Z"}])
    window = open_window(qtbot, db, tmp_path, start_worker=False)
    window.resize(1366, 768)
    qtbot.waitUntil(lambda: window.order_view.order is not None)
    QApplication.processEvents()
    assert window.order_view.flag_layout.count() >= 5
    assert window.order_scroll.horizontalScrollBar().maximum() == 0
    assert window.order_view.width() <= window.order_scroll.viewport().width()
    chips = [window.order_view.flag_layout.itemAt(i).widget() for i in range(window.order_view.flag_layout.count())]
    assert len({c.y() for c in chips}) > 1  # wrapped onto more than one line
    assert (window.width(), window.height()) == (1366, 768)


def test_columns_that_say_nothing_are_hidden_and_the_accession_only_where_there_is_room(qtbot, tmp_path):
    db = make_db(tmp_path)
    window = open_window(qtbot, db, tmp_path, start_worker=False)
    window.resize(1366, 768)
    QApplication.processEvents()
    window.set_status_filter("todo")
    assert window.table.isColumnHidden(COL_STATUS) and not window.table.isColumnHidden(COL_WAITING)
    assert window.table.isColumnHidden(COL_ACCESSION)  # in the patient's tooltip instead
    tip = window.proxy.index(0, COL_PATIENT).data(Qt.ItemDataRole.ToolTipRole)
    assert window.proxy.entry(0).accession in tip
    window.set_status_filter("done")
    assert not window.table.isColumnHidden(COL_STATUS) and window.table.isColumnHidden(COL_CONFIDENCE)
    window.resize(1920, 1080)
    QApplication.processEvents()
    window.set_status_filter("todo")
    assert not window.table.isColumnHidden(COL_ACCESSION)


def test_modality_filter_and_sort_by_keyboard(qtbot, tmp_path):
    db = make_db(tmp_path)
    window = open_window(qtbot, db, tmp_path, start_worker=False)
    qtbot.waitUntil(lambda: window.order_view.order is not None)
    window.activateWindow()
    window.focus_order()
    qtbot.keyClick(QApplication.focusWidget() or window.order_view, Qt.Key.Key_M,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: window.modality.view().isVisible(), timeout=3000)  # the list of modalities opens
    window.modality.hidePopup()
    assert QApplication.focusWidget() is window.modality
    qtbot.keyClick(window.modality, Qt.Key.Key_Down)       # "CT"
    assert window.modality.currentData() == "CT"
    assert {window.proxy.entry(r).modality for r in range(window.proxy.rowCount())} == {"CT"}

    def pick_waiting():
        menu = window.sort_menu
        assert menu.isVisible()
        menu.setActiveAction(window.sort_actions[COL_WAITING])
        qtbot.keyClick(menu, Qt.Key.Key_Return)

    QTimer.singleShot(0, pick_waiting)
    window.show_sort_menu()
    qtbot.waitUntil(lambda: window.table.horizontalHeader().sortIndicatorSection() == COL_WAITING)
    order = window.table.horizontalHeader().sortIndicatorOrder()
    window.sort_by(COL_WAITING)                             # the same column again reverses it
    assert window.table.horizontalHeader().sortIndicatorOrder() != order
    window.activateWindow()
    window.focus_worklist()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is window.table)
    qtbot.keyClick(window.table, Qt.Key.Key_D, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert window.table.horizontalHeader().sortIndicatorSection() == COL_PRIORITY
    keys = {k for _, items in SHORTCUTS for k, _ in items}
    assert {"Ctrl+Shift+M", "Ctrl+Shift+S", "Ctrl+Shift+D", "+", "Ctrl+R"} <= keys


@pytest.mark.parametrize("score", [0.9995, 1.0])
def test_a_score_that_rounds_to_100_reads_above_99_in_the_worklist(qtbot, tmp_path, score):
    """The worklist says what the order view says (">99%"), also for a stored score of exactly 1."""
    db = make_db(tmp_path)
    window = open_window(qtbot, db, tmp_path, start_worker=False)
    entry = window.proxy.entry(0)
    window.model.set_prediction(entry.id, Prediction(entry.accession, [Suggestion("CT-HEAD-WO", "CT Head", score)],
                                                     model="keyword/test-1"))
    assert window.proxy.index(window.proxy.proxy_row_of(entry.id), COL_CONFIDENCE).data() == ">99%"
