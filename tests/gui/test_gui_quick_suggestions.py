"""Suggestions appear fast: a quick engine suggests while the slow one (the LLM) loads, marked as such, with a
visible loading indicator; the slow engine's suggestions replace them. Orders that arrived while the app was
closed get suggestions at start, STAT first."""
from __future__ import annotations

import threading

import pytest

pytest.importorskip("PySide6")

from support.gui import KeywordEngine, catalog_of, make_db, open_window, wait_all_suggested  # noqa: E402


class SlowEngine(KeywordEngine):
    """Stands for the LLM: another model id, and loading takes until the test lets it finish."""

    name = "slowllm"


def test_quick_suggestions_while_the_llm_loads_then_replaced(qtbot, tmp_path):
    db = make_db(tmp_path)
    catalog = catalog_of(db)
    loaded = threading.Event()

    def slow_factory():
        loaded.wait(20)
        return SlowEngine(catalog, temperature=0.3)

    window = open_window(qtbot, db, tmp_path, engine=slow_factory, engine_label="llm",
                         quick_engine_factory=lambda: KeywordEngine(catalog, temperature=0.3))
    try:
        qtbot.waitUntil(lambda: window.order_view.prediction is not None, timeout=10000)
        view = window.order_view
        assert view.prediction.model == "keyword/test-1" and view.provisional
        assert "quick suggestion" in view.model_label.full_text() and "LLM loading" in view.model_label.full_text()
        assert window.load_bar.isVisible() and window.load_label.text().startswith("Loading the llm model…")
        qtbot.waitUntil(lambda: all(e.suggestion_code for e in window.model.entries()), timeout=10000)
    finally:
        loaded.set()
    qtbot.waitUntil(lambda: window.order_view.prediction.model == "slowllm/test-1", timeout=10000)
    assert not window.order_view.provisional and window.order_view.model_label.full_text() == "model slowllm/test-1"
    assert not window.load_bar.isVisible() and window.quick_worker is None
    qtbot.waitUntil(lambda: all(e.model_version == "slowllm/test-1" for e in window.model.entries()), timeout=10000)


def test_orders_imported_while_closed_get_suggestions_at_start_stat_first(qtbot, tmp_path):
    db = make_db(tmp_path)  # imported before any window exists: no suggestions stored yet
    catalog = catalog_of(db)
    engine = KeywordEngine(catalog, temperature=0.3)
    window = open_window(qtbot, db, tmp_path, engine=lambda: engine)
    wait_all_suggested(qtbot, window)
    swept = [a for call in engine.calls for a in call]
    assert set(swept) == {"T1", "T2", "T3", "T4"}
    assert swept[0] == "T2"  # the STAT order first (it is also the one opened)
