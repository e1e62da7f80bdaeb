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
