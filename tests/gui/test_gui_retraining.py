"""Retraining and settings panels (pytest-qt): a real embedding training in a QProcess, comparison,
promotion gate, cancel, crash, busy; admin-only panels; the main window picks up promotions.
Fast tests use a finished run recorded in the registry; the QProcess runs are marked slow."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from PySide6.QtWidgets import QMessageBox  # noqa: E402
from support.gui import open_window  # noqa: E402
from support.retraining import ADMIN_ACTOR, RAD_ACTOR, register_run, seed_decisions  # noqa: E402

from radassist.training.gate import evaluate_gate  # noqa: E402

from radassist import registry  # noqa: E402
from radassist.access import PermissionDenied  # noqa: E402


class FakeWindow:
    def __init__(self):
        self.restarts = 0

    def restart_engine(self):
        self.restarts += 1


@pytest.fixture
def no_dialogs(monkeypatch):
    """Message boxes recorded instead of shown; questions answered Yes (``shown`` has them all)."""
    shown = []
    for name in ("warning", "critical", "information"):
        monkeypatch.setattr(QMessageBox, name, staticmethod(lambda *a, _n=name, **k: shown.append((_n, a[2]))))

    def question(*a, **k):
        shown.append(("question", a[2]))
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return shown


def comparison(n: int, cand=(0.9, 1.0), act=(0.9, 1.0)) -> dict:
    return {"heldout": n, "candidate": {"model": "embedding/cand", "top1": cand[0], "top3": cand[1], "ece": 0.05},
            "active": {"model": "embedding/shipped", "top1": act[0], "top3": act[1], "ece": 0.06},
            "better": [], "worse": []}


def finished_candidate(db, tmp_path: Path, cmp: dict, name: str = "embedding-20261202-120000-abcdef"):
    """A candidate in the registry as a run leaves it (files hashed), without training one."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "head.json").write_text(json.dumps({"version": name}))
    (folder / "head.pt").write_bytes(os.urandom(2048))
    register_run(db, version=name)
    with db.session() as session:
        return registry.finish_run(session, ADMIN_ACTOR, name, registry.CANDIDATE, path=str(folder),
                                   metrics={"comparison": cmp})


def panel_for(qtbot, db, tmp_path, window=None):
    from radassist.gui.retraining_panel import RetrainingPanel

    panel = RetrainingPanel(db, ADMIN_ACTOR, window,
                            extra_args=["--out", str(tmp_path / "models"), "--corpus-replay", "0"])
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
    from radassist.engine_factory import create_site_engine

    seed_decisions(db, tmp_path, per_protocol=8, override={"CT-LSPINE-WO": "MR-LSPINE-WO"})
    window = FakeWindow()
    panel = panel_for(qtbot, db, tmp_path, window)
    panel.show()
    assert "8" in panel.counts_label.text() and panel.overrides_table.rowCount() == 1
    assert panel.overrides_table.item(0, 0).text() == "MR-LSPINE-WO"
    before, _ = create_site_engine(db, "embedding")
    assert panel.start()
    assert not panel.start_button.isEnabled() and panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: panel.final_status is not None, timeout=600_000)
    assert panel.final_status == registry.CANDIDATE, panel.log.toPlainText()
    assert panel.chart.points and panel.progress.value() == panel.progress.maximum()
    assert "%" in panel.comparison.item(0, 1).text() and "Protocols better" in panel.changes_label.text()
    log_text = panel.log_path.read_text()
    assert "fitting the embedding head" in log_text
    with db.session() as session:
        assert registry.get_version(session, panel.version).log_path == str(panel.log_path)
    cmp = panel.comparison_data
    gate = evaluate_gate(cmp, panel.site.promotion_gate)
    assert panel.promote_button.isEnabled() == (gate.passed or gate.overridable)
    log_lines = panel.log.toPlainText().splitlines()
    assert not any("radassist.cli" in line or "{'" in line or line.startswith("{") for line in log_lines), log_lines
    # one name: the registry version is the folder and the engine's version
    run = panel.final_version
    assert Path(run.path).name == run.version and run.metrics["model_version"] == run.version
    assert cmp["candidate"]["model"] == f"embedding/{run.version}"
    assert panel.promote()  # this small site has too few held-out decisions: confirmed, audited override
    assert no_dialogs[-1][0] == "question" and "held-out" in no_dialogs[-1][1]
    assert window.restarts == 1
    with db.session() as session:
        assert registry.active_version(session, "embedding").version == panel.version
    after, _ = create_site_engine(db, "embedding")
    assert after.model_id != before.model_id and after.version == run.version
    assert panel.rollback_button.isEnabled()
    panel.rollback()
    assert window.restarts == 2
    with db.session() as session:
        assert registry.active_version(session, "embedding") is None


