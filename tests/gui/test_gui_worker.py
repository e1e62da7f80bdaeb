"""The inference worker: the GUI thread stays responsive, the opened order jumps the queue,
failures are shown in the status bar and survived."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QElapsedTimer, Qt, QTimer  # noqa: E402
from support.gui import KeywordEngine, catalog_of, make_db, open_window, wait_all_suggested  # noqa: E402

from radassist.engines.base import EngineError  # noqa: E402

MANY = [{"accession": f"B{i:03d}", "ordered_exam": ["CT HEAD", "MRI KNEE", "US RUQ", "CT CHEST"][i % 4],
         "priority": ["STAT", "URGENT", "ROUTINE"][i % 3], "age": 20 + i, "sex": "F",
         "clinical_notes": "pain and swelling, rule out fracture or bleed", "ordered_at": f"2024-01-01T{i % 24:02d}:00:00Z"}
        for i in range(40)]


@pytest.mark.slow  # a second process or a timing measurement: seconds (make test runs it)
def test_heartbeat_keeps_firing_while_the_worker_computes(qtbot, tmp_path):
    db = make_db(tmp_path, MANY)
    catalog = catalog_of(db)
    # ~25 ms of GIL-holding Python work plus 10 ms of "model" per order
    window = open_window(qtbot, db, tmp_path, engine=lambda: KeywordEngine(catalog, busy_s=0.025, delay_s=0.01))
    beats = []
    clock = QElapsedTimer()
    clock.start()
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: beats.append(clock.elapsed()))
    timer.start()
    wait_all_suggested(qtbot, window, timeout=60000)
    timer.stop()
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    duration = beats[-1] - beats[0]
    assert duration > 500  # the worker really worked for a while
    assert len(beats) > duration / 10 / 4  # the GUI thread kept ticking (loose: timing lives in bench/)
    assert max(gaps) < 1000, max(gaps)
    assert window.worker.computed == len(MANY)


def test_opened_order_jumps_the_queue(qtbot, tmp_path):
    db = make_db(tmp_path, MANY)
    catalog = catalog_of(db)
    engine = KeywordEngine(catalog, delay_s=0.05)
    window = open_window(qtbot, db, tmp_path, engine=lambda: engine)
    qtbot.waitUntil(lambda: len(engine.calls) >= 1, timeout=10000)
    last = window.proxy.entry(window.proxy.rowCount() - 1)  # the last order of the worklist
    window.open_order(last.id)
    qtbot.waitUntil(lambda: window.order_view.prediction is not None, timeout=10000)
    position = next(i for i, call in enumerate(engine.calls) if last.accession in call)
    assert position <= 3, engine.calls[:6]
    assert window.order_view.order.accession == last.accession
    assert window.worker.pending() > 0  # the rest is still being computed in the background


def test_prediction_failure_is_shown_and_survived(qtbot, tmp_path):
    db = make_db(tmp_path)
    catalog = catalog_of(db)
    window = open_window(qtbot, db, tmp_path, engine=lambda: KeywordEngine(catalog, temperature=0.3,
                                                                          fail_accessions=["T3"]))
    qtbot.waitUntil(lambda: "T3" in window.last_error, timeout=10000)
    assert window.error_label.isVisible() and "T3" in window.error_label.text()
    # the others still got their suggestions and the worker is alive
    qtbot.waitUntil(lambda: all(e.suggestion_code for e in window.model.entries() if e.accession != "T3"))
    assert window.worker.isRunning()
    # T3 can still be protocoled by hand
    t3 = next(e for e in window.model.entries() if e.accession == "T3")
    window.open_order(t3.id)
    assert window.order_view.prediction is None
    window.order_view.start_search("knee")
    qtbot.keyClick(window.order_view.search, Qt.Key.Key_Return)
    assert window.model.entry_by_id(t3.id).status == "done"


def test_engine_that_fails_to_load_leaves_the_app_usable(qtbot, tmp_path):
    db = make_db(tmp_path)

    def broken():
        raise EngineError("weights not found")

    window = open_window(qtbot, db, tmp_path, engine=broken)
    qtbot.waitUntil(lambda: window.engine_state == "error", timeout=10000)
    assert "error" in window.engine_label.text()
    assert "weights not found" in window.last_error
    qtbot.waitUntil(lambda: window.order_view.order is not None)
    assert "unavailable" in window.order_view.pending.text()
    window.order_view.start_search("mrcp")
    qtbot.keyClick(window.order_view.search, Qt.Key.Key_Return)
    assert sum(e.status == "done" for e in window.model.entries()) == 1


def test_status_bar_shows_engine_version_device_and_state(qtbot, tmp_path):
    db = make_db(tmp_path)
    catalog = catalog_of(db)

    def slow():
        time.sleep(0.5)
        return KeywordEngine(catalog)

    window = open_window(qtbot, db, tmp_path, engine=slow)
    assert "loading" in window.engine_label.text()  # the window is up before the model
    qtbot.waitUntil(lambda: window.engine_state == "ready", timeout=10000)
    text = window.engine_label.text()
    assert "keyword" in text and "test-1" in text and "cpu" in text and "ready" in text
    assert "dr.test" in window.user_label.text()
    wait_all_suggested(qtbot, window)


@pytest.mark.slow  # a second process loading MiniLM: seconds (make test runs it)
def test_the_sites_engine_runs_in_a_process_of_its_own_and_ends_with_the_window(qtbot, tmp_path):
    """The app's default engine: built and run in a child process (its imports and Python never hold
    the GUI process's interpreter lock); closing the window ends it."""
    import os

    from radassist.engine_process import EngineProcess
    from radassist.gui.inference_worker import default_engine_factory

    db = make_db(tmp_path)
    window = open_window(qtbot, db, tmp_path, engine=default_engine_factory(db, "embedding"))
    wait_all_suggested(qtbot, window, timeout=120000)
    engine = window.worker.engine
    assert isinstance(engine, EngineProcess) and engine.pid != os.getpid() and engine.alive
    assert window.engine_info["model_id"].startswith("embedding/")
    assert window.order_view.prediction is not None and window.order_view.prediction.model == engine.model_id
    window.close()
    qtbot.waitUntil(lambda: not engine.alive, timeout=10000)


