"""Retraining and settings panels (pytest-qt): a real embedding training in a QProcess, comparison,
promotion gate, cancel, crash, busy; admin-only panels; the main window picks up promotions."""
from __future__ import annotations

import os
import signal

import pytest

pytest.importorskip("PySide6")

from PySide6.QtWidgets import QMessageBox  # noqa: E402
from support.gui import open_window  # noqa: E402
from support.retraining import ADMIN_ACTOR, RAD_ACTOR, register_run, seed_decisions  # noqa: E402

from radassist import registry  # noqa: E402
from radassist.access import PermissionDenied  # noqa: E402


class FakeWindow:
    def __init__(self):
        self.restarts = 0

    def restart_engine(self):
        self.restarts += 1


@pytest.fixture
def no_dialogs(monkeypatch):
    shown = []
    for name in ("warning", "critical", "information"):
        monkeypatch.setattr(QMessageBox, name, staticmethod(lambda *a, _n=name, **k: shown.append((_n, a[2]))))
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.StandardButton.Yes))
    return shown


def panel_for(qtbot, db, tmp_path, window=None):
    from radassist.gui.retraining_panel import RetrainingPanel

    panel = RetrainingPanel(db, ADMIN_ACTOR, window, extra_args=["--out", str(tmp_path / "models")])
    qtbot.addWidget(panel)
    panel.engine.setCurrentIndex(panel.engine.findData("embedding"))
    panel.replay.setValue(3)
    return panel


def test_panels_refuse_a_radiologist(db):
    from radassist.gui.retraining_panel import RetrainingPanel
    from radassist.gui.settings_panel import SettingsPanel

    with pytest.raises(PermissionDenied):
        RetrainingPanel(db, RAD_ACTOR)
    with pytest.raises(PermissionDenied):
        SettingsPanel(db, RAD_ACTOR)


@pytest.mark.slow
def test_embedding_training_in_a_qprocess_to_promotion(qtbot, db, tmp_path, no_dialogs):
    from radassist.engines import create_site_engine
    from radassist.gui.retraining_panel import passes_gate

    seed_decisions(db, tmp_path, per_protocol=8, override={"CT-LSPINE-WO": "MR-LSPINE-WO"})
    window = FakeWindow()
    panel = panel_for(qtbot, db, tmp_path, window)
    panel.show()
    assert "8" in panel.counts_label.text() and panel.overrides_table.rowCount() == 1
    assert panel.overrides_table.item(0, 0).text() == "MR-LSPINE-WO"
    before, _ = create_site_engine(db, "embedding")
    assert panel.start()
    assert not panel.start_button.isEnabled() and panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: panel.final_status is not None, timeout=120_000)
    assert panel.final_status == registry.CANDIDATE, panel.log.toPlainText()
    assert panel.chart.points and panel.progress.value() == panel.progress.maximum()
    assert "%" in panel.comparison.item(0, 1).text() and "Protocols better" in panel.changes_label.text()
    log_text = panel.log_path.read_text()
    assert "fitting the embedding head" in log_text
    with db.session() as session:
        assert registry.get_version(session, panel.version).log_path == str(panel.log_path)
    cmp = panel.comparison_data
    assert panel.promote_button.isEnabled() == passes_gate(cmp, panel.site.promotion_gate)[0]
    # the gate: a candidate 5 points worse is blocked at gate 0.02 and allowed at 0.1
    worse = {**cmp, "candidate": {**cmp["candidate"], "top1": cmp["active"]["top1"] - 0.05}}
    assert not passes_gate(worse, 0.02)[0] and passes_gate(worse, 0.1)[0]
    assert not passes_gate({"heldout": 0}, 0.2)[0]
    run = panel.final_version
    panel.site = panel.site.__class__(promotion_gate=0.0)
    panel.show_comparison(run.__class__(**{**run.__dict__, "metrics": {**run.metrics, "comparison": worse}}))
    assert not panel.promote_button.isEnabled() and "blocked" in panel.gate_label.text()
    panel.show_comparison(run)
    panel.promote_button.setEnabled(True)  # promote regardless of this small test set's held-out numbers
    panel.promote()
    assert window.restarts == 1
    with db.session() as session:
        assert registry.active_version(session, "embedding").version == panel.version
    after, _ = create_site_engine(db, "embedding")
    assert after.model_id != before.model_id
    assert panel.rollback_button.isEnabled()
    panel.rollback()
    assert window.restarts == 2
    with db.session() as session:
        assert registry.active_version(session, "embedding") is None


