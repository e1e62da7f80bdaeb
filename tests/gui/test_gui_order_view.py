"""The order view explains its suggestions: why, the flags each goes against or respects, and
flag chips with severity and status (resolved ones muted)."""
from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from radassist.catalog import default_catalog  # noqa: E402
from radassist.domain import Prediction, SafetyFlag, Suggestion  # noqa: E402
from radassist.gui.order_view import OrderDetails, OrderView  # noqa: E402

NOTES = "Suspected PE, HR 112. eGFR 19, not on dialysis. Iodine allergy clarified: rash to betadine only."


def _order():
    return OrderDetails(1, "V1", "CT CHEST", NOTES, "STAT", 72, "F", "Doe, Kay", "M1", "", None, "todo")


def test_suggestions_show_why_and_the_flags_they_go_against_or_respect(qtbot):
    view = OrderView(default_catalog())
    qtbot.addWidget(view)
    flags = [SafetyFlag("renal-impairment", "eGFR 19", 20, 27, "impaired", "active"),
             SafetyFlag("contrast-allergy", "Iodine allergy", 49, 63, "mild", "resolved", "iodinated")]
    pred = Prediction("V1", [Suggestion("NM-VQ", "NM Lung Ventilation Perfusion", 0.9, (), ("Suspected PE",)),
                             Suggestion("CTA-CHEST-PE", "CTA Chest Pulmonary Embolism", 0.08, ("renal-impairment",),
                                        ("Suspected PE",))], flags, "embedding/t")
    view.show_order(_order(), pred)
    first, second = view.rows[0], view.rows[1]
    assert "Suspected PE" in first.detail.full_text() and "safe with renal impairment" in first.detail.full_text()
    assert "against renal impairment" in second.detail.full_text()
    chips = [view.flag_layout.itemAt(i).widget() for i in range(view.flag_layout.count())
             if view.flag_layout.itemAt(i).widget() is not None]
    texts = {c.text(): c.objectName() for c in chips}
    assert texts["⚠ Renal impairment · impaired"] == "flagChip"
    assert texts["✓ Contrast allergy · mild, resolved"] == "flagChipMuted"  # resolved: muted, still shown
    assert "eGFR 19" in next(c for c in chips if "Renal" in c.text()).toolTip()


def test_engine_review_reason_blocks_pre_selection(qtbot):
    view = OrderView(default_catalog(), confidence_threshold=0.5)
    qtbot.addWidget(view)
    pred = Prediction("V1", [Suggestion("CTA-CHEST-PE", "CTA Chest Pulmonary Embolism", 0.51),
                             Suggestion("NM-VQ", "NM Lung Ventilation Perfusion", 0.48)], [], "embedding/t",
                      review=True, review_reason="two protocols nearly tied")
    view.show_order(_order(), pred)
    assert view.needs_review and view.selected is None


def _boy():
    return OrderDetails(2, "V2", "US", "16 year old boy, sudden left testicular pain, r/o torsion", "STAT", 16, "M",
                        "Roe, Tim", "M2", "", None, "todo")


def test_type_ahead_never_offers_protocols_impossible_for_the_patient(qtbot):
    view = OrderView(default_catalog())
    qtbot.addWidget(view)
    view.show_order(_boy(), None)
    view.search.setText("torsion")
    codes = [view.results.item(i).data(0x0100) for i in range(view.results.count())]
    assert codes[0] == "US-SCROTUM"
    assert "US-PELVIS-TV" not in codes  # female pelvis: never for a boy
    girl = OrderDetails(3, "V3", "US", "r/o ovarian torsion", "STAT", 16, "F", "Roe, Tia", "M3", "", None, "todo")
    view.show_order(girl, None)
    view.search.setText("torsion")
    codes = [view.results.item(i).data(0x0100) for i in range(view.results.count())]
    assert "US-PELVIS-TV" in codes and "US-SCROTUM" not in codes


def test_type_ahead_lists_enough_rows_without_a_horizontal_scrollbar(qtbot):
    view = OrderView(default_catalog())
    qtbot.addWidget(view)
    view.resize(520, 760)
    view.show()
    view.show_order(_boy(), None)
    view.search.setText("ct")
    qtbot.waitUntil(lambda: view.results.isVisible())
    assert view.results.horizontalScrollBar().isHidden() or not view.results.horizontalScrollBar().isVisible()
    row_h = view.results.sizeHintForRow(0)
    assert view.results.viewport().height() >= 6 * row_h
