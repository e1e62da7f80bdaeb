"""Login dialog, idle-lock watcher, audit viewer and export dialog (pytest-qt, offscreen)."""
from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

pytest.importorskip("PySide6")
from PySide6.QtWidgets import QDialog  # noqa: E402

from radassist import audit, users  # noqa: E402
from radassist.access import ADMIN, AUDITOR, RADIOLOGIST, Actor, PermissionDenied  # noqa: E402

RAD = Actor("rad", RADIOLOGIST)
AUD = Actor("auditor", AUDITOR)
ADM = Actor("admin", ADMIN)




@pytest.fixture
def db(tmp_path):
    from radassist.store import open_database

    database = open_database(tmp_path / "t.db")
    with database.session() as s:
        users.seed_demo_users(s)
        for i in range(12):
            audit.record_event(s, RAD, "order.open", entity=f"order:A{i}")
        audit.record_event(s, RAD, "decision.accept", entity="order:A1", details={"final": "CT-HEAD-WO"})
        audit.record_event(s, ADM, "settings.change", entity="settings")
    yield database
    database.dispose()


# --- login --------------------------------------------------------------------------------------

def test_login_wrong_password_shows_error_and_stays_open(qtbot, db):
    from radassist.gui.login_dialog import LoginDialog

    dlg = LoginDialog(db)
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.username_edit.setText("rad")
    dlg.password_edit.setText("wrong-password")
    assert dlg.try_sign_in() is False
    assert not dlg.error_label.isHidden()
    assert "Wrong username or password" in dlg.error_label.text()
    assert dlg.password_edit.text() == ""
    assert dlg.actor is None and dlg.result() != QDialog.DialogCode.Accepted


def test_login_right_password_accepts_and_returns_actor(qtbot, db):
    from radassist.gui.login_dialog import LoginDialog

    dlg = LoginDialog(db)
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.username_edit.setText("rad")
    dlg.password_edit.setText("rad-demo-1")
    with qtbot.waitSignal(dlg.accepted, timeout=2000):
        dlg.ok_button.click()
    assert dlg.actor == RAD
    assert dlg.result() == QDialog.DialogCode.Accepted


def test_login_shows_lockout_message(qtbot, db):
    from radassist.gui.login_dialog import LoginDialog

    dlg = LoginDialog(db, username="rad")
    qtbot.addWidget(dlg)
    for _ in range(5):
        dlg.password_edit.setText("wrong-password")
        dlg.try_sign_in()
    assert "locked" in dlg.error_label.text().lower()
    dlg.password_edit.setText("rad-demo-1")
    assert dlg.try_sign_in() is False
    assert "admin can unlock" in dlg.error_label.text()


def test_unlock_dialog_keeps_user_and_audits(qtbot, db):
    from radassist.gui.login_dialog import LoginDialog

    with db.session() as s:
        users.lock_session(s, RAD)
    dlg = LoginDialog.for_unlock(db, RAD)
    qtbot.addWidget(dlg)
    assert dlg.username_edit.isReadOnly() and dlg.username_edit.text() == "rad"
    dlg.password_edit.setText("wrong-password")
    assert not dlg.try_sign_in()
    dlg.password_edit.setText("rad-demo-1")
    assert dlg.try_sign_in() and dlg.actor == RAD
    with db.session() as s:
        actions = [e.action for e in audit.query_events(s, username="rad")][-3:]
    assert actions == ["session.lock", "session.unlock", "session.unlock"]


def test_unlock_dialog_sign_out(qtbot, db):
    from radassist.gui.login_dialog import LoginDialog

    dlg = LoginDialog.for_unlock(db, RAD)
    qtbot.addWidget(dlg)
    dlg.sign_out_button.click()
    assert dlg.signed_out and dlg.result() == QDialog.DialogCode.Rejected


def test_idle_watcher_fires_and_input_restarts_it(qtbot):
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QKeyEvent
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication, QLineEdit

    from radassist.gui.login_dialog import IdleLockWatcher

    watcher = IdleLockWatcher(minutes=0.005)  # 300 ms
    assert watcher.interval_ms() == 300
    with qtbot.waitSignal(watcher.idle, timeout=2000):
        pass
    edit = QLineEdit()
    qtbot.addWidget(edit)
    watcher.set_minutes(0.01)  # 600 ms
    watcher.resume()
    fired = []
    watcher.idle.connect(lambda: fired.append(1))
    for _ in range(4):  # keep typing: no lock
        qtbot.wait(250)
        QApplication.sendEvent(edit, QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_A, Qt.KeyboardModifier.NoModifier, "a"))
    assert fired == []
    qtbot.waitUntil(lambda: fired == [1], timeout=2000)
    QApplication.instance().removeEventFilter(watcher)


# --- audit viewer --------------------------------------------------------------------------------

def test_viewer_refused_for_radiologist(qtbot, db):
    from radassist.gui.audit_viewer import AuditViewer, ExportDialog

    with pytest.raises(PermissionDenied):
        AuditViewer(db, RAD)
    with pytest.raises(PermissionDenied):
        ExportDialog(db, RAD)