@pytest.mark.slow
def test_cancel_ends_the_run_cancelled(qtbot, db, tmp_path, no_dialogs):
    seed_decisions(db, tmp_path, per_protocol=4)
    panel = panel_for(qtbot, db, tmp_path)
    assert panel.start()
    qtbot.waitUntil(lambda: "training set" in panel.log.toPlainText(), timeout=300_000)
    panel.cancel()
    qtbot.waitUntil(lambda: panel.final_status is not None, timeout=300_000)
    assert panel.final_status == registry.CANCELLED
    with db.session() as session:
        assert registry.get_version(session, panel.version).path is None
        assert registry.active_version(session, "embedding") is None
    assert not panel.promote_button.isEnabled() and panel.start_button.isEnabled()


@pytest.mark.slow
def test_killed_process_marks_the_run_failed_with_its_log(qtbot, db, tmp_path, no_dialogs):
    seed_decisions(db, tmp_path, per_protocol=4)
    panel = panel_for(qtbot, db, tmp_path)
    assert panel.start()
    os.kill(panel.process.processId(), signal.SIGKILL)  # like the OOM killer
    qtbot.waitUntil(lambda: panel.final_status is not None, timeout=300_000)
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


@pytest.mark.slow
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
    version = finished_candidate(db, tmp_path, comparison(40)).version
    with db.session() as session:
        registry.promote(session, ADMIN_ACTOR, version)
    assert window.check_active_models()
    assert window.worker is not first
    assert not window.check_active_models()


# --- the panel without a training process (fast) -------------------------------------------------

def test_lora_fields_show_for_the_llm_engine_only(qtbot, db, tmp_path):
    panel = panel_for(qtbot, db, tmp_path)
    panel.show()
    lora = [panel.lora_r, panel.lora_alpha, panel.lr, panel.epochs, panel.batch_size]
    assert not any(w.isVisible() for w in lora) and panel.embedding_note.isVisible()
    panel.engine.setCurrentIndex(panel.engine.findData("llm"))
    assert all(w.isVisible() for w in lora) and not panel.embedding_note.isVisible()
    args = panel.command_arguments("llm-20261202-120000-abcdef")
    assert "--lora-r" in args and "--run-id" in args
    assert not any("TOKEN" in a.upper() for a in args)  # the run token travels in the environment only


def test_models_go_to_the_user_data_folder_never_the_install(qtbot, db, tmp_path):
    from radassist.gui.retraining_panel import RetrainingPanel
    from radassist.paths import PROJECT_DIR
    from radassist.training.run_service import TrainingRunConfig

    panel = RetrainingPanel(db, ADMIN_ACTOR)
    qtbot.addWidget(panel)
    assert "--out" not in panel.command_arguments("v")
    out = TrainingRunConfig(engine="embedding").output_dir()
    assert out.is_relative_to(Path(os.environ["RADASSIST_DATA_DIR"])) and not out.is_relative_to(PROJECT_DIR)


def test_gate_display_crosses_a_fallen_top3_and_warns_on_a_small_heldout_set(qtbot, db, tmp_path, no_dialogs):
    """Issue 10: the gate showed a tick while top-3 fell from 100% to 83% on 6 held-out decisions."""
    panel = panel_for(qtbot, db, tmp_path)
    fell = finished_candidate(db, tmp_path, comparison(40, cand=(0.9, 0.83), act=(0.9, 1.0)), "fell")
    panel.final_version = fell
    panel.show_comparison(fell)
    assert panel.gate_label.text().startswith("✘") and "top-3 fell from 100.0% to 83.0%" in panel.gate_label.text()
    assert panel.comparison.item(1, 2).text().endswith("✘") and panel.comparison.item(1, 0).text() == "100.0%"
    assert panel.comparison.item(1, 1).text() == "83.0%" and not panel.promote_button.isEnabled()
    assert not panel.promote() and not no_dialogs  # refused before any question
    with db.session() as session, pytest.raises(registry.PromotionRefused):  # the core refuses it too
        registry.promote(session, ADMIN_ACTOR, "fell", force=True)

    panel.site = panel.site.__class__(promotion_gate=0.0)
    issue = {**comparison(6, cand=(1.0, 0.83), act=(1.0, 1.0))}
    with db.session() as session:
        session.query(registry.ModelVersionRow).filter_by(version="fell").update(
            {"metrics_json": json.dumps({"comparison": issue})})
        small = registry.get_version(session, "fell")
    panel.final_version = small
    panel.show_comparison(small)
    text = panel.gate_label.text()
    assert text.startswith("⚠") and "only 6 held-out" in text and "top-3 fell" in text
    assert panel.promote_button.isEnabled() and panel.promote_button.text() == "Promote anyway…"


