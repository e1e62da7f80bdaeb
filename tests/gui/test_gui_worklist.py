"""Worklist model and proxy: Qt model contract, worklist order, filters, new orders from another process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from support.gui import ORDERS, WORKLIST_ORDER, make_db, open_window, wait_all_suggested  # noqa: E402

from radassist.gui.worklist_model import (  # noqa: E402
    COL_PRIORITY, HEADERS, WorklistModel, WorklistProxy, format_waiting, modality_of,
)


def test_model_passes_qt_model_tester(qtmodeltester, tmp_path):
    db = make_db(tmp_path)
    model = WorklistModel(db, poll_ms=60_000)
    assert model.rowCount() == len(ORDERS)
    assert model.columnCount() == len(HEADERS) == 10  # with the flags column
    qtmodeltester.check(model)
    proxy = WorklistProxy()
    proxy.setSourceModel(model)
    proxy.sort(COL_PRIORITY)
    qtmodeltester.check(proxy)


def test_proxy_sorts_stat_first_then_oldest_and_filters(qtbot, tmp_path):
    db = make_db(tmp_path)
    model = WorklistModel(db, poll_ms=60_000)
    proxy = WorklistProxy()
    proxy.setSourceModel(model)
    proxy.sort(COL_PRIORITY)
    assert [proxy.entry(r).accession for r in range(proxy.rowCount())] == WORKLIST_ORDER
    proxy.set_modality_filter("MR")
    assert [proxy.entry(r).accession for r in range(proxy.rowCount())] == ["T3"]
    proxy.set_modality_filter("")
    proxy.set_text_filter("roe")  # patient name
    assert [proxy.entry(r).accession for r in range(proxy.rowCount())] == ["T2"]
    proxy.set_text_filter("M4")  # MRN
    assert [proxy.entry(r).accession for r in range(proxy.rowCount())] == ["T4"]
    proxy.set_text_filter("")
    model.mark_done(model.entries()[0].id)
    assert proxy.rowCount() == 3
    proxy.set_status_filter("done")
    assert proxy.rowCount() == 1
    proxy.set_status_filter("all")
    assert proxy.rowCount() == 4


def test_helpers():
    assert modality_of("MRI BRAIN") == "MR"
    assert modality_of("CTA HEAD AND NECK") == "CT"
    assert modality_of("US RUQ") == "US"
    assert modality_of("PET CT") == "PET"
    assert modality_of("Brain scan") == ""
    from datetime import datetime, timedelta

    now = datetime(2024, 1, 1, 12, 0)
    assert format_waiting(now - timedelta(minutes=5), now) == "5 min"
    assert format_waiting(now - timedelta(minutes=125), now) == "2 h 05"


@pytest.mark.slow  # a second process or a timing measurement: seconds (make test runs it)
def test_orders_imported_by_another_process_appear_and_get_suggestions(qtbot, tmp_path):
    db = make_db(tmp_path)
    window = open_window(qtbot, db, tmp_path, poll_ms=200)
    wait_all_suggested(qtbot, window)
    new = {"accession": "NEW1", "ordered_exam": "CT HEAD", "priority": "STAT", "age": 60, "sex": "M",
           "clinical_notes": "Sudden headache, worst of life", "ordered_at": "2024-01-01T05:00:00Z"}
    path = tmp_path / "new.jsonl"
    path.write_text(json.dumps(new) + "\n")
    radassist = Path(sys.executable).with_name("radassist")
    from support.accounts import service_key_file

    key = service_key_file(db, tmp_path)
    result = subprocess.run([str(radassist), "import", str(path), "--db", str(db.path), "--key-file", str(key)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    qtbot.waitUntil(lambda: any(e.accession == "NEW1" for e in window.model.entries()), timeout=10000)
    # STAT and oldest: first in the worklist, and the worker computes it too
    assert window.proxy.entry(0).accession == "NEW1"
    qtbot.waitUntil(lambda: bool(window.model.entry_by_id(window.proxy.entry(0).id).suggestion_code), timeout=10000)