def test_cancel_ends_the_run_cancelled(qtbot, db, tmp_path, no_dialogs):
    seed_decisions(db, tmp_path, per_protocol=4)
    panel = panel_for(qtbot, db, tmp_path)
    assert panel.start()
    qtbot.waitUntil(lambda: "training set" in panel.log.toPlainText(), timeout=60_000)
    panel.cancel()
    qtbot.waitUntil(lambda: panel.final_status is not None, timeout=60_000)
    assert panel.final_status == registry.CANCELLED
    with db.session() as session:
        assert registry.get_version(session, panel.version).path is None
        assert registry.active_version(session, "embedding") is None
    assert not panel.promote_button.isEnabled() and panel.start_button.isEnabled()


def test_killed_process_marks_the_run_failed_with_its_log(qtbot, db, tmp_path, no_dialogs):
    seed_decisions(db, tmp_path, per_protocol=4)
    panel = panel_for(qtbot, db, tmp_path)
    assert panel.start()
    os.kill(panel.process.processId(), signal.SIGKILL)  # like the OOM killer
    qtbot.waitUntil(lambda: panel.final_status is not None, timeout=60_000)
    assert panel.final_status == registry.FAILED
    with db.session() as session:
        run = registry.get_version(session, panel.version)
        assert run.status == registry.FAILED and "killed" in run.metrics["error"]
        assert run.log_path and os.path.exists(run.log_path)
        assert registry.active_version(session, "embedding") is None
    assert "killed" in open(run.log_path).read()
    assert not panel.promote_button.isEnabled() and "Nothing was promoted" in panel.changes_label.text()


def test_second_run_is_refused_while_another_instance_trains(qtbot, db, tmp_path, no_dialogs):
    register_run(db, version="other-instance")
    with db.session() as session:
        registry.attach_process(session, "other-instance", os.getpid())
    panel = panel_for(qtbot, db, tmp_path)
    assert "A run is in progress" in panel.counts_label.text()
    assert not panel.start()
    assert no_dialogs and "still running" in no_dialogs[-1][1]
    assert panel.process is None


def test_settings_panel_validates_and_restarts_the_engine(qtbot, db, tmp_path):
    from radassist.gui.settings_panel import SettingsPanel
    from radassist.settings import load_settings

    window = FakeWindow()
    panel = SettingsPanel(db, ADMIN_ACTOR, window)
    qtbot.addWidget(panel)
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    panel.base_model.setText(str(broken))
    panel.engine.setCurrentIndex(panel.engine.findData("llm"))
    panel.save()
    qtbot.waitUntil(lambda: not panel.checking, timeout=30_000)
    assert "does not load" in panel.message.text() and "config.json" in panel.message.text()
    with db.session() as session:
        assert load_settings(session).base_model == ""
    assert window.restarts == 0
    panel.base_model.setText("")
    panel.threshold.setValue(0.7)
    panel.gate.setValue(0.01)
    with qtbot.waitSignal(panel.saved):
        panel.save()
    with db.session() as session:
        s = load_settings(session)
    assert (s.engine, s.confidence_threshold, s.promotion_gate) == ("llm", 0.7, 0.01)
    assert window.restarts == 1


def test_settings_panel_checks_the_model_off_the_gui_thread(qtbot, db, tmp_path):
    import threading

    from radassist.gui.settings_panel import SettingsPanel

    gui_thread = threading.get_ident()
    seen = []

    def slow_check(folder, quantization, device):
        seen.append(threading.get_ident())
        return None

    panel = SettingsPanel(db, ADMIN_ACTOR, FakeWindow(), model_check=slow_check)
    qtbot.addWidget(panel)
    panel.base_model.setText(str(tmp_path))
    with qtbot.waitSignal(panel.saved, timeout=10_000):
        panel.save()
        assert panel.busy.isVisibleTo(panel)
    assert seen and seen[0] != gui_thread


def test_main_window_reloads_the_engine_after_a_promotion_elsewhere(qtbot, db, tmp_path):
    window = open_window(qtbot, db, tmp_path)
    assert not window.check_active_models()
    first = window.worker
    version = register_run(db)
    (tmp_path / "head").mkdir()
    with db.session() as session:
        registry.finish_run(session, ADMIN_ACTOR, version, registry.CANDIDATE, path=str(tmp_path / "head"))
        registry.promote(session, ADMIN_ACTOR, version)
    assert window.check_active_models()
    assert window.worker is not first
    assert not window.check_active_models()
