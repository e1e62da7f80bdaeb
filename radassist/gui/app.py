"""Application start-up: QApplication, style, sign-in, main window shown before the model loads."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QApplication, QMessageBox

from radassist.access import Actor
from radassist.paths import RESOURCES_DIR

ORGANIZATION = "RadAssist"
APPLICATION = "RadAssist"
STYLE_SHEET = RESOURCES_DIR / "style.qss"


def create_application(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(argv if argv is not None else sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APPLICATION)
    apply_style(app)
    return app


def apply_style(app: QApplication) -> None:
    app.setStyle("Fusion")
    font = QFont(app.font())
    if font.pointSizeF() < 10.5:
        font.setPointSizeF(10.5)
    app.setFont(font)
    if STYLE_SHEET.exists():
        app.setStyleSheet(STYLE_SHEET.read_text(encoding="utf-8"))


def sign_in(db, demo: bool, parent=None) -> Actor | None:
    """The signed-in actor: the login dialog (radassist.gui.login_dialog); None when cancelled.

    Without that module (a build without sign-in), --demo signs in as the demo radiologist.
    """
    try:
        from radassist.gui.login_dialog import LoginDialog
    except ImportError:
        LoginDialog = None  # noqa: N806
    if LoginDialog is None:
        if demo:
            from radassist.gui.demo import DEMO_ACTOR

            return DEMO_ACTOR
        return None
    from PySide6.QtWidgets import QDialog

    from radassist import users

    with db.session() as session:
        if users.needs_bootstrap(session):
            QMessageBox.critical(parent, "RadAssist", "No user exists in this database yet. Create the first "
                                 "admin with:\n\n    radassist users add USERNAME --role admin")
            return None
    dialog = make_login_dialog(db, demo, parent)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return None
    return dialog.actor


def make_login_dialog(db, demo: bool, parent=None, username: str | None = None):
    """The sign-in dialog; in demo mode it lists the demo accounts and their passwords."""
    from radassist import users
    from radassist.gui.login_dialog import LoginDialog

    accounts = [(u.username, u.password, u.role) for u in users.demo_users()] if demo else []
    default = username if username is not None else ("rad" if demo else "")
    dialog = LoginDialog(db, parent, username=default, demo_accounts=accounts)
    if demo:
        dialog.setWindowTitle("RadAssist demo – sign in")
    return dialog


def install_integrations(window, db, app, demo: bool = False) -> None:
    """Tools menu entries, the idle lock, sign-out (back to the sign-in dialog, the engine kept loaded)
    and the sign-out recorded on quit, from the sign-in/audit modules when present."""
    try:
        from radassist.gui.audit_viewer import AuditViewer
    except ImportError:
        AuditViewer = None  # noqa: N806
    if AuditViewer is not None:
        window.add_tool_action("&Audit log…", lambda: AuditViewer(db, window.actor, window).exec(),
                               "Ctrl+Shift+A", permission="audit.view")
    from radassist.gui.retraining_panel import RetrainingPanel
    from radassist.gui.settings_panel import SettingsPanel

    window.add_tool_action("&Settings…", lambda: SettingsPanel(db, window.actor, window).exec(),
                           "Ctrl+,", permission="settings.change")
    window.add_tool_action("&Retraining…", lambda: RetrainingPanel(db, window.actor, window).exec(),
                           "Ctrl+Shift+R", permission="training.start")
    try:
        from radassist.gui.login_dialog import IdleLockWatcher, LoginDialog
    except ImportError:
        return
    from PySide6.QtWidgets import QDialog

    from radassist import users

    window.act_sign_out.setVisible(True)
    watcher = IdleLockWatcher(minutes=window.site.idle_lock_minutes, parent=window)
    window.idle_watcher = watcher
    state = {"signed_in": True}

    def record_sign_out():
        if state["signed_in"]:
            state["signed_in"] = False
            with db.session() as session:
                users.sign_out(session, window.actor)

    def sign_out():
        """Sign out, hide the worklist, and sign in again in the same window: the model stays loaded."""
        record_sign_out()
        watcher.pause()
        window.hide()  # no patient data on screen while nobody is signed in
        dialog = make_login_dialog(db, demo, window, username="")
        window.login_dialog = dialog
        accepted = dialog.exec() == QDialog.DialogCode.Accepted
        window.login_dialog = None
        actor = dialog.actor if accepted else None
        if actor is None:
            window.close()
            return
        if not actor.can("order.view"):  # an auditor: the audit log, then the app ends
            state["signed_in"] = True
            window.actor = actor
            if AuditViewer is not None:
                AuditViewer(db, actor, window).exec()
            window.close()
            return
        state["signed_in"] = True
        window.set_actor(actor)
        window.show()
        window.activateWindow()
        watcher.resume()

    def lock():
        watcher.pause()
        with db.session() as session:
            users.lock_session(session, window.actor)
        dialog = LoginDialog.for_unlock(db, window.actor, parent=window)  # the open order stays behind it
        if dialog.exec() == QDialog.DialogCode.Accepted:
            window.actor = dialog.actor
            watcher.resume()
        else:
            sign_out()

    watcher.idle.connect(lock)
    window.signed_out.connect(sign_out)
    window.closing.connect(record_sign_out)  # quitting (Ctrl+Q, the window's close button) signs out
    window.login_dialog = None


def run_gui(db_path: str | None = None, demo: bool = False, screenshot: str | None = None,
            engine: str | None = None, timeout_s: float = 120.0) -> int:
    started = time.perf_counter()
    from radassist.store import open_database

    if demo and not db_path:
        from radassist.gui.demo import default_demo_db_path

        db_path = str(default_demo_db_path())
    app = create_application()
    db = open_database(db_path)
    if demo:
        from radassist.gui.demo import seed_demo

        seed_demo(db)
    if screenshot and not demo:
        print("radassist: error: --screenshot renders the demo database only (add --demo)", file=sys.stderr)
        return 2
    if screenshot:
        from radassist.gui.demo import DEMO_ACTOR

        actor = DEMO_ACTOR  # non-interactive: no sign-in dialog; the engine loads once the window is shown
    else:
        from radassist.gui.inference_worker import prestarted_engine_factory

        # The model loads (in its own process) while the user types a password.
        factory = prestarted_engine_factory(db, engine)
        actor = sign_in(db, demo)
        if actor is None or not actor.can("order.view"):
            factory.close_unused()
    if actor is None:
        print("radassist: not signed in", file=sys.stderr)
        return 2

    from radassist.gui.inference_worker import default_engine_factory
    from radassist.gui.main_window import MainWindow

    ui_settings = None
    tmp = None
    if screenshot:  # a reproducible layout, not the user's saved one
        tmp = tempfile.TemporaryDirectory()
        ui_settings = QSettings(os.path.join(tmp.name, "ui.ini"), QSettings.Format.IniFormat)
        factory = default_engine_factory(db, engine)
    if not screenshot:
        if not actor.can("order.view"):  # an auditor: the audit log only
            try:
                from radassist.gui.audit_viewer import AuditViewer
            except ImportError:
                print("radassist: error: this role has no worklist", file=sys.stderr)
                return 3
            AuditViewer(db, actor).exec()
            db.dispose()
            return 0
    window = MainWindow(db, actor, engine_factory=factory, ui_settings=ui_settings, engine_label=engine)
    if not screenshot:
        install_integrations(window, db, app, demo=demo)
    window.close_wait_ms = 3000  # a model still loading is abandoned at exit (nothing to save there)
    window.show()
    window.startup_ms = (time.perf_counter() - started) * 1000
    if screenshot:
        code = _screenshot(app, window, Path(screenshot), timeout_s)
    else:
        code = app.exec()
    db.dispose()
    if not window.workers_finished:
        # The engine thread is stuck in a slow model load; decisions are committed already, so
        # leave without waiting for it (Qt would abort on destroying a running thread).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _screenshot(app: QApplication, window, path: Path, timeout_s: float) -> int:
    """Wait until the open order shows the current engine's suggestions, then save the window."""
    from PySide6.QtCore import QEventLoop

    deadline = time.monotonic() + timeout_s
    result = {"ok": False}
    loop = QEventLoop()

    def ready() -> bool:
        pred = window.order_view.prediction
        model_id = window.engine_info.get("model_id")
        return bool(window.order_view.order is not None and pred is not None and model_id and pred.model == model_id)

    def check():
        failed = window.engine_state == "error"
        if ready() or failed or time.monotonic() > deadline:
            result["ok"] = ready()
            app.processEvents()
            path.parent.mkdir(parents=True, exist_ok=True)
            window.grab().save(str(path))
            window.close()
            loop.quit()
        else:
            QTimer.singleShot(100, check)

    QTimer.singleShot(100, check)
    loop.exec()
    if not result["ok"]:
        print(f"radassist: warning: suggestions were not ready ({window.last_error or 'timeout'}); "
              f"screenshot saved anyway: {path}", file=sys.stderr)
        return 1
    print(f"screenshot saved: {path}")
    return 0
