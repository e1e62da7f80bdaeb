"""Signed-in session in the real main window: idle lock keeps the open order, roles shape the
menus, opening and deciding an order is audited (pytest-qt, offscreen, real SQLite)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication, QDialog  # noqa: E402

from radassist import audit, users  # noqa: E402
from radassist.access import ADMIN, AUDITOR, RADIOLOGIST, Actor  # noqa: E402
from support.gui import ORDERS, KeywordEngine, catalog_of, make_db, ui_settings  # noqa: E402

RAD = Actor("rad", RADIOLOGIST)
ADM = Actor("admin", ADMIN)
AUD = Actor("auditor", AUDITOR)




@pytest.fixture
def sdb(tmp_path):
    database = make_db(tmp_path)
    with database.session() as s:
        users.seed_demo_users(s)
    yield database
    database.dispose()


def build_window(qtbot, db, tmp_path, actor, *, start_worker=True):
    """A MainWindow wired as the app does it (install_integrations)."""
    from radassist.gui.app import install_integrations
    from radassist.gui.main_window import MainWindow

    catalog = catalog_of(db)
    window = MainWindow(db, actor, engine_factory=lambda: KeywordEngine(catalog, temperature=0.3),
                        ui_settings=ui_settings(tmp_path), start_worker=start_worker)
    install_integrations(window, db, QApplication.instance())
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def events(db, **filters):
    with db.session() as s:
        return audit.query_events(s, **filters)


def actions(db, **filters):
    return [e.action for e in events(db, **filters)]


def tool_texts(window):
    return [a.text().replace("&", "") for a in window.tools_menu.actions() if a.isVisible()]


def drive_unlock_dialog(qtbot, steps, seen):
    """Poll for the modal unlock dialog (it runs its own event loop) and run ``steps`` on it."""
    from radassist.gui.login_dialog import LoginDialog

    def poll():
        dlg = QApplication.activeModalWidget()
        if not isinstance(dlg, LoginDialog) or not dlg.isVisible():
            QTimer.singleShot(20, poll)
            return
        seen.append(dlg)
        steps(dlg)

    QTimer.singleShot(20, poll)


# --- idle lock --------------------------------------------------------------------------------

def test_idle_lock_keeps_the_open_order_and_is_audited(qtbot, sdb, tmp_path):
    window = build_window(qtbot, sdb, tmp_path, RAD)
    watcher = window.idle_watcher
    assert watcher.interval_ms() == 10 * 60_000  # default site setting
    qtbot.waitUntil(lambda: window.current_order_id is not None and window.order_view.order is not None,
                    timeout=10000)
    order_id = window.current_order_id
    accession = window.order_view.order.accession

    seen: list = []
    during: dict = {}

    def steps(dlg):
        during["title"] = dlg.windowTitle()
        during["readonly_user"] = dlg.username_edit.isReadOnly() and dlg.username_edit.text() == "rad"
        during["order_behind"] = window.current_order_id
        # a wrong password: refused, still locked
        dlg.password_edit.setText("not-the-password")
        during["wrong_result"] = dlg.try_sign_in()
        during["still_open"] = dlg.isVisible() and dlg.result() != QDialog.DialogCode.Accepted
        during["error"] = dlg.error_label.text()
        during["watcher_paused"] = not watcher._timer.isActive()
        watcher.set_minutes(10)  # do not lock again right after the unlock
        dlg.password_edit.setText("rad-demo-1")
        dlg.try_sign_in()

    drive_unlock_dialog(qtbot, steps, seen)
    watcher.set_minutes(0.001)  # 60 ms
    qtbot.waitUntil(lambda: bool(seen) and not seen[0].isVisible(), timeout=10000)

    assert during["readonly_user"] and "locked" in during["title"]
    assert during["order_behind"] == order_id
    assert during["wrong_result"] is False and during["still_open"]
    assert "Wrong username or password" in during["error"]
    assert during["watcher_paused"]
    assert seen[0].result() == QDialog.DialogCode.Accepted
    # unlocked: same user, same open order, the window still up, the watcher running again
    assert window.actor == RAD
    assert window.isVisible()
    assert window.current_order_id == order_id
    assert window.order_view.order is not None and window.order_view.order.id == order_id
    assert window.order_view.order.accession == accession
    assert watcher._timer.isActive() and watcher.interval_ms() == 10 * 60_000

    trail = [(e.action, e.outcome) for e in events(sdb, username="rad") if e.action.startswith("session.")]
    assert trail == [("session.lock", "success"), ("session.unlock", "failure"), ("session.unlock", "success")]
    lock = events(sdb, action="session.lock")[-1]
    assert lock.role == RADIOLOGIST and lock.details_dict == {"reason": "idle"}
    assert "not-the-password" not in json.dumps([e.details for e in events(sdb)])
    with sdb.session() as s:
        assert audit.verify_chain(s).ok


def test_idle_lock_sign_out_returns_to_sign_in_and_cancel_closes_the_window(qtbot, sdb, tmp_path):
    window = build_window(qtbot, sdb, tmp_path, RAD, start_worker=False)
    seen: list = []
    during: dict = {}

    def steps(dlg):
        if dlg.sign_out_button is not None:  # the unlock dialog: sign out from there
            window.idle_watcher.set_minutes(10)
            dlg.sign_out_button.click()
            drive_unlock_dialog(qtbot, steps, seen)  # then the sign-in dialog comes
            return
        during["window_hidden"] = not window.isVisible()
        during["username"] = dlg.username_edit.text()
        dlg.reject()  # nobody signs in: the app closes

    drive_unlock_dialog(qtbot, steps, seen)
    window.idle_watcher.set_minutes(0.001)
    qtbot.waitUntil(lambda: len(seen) == 2 and not seen[1].isVisible(), timeout=10000)
    assert seen[0].signed_out
    assert during == {"window_hidden": True, "username": ""}
    assert not window.isVisible()
    # one sign-out (closing after it records no second one)
    assert actions(sdb, username="rad")[-2:] == ["session.lock", "signout"]
    assert actions(sdb, username="rad").count("signout") == 1


def test_user_input_postpones_the_idle_lock(qtbot, sdb, tmp_path):
    from PySide6.QtCore import Qt

    window = build_window(qtbot, sdb, tmp_path, RAD, start_worker=False)
    window.idle_watcher.set_minutes(0.005)  # 300 ms
    locks = []
    window.idle_watcher.idle.disconnect()
    window.idle_watcher.idle.connect(lambda: locks.append(1))
    for _ in range(6):
        qtbot.wait(100)
        qtbot.keyClick(window.table, Qt.Key.Key_Shift)
    assert locks == []
    qtbot.waitUntil(lambda: locks == [1], timeout=3000)


# --- status bar, menus, roles -----------------------------------------------------------------

def test_status_bar_shows_name_and_role(qtbot, sdb, tmp_path):
    window = build_window(qtbot, sdb, tmp_path, RAD, start_worker=False)
    assert window.user_label.text() == "Dr. Demo Radiologist (radiologist)"
    assert window.user_label.isVisible()
    assert window.act_sign_out.isVisible()


def test_radiologist_has_no_admin_tools_and_admin_has_them(qtbot, sdb, tmp_path):
    rad = build_window(qtbot, sdb, tmp_path, RAD, start_worker=False)
    assert tool_texts(rad) == []
    assert not rad.tools_menu.menuAction().isVisible()

    adm = build_window(qtbot, sdb, tmp_path, ADM, start_worker=False)
    assert adm.user_label.text() == "Demo Admin (admin)"
    texts = tool_texts(adm)
    assert "Audit log…" in texts and "Settings…" in texts and "Retraining…" in texts
    assert adm.tools_menu.menuAction().isVisible()


def test_auditor_gets_the_audit_viewer_only(qtbot, sdb, tmp_path, monkeypatch):
    """run_gui: an auditor (no worklist permission) gets the audit viewer, never the main window."""
    import radassist.gui.app as app_module
    import radassist.gui.audit_viewer as viewer_module
    import radassist.gui.main_window as main_window_module

    opened = []

    def fake_exec(self):
        opened.append((type(self).__name__, self.actor if hasattr(self, "actor") else None))
        return 0

    monkeypatch.setattr(app_module, "sign_in", lambda db, demo, parent=None: AUD)
    monkeypatch.setattr(app_module, "apply_style", lambda app: None)
    monkeypatch.setattr(viewer_module.AuditViewer, "exec", fake_exec)
    monkeypatch.setattr(main_window_module, "MainWindow",
                        lambda *a, **k: pytest.fail("an auditor must not get the worklist"))
    assert app_module.run_gui(db_path=str(sdb.path)) == 0
    assert [name for name, _ in opened] == ["AuditViewer"]

    # and if a main window is built for an auditor anyway, its Tools menu has the audit log only
    monkeypatch.undo()
    window = build_window(qtbot, sdb, tmp_path, AUD, start_worker=False)
    assert tool_texts(window) == ["Audit log…"]


# --- order open and decisions are audited -----------------------------------------------------

def test_open_and_decide_are_audited_without_note_text(qtbot, sdb, tmp_path):
    window = build_window(qtbot, sdb, tmp_path, RAD)
    window.idle_watcher.pause()
    qtbot.waitUntil(lambda: window.order_view.order is not None and window.order_view.prediction is not None
                    and window.order_view.prediction.model == window.engine_info.get("model_id"), timeout=20000)
    first = window.order_view.order
    opens = events(sdb, action="order.open")
    assert opens and opens[-1].entity == f"order:{first.accession}"
    assert opens[-1].username == "rad" and opens[-1].role == RADIOLOGIST

    # accept the top suggestion
    top = window.order_view.prediction.top.code
    with qtbot.waitSignal(window.decision_committed, timeout=5000):
        assert window.order_view.choose_suggestion(0)
    accept = events(sdb, action="decision.accept")[-1]
    assert accept.entity == f"order:{first.accession}"
    assert accept.details_dict["final"] == top and accept.details_dict["suggested"] == top

    # override on the next order (the window opened it): the second suggestion
    qtbot.waitUntil(lambda: window.order_view.order is not None and window.order_view.order.id != first.id
                    and window.order_view.prediction is not None
                    and len(window.order_view.prediction.suggestions) > 1, timeout=20000)
    second = window.order_view.order
    pred = window.order_view.prediction
    window.order_view.comment.setText("Patient anxious, see prior")
    with qtbot.waitSignal(window.decision_committed, timeout=5000):
        assert window.order_view.choose_suggestion(1)
    override = events(sdb, action="decision.override")[-1]
    assert override.entity == f"order:{second.accession}"
    assert override.details_dict["suggested"] == pred.top.code
    assert override.details_dict["final"] == pred.suggestions[1].code
    assert override.details_dict["has_comment"] is True
    assert f"order:{second.accession}" in [e.entity for e in events(sdb, action="order.open")]

    # no note text, patient name, MRN or comment anywhere in the trail
    everything = json.dumps([(e.entity, e.details) for e in events(sdb)])
    for o in ORDERS:
        assert o["clinical_notes"] not in everything
        assert o["patient_name"] not in everything
    assert "Patient anxious" not in everything
    with sdb.session() as s:
        assert audit.verify_chain(s).ok


def test_audit_viewer_columns_fit_time_role_and_action(qtbot, sdb):
    from radassist.gui.audit_viewer import AuditViewer

    with sdb.session() as s:
        audit.record_event(s, RAD, "decision.override", entity="order:T1",
                           details={"final": "CT-HEAD-WWO", "suggested": "CT-HEAD-WO", "has_comment": True})
    viewer = AuditViewer(sdb, ADM)
    qtbot.addWidget(viewer)
    viewer.show()
    qtbot.waitExposed(viewer)
    table, model = viewer.table, viewer.model
    assert model.rowCount() > 0
    row = next(r for r in range(model.rowCount()) if model.event_at(r).action == "decision.override")
    fm = table.fontMetrics()
    for col in (0, 2, 3):  # time, role, action are shown in full
        text = model.index(row, col).data()
        assert fm.horizontalAdvance(text) < table.columnWidth(col), (col, text)
    details = model.index(row, 6).data()
    assert "final: CT-HEAD-WWO" in details and "{" not in details
    assert not table.wordWrap()


# --- sign out, switch user, quit ------------------------------------------------------------------

def test_sign_out_returns_to_sign_in_and_keeps_the_engine(qtbot, sdb, tmp_path):
    window = build_window(qtbot, sdb, tmp_path, RAD)
    qtbot.waitUntil(lambda: bool(window.engine_info.get("model_id")), timeout=10000)
    worker, model_id = window.worker, window.engine_info["model_id"]
    assert "Settings…" not in tool_texts(window)
    seen: list = []
    during: dict = {}

    def steps(dlg):
        during["hidden"] = not window.isVisible()
        during["demo_label"] = dlg.demo_label
        dlg.username_edit.setText("admin")
        dlg.password_edit.setText("admin-demo-1")
        dlg.try_sign_in()

    drive_unlock_dialog(qtbot, steps, seen)
    window.act_sign_out.trigger()
    qtbot.waitUntil(lambda: bool(seen) and not seen[0].isVisible() and window.isVisible(), timeout=10000)
    assert during == {"hidden": True, "demo_label": None}  # not demo mode: no accounts listed
    assert window.actor == ADM and "admin" in window.user_label.text().lower()
    assert window.worker is worker and window.engine_info["model_id"] == model_id  # not reloaded
    assert "Settings…" in tool_texts(window)
    qtbot.waitUntil(lambda: window.order_view.order is not None)
    assert actions(sdb, username="rad")[-1] == "signout"
    assert actions(sdb, username="admin")[-2:] == ["signin", "order.open"]
    window.close()  # quitting signs the admin out
    assert actions(sdb, username="admin")[-1] == "signout"
    assert actions(sdb, username="rad").count("signout") == 1


def test_quit_records_a_sign_out(qtbot, sdb, tmp_path):
    window = build_window(qtbot, sdb, tmp_path, RAD, start_worker=False)
    window.act_quit.trigger()
    assert not window.isVisible()
    assert actions(sdb, username="rad")[-1] == "signout"


def test_demo_sign_in_dialog_lists_the_demo_accounts(qtbot, sdb):
    from radassist.gui.app import make_login_dialog

    dialog = make_login_dialog(sdb, demo=True)
    qtbot.addWidget(dialog)
    text = dialog.demo_label.text()
    for user, password in (("rad", "rad-demo-1"), ("admin", "admin-demo-1"), ("auditor", "audit-demo-1")):
        assert user in text and password in text
    assert dialog.username_edit.text() == "rad"
    dialog.resize(dialog.sizeHint())
    dialog.show()
    qtbot.waitExposed(dialog)
    dialog.grab().save("/tmp/shots/login_demo.png") if __import__("os").path.isdir("/tmp/shots") else None
    plain = make_login_dialog(sdb, demo=False)
    qtbot.addWidget(plain)
    assert plain.demo_label is None