def test_an_engine_process_that_dies_is_reported_and_the_app_stays_usable(qtbot, tmp_path):
    import functools
    import os
    import signal

    from radassist.engine_process import EngineProcess

    db = make_db(tmp_path, MANY)
    catalog = catalog_of(db)
    window = open_window(qtbot, db, tmp_path,
                         engine=lambda: EngineProcess(functools.partial(KeywordEngine, catalog, delay_s=0.05)))
    qtbot.waitUntil(lambda: window.worker is not None and window.worker.computed >= 4, timeout=30000)
    os.kill(window.worker.engine.pid, signal.SIGKILL)  # out of memory, or killed by someone
    qtbot.waitUntil(lambda: window.engine_state == "error", timeout=10000)
    assert "engine stopped" in window.last_error and "killed" in window.last_error
    assert "error" in window.engine_label.text()
    waiting = next(e for e in window.model.entries() if e.status == "todo" and not e.suggestion_code)
    window.open_order(waiting.id)
    window.order_view.start_search("knee")
    qtbot.keyClick(window.order_view.search, Qt.Key.Key_Return)
    assert window.model.entry_by_id(waiting.id).status == "done"


@pytest.mark.slow  # engine processes loading MiniLM: seconds (make test runs it)
def test_the_engine_process_started_at_sign_in_is_the_one_the_window_uses(tmp_path):
    """run_gui starts the site's engine process when the sign-in dialog opens: the first engine the
    window asks for is that process (loaded meanwhile); a restart gets a new one; an unused one is ended."""
    from radassist.gui.inference_worker import prestarted_engine_factory

    db = make_db(tmp_path)
    factory = prestarted_engine_factory(db, "embedding")
    first = factory()
    try:
        assert first.alive and first.wait_ready() is first
        assert first.model_id.startswith("embedding/")
        second = factory()  # a restart after a settings change: a process of its own
        assert second.pid != first.pid
        second.close()
    finally:
        first.close()
    unused = prestarted_engine_factory(db, "embedding")
    unused.close_unused()  # sign-in cancelled, or an auditor: its process is ended
    later = unused()  # a window built anyway still gets an engine: a new process
    assert later.alive
    later.close()
    assert not later.alive