def test_viewer_model_passes_qabstractitemmodeltester(qtbot, qtmodeltester, db):
    from radassist.gui.audit_viewer import AuditViewer

    viewer = AuditViewer(db, AUD)
    qtbot.addWidget(viewer)
    assert viewer.model.rowCount() == 14 + 3  # 3 demo user.add events
    qtmodeltester.check(viewer.model)


def test_viewer_filters(qtbot, db):
    from radassist.gui.audit_viewer import AuditViewer

    viewer = AuditViewer(db, ADM)
    qtbot.addWidget(viewer)
    total = viewer.model.rowCount()
    viewer.set_filters(username="rad")
    assert viewer.model.rowCount() == 13
    assert {viewer.model.event_at(r).username for r in range(viewer.model.rowCount())} == {"rad"}
    viewer.set_filters(username="rad", action="decision.accept")
    assert viewer.model.rowCount() == 1
    viewer.set_filters(action="order.*")
    assert viewer.model.rowCount() == 12
    # newest first
    ids = [viewer.model.event_at(r).id for r in range(viewer.model.rowCount())]
    assert ids == sorted(ids, reverse=True)
    old = date(2001, 1, 1)
    viewer.set_filters(since=old, until=old + timedelta(days=1))
    assert viewer.model.rowCount() == 0
    assert viewer.status_label.text().startswith("0 events")
    viewer.set_filters(since=old, until=date.today() + timedelta(days=1))
    assert viewer.model.rowCount() == total


def test_viewer_shows_only_max_rows_and_says_so(qtbot, db):
    from radassist.gui.audit_viewer import AuditViewer

    viewer = AuditViewer(db, AUD, max_rows=5)
    qtbot.addWidget(viewer)
    assert viewer.model.rowCount() == 5
    assert "of 17" in viewer.status_label.text()


def test_viewer_verify_reports_tampering(qtbot, db, monkeypatch):
    import sqlite3

    from PySide6.QtWidgets import QMessageBox

    from radassist.gui.audit_viewer import AuditViewer

    shown = []
    monkeypatch.setattr(QMessageBox, "information", lambda *a: shown.append(("ok", a[2])))
    monkeypatch.setattr(QMessageBox, "critical", lambda *a: shown.append(("bad", a[2])))
    viewer = AuditViewer(db, AUD)
    qtbot.addWidget(viewer)
    assert viewer.verify().ok
    conn = sqlite3.connect(db.path, isolation_level=None)
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("UPDATE audit_events SET entity = 'order:ZZZ' WHERE id = 7")
    conn.close()
    result = viewer.verify()
    assert not result.ok and result.first_bad_id == 7
    assert shown[0][0] == "ok" and shown[1][0] == "bad" and "event 7" in shown[1][1]


def test_export_dialog_runs_in_the_pool_and_reports(qtbot, db, tmp_path):
    from fhir.resources.R4B.bundle import Bundle

    from radassist.gui.audit_viewer import ExportDialog

    dlg = ExportDialog(db, AUD, since=date(2001, 1, 1), until=date.today() + timedelta(days=1))
    qtbot.addWidget(dlg)
    dlg.format_combo.setCurrentIndex(dlg.format_combo.findData("fhir"))
    out = tmp_path / "audit.json"
    dlg.path_edit.setText(str(out))
    with qtbot.waitSignal(dlg.finished_export, timeout=10000) as blocker:
        dlg.start_export()
    result = blocker.args[0]
    assert result.count == 17 and result.fmt == "fhir"  # the export's own event is recorded after the file
    Bundle.model_validate(json.loads(out.read_text()))
    with db.session() as s:
        last = audit.query_events(s, newest_first=True, limit=1)[0]
    assert (last.action, last.username) == ("audit.export", "auditor")


def test_export_dialog_reports_failure(qtbot, db, tmp_path):
    from radassist.gui.audit_viewer import ExportDialog

    dlg = ExportDialog(db, AUD)
    qtbot.addWidget(dlg)
    dlg.path_edit.setText(str(tmp_path / "no-such-dir" / "x.csv"))
    with qtbot.waitSignal(dlg.failed_export, timeout=10000):
        dlg.start_export()
    assert not dlg.error_label.isHidden() and "does not exist" in dlg.error_label.text()
    assert dlg.export_button.isEnabled()


def test_export_dialog_cancel(qtbot, db, tmp_path):
    from radassist.gui.audit_viewer import ExportDialog

    with db.session() as s:
        for i in range(6000):
            audit.record_event(s, RAD, "order.open", entity=f"order:B{i}")
    dlg = ExportDialog(db, AUD)
    qtbot.addWidget(dlg)
    dlg.path_edit.setText(str(tmp_path / "big.csv"))
    dlg.format_combo.setCurrentIndex(dlg.format_combo.findData("csv"))
    task = dlg.start_export()
    task.cancel()
    qtbot.waitUntil(lambda: not dlg.error_label.isHidden() or dlg.result is not None, timeout=10000)
    if dlg.result is None:  # cancelled in time (the usual case)
        assert "cancelled" in dlg.error_label.text().lower()
        assert not list(tmp_path.glob("*big.csv*"))