def test_promote_confirms_with_the_comparison_and_cancel_changes_nothing(qtbot, db, tmp_path, monkeypatch):
    window = FakeWindow()
    panel = panel_for(qtbot, db, tmp_path, window)
    run = finished_candidate(db, tmp_path, comparison(40, cand=(0.95, 1.0), act=(0.9, 1.0)))
    panel.final_version = run
    panel.show_comparison(run)
    assert panel.gate_label.text().startswith("✔") and panel.promote_button.isEnabled()
    asked = []

    def answer(choice):
        def question(*a, **k):
            asked.append(a[2])
            return choice
        return staticmethod(question)

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Cancel))
    assert not panel.promote()
    assert "Top-1: 90.0% → 95.0%" in asked[0] and "Top-3: 100.0% → 100.0%" in asked[0]
    with db.session() as session:
        assert registry.active_version(session, "embedding") is None
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    assert panel.promote() and window.restarts == 1
    with db.session() as session:
        assert registry.active_version(session, "embedding").version == run.version


def test_a_truncated_candidate_is_not_promoted_from_the_panel(qtbot, db, tmp_path, no_dialogs):
    panel = panel_for(qtbot, db, tmp_path)
    run = finished_candidate(db, tmp_path, comparison(40))
    Path(run.path, "head.pt").write_bytes(b"cut")
    panel.final_version = run
    panel.show_comparison(run)
    assert not panel.promote()
    assert no_dialogs[-1][0] == "warning" and "integrity" in no_dialogs[-1][1]
    with db.session() as session:
        assert registry.active_version(session, "embedding") is None


def test_loss_chart_y_axis_starts_at_zero_and_one_step_shows_a_number(qtbot):
    from radassist.gui.retraining_panel import LossChart, nice_ceiling

    chart = LossChart()
    qtbot.addWidget(chart)
    chart.resize(400, 200)
    chart.add_point(1, 0.8731, total=1)
    one = chart.grab().toImage()
    for step, loss in enumerate((2.1, 1.7, 1.2, 0.9, 0.7), start=1):
        chart.add_point(step, loss, total=5) if step > 1 else (chart.clear(), chart.add_point(step, loss, 5))
    many = chart.grab().toImage()
    assert not one.isNull() and not many.isNull() and one != many
    assert [nice_ceiling(v) for v in (0.9, 2.2, 0.031, 7)] == [1.0, 2.5, 0.05, 10]


def test_screenshots_before_and_after_a_run_fit_both_screen_sizes(qtbot, db, tmp_path, no_dialogs):
    """Offscreen screenshots at 1366x768 and 1920x1080 (kept in $RADASSIST_SCREENSHOTS when set, to look
    at); every visible button and one-line label gets at least the width its text needs."""
    from PySide6.QtWidgets import QLabel, QPushButton

    seed_decisions(db, tmp_path, per_protocol=2, override={"CT-LSPINE-WO": "MR-LSPINE-WO"})
    out = Path(os.environ.get("RADASSIST_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(((1366, 768), (1920, 1080))):
        panel = panel_for(qtbot, db, tmp_path)
        panel.resize(min(1100, int(w * 0.92)), min(820, int(h * 0.9)) - 40)  # the window manager's frame
        panel.show()
        qtbot.waitExposed(panel)
        panel.grab().save(str(out / f"retraining-before-{w}x{h}.png"))
        (tmp_path / f"s{i}").mkdir()
        cand = finished_candidate(db, tmp_path / f"s{i}", comparison(6, cand=(1.0, 0.83), act=(1.0, 1.0)),
                                  f"embedding-20261202-12000{i}-abcdef")
        panel.final_version = cand
        panel.started_at = time.monotonic() - 12
        for step, loss in enumerate((2.0, 1.6, 1.1, 0.8, 0.6, 0.5, 0.45), start=1):
            panel._on_step({"step": step, "total": 7, "loss": loss, "lr": 0.01, "eta_s": 7 - step})
        panel.handle_line(json.dumps({"event": "done", "version": cand.version, "metrics": {},
                                      "message": f"model {cand.version} written to {cand.path}"}))
        panel.show_comparison(cand)
        qtbot.wait(10)
        panel.grab().save(str(out / f"retraining-after-{w}x{h}.png"))
        widgets = [b for b in panel.findChildren(QPushButton) if b.isVisible()]
        widgets += [x for x in panel.findChildren(QLabel) if x.isVisible() and not x.wordWrap()]
        for widget in widgets:
            assert widget.width() >= widget.sizeHint().width() - 2, (w, widget.objectName(), widget.text())
        assert panel.height() <= h and panel.width() <= w
        panel.close()
        with db.session() as session:  # the next size starts with no run in progress
            registry.promote(session, ADMIN_ACTOR, cand.version, force=True)
