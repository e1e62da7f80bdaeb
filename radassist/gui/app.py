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

def guard_pyside_singleton_refcounts() -> bool:
    """Work around PySide6 6.12.0 on CPython 3.11: its bindings return None/True/False without a
    new reference (harmless on 3.12+, where these are immortal). Every void Qt call or emitted
    signal then drops one reference, and after some thousand calls Python aborts with
    "Fatal Python error: none_dealloc / bool_dealloc". Giving the three singletons a huge
    reference count makes them effectively immortal, as on 3.12. The real fix is PySide6 != 6.12.0
    (6.11.3 is fine) or Python >= 3.12; this guard turns itself off there.
    """
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False
    import PySide6

    if not PySide6.__version__.startswith("6.12."):
        return False
    import ctypes

    for obj in (None, True, False):  # ob_refcnt is the first field of every CPython object
        ctypes.c_ssize_t.from_address(id(obj)).value += 1 << 40
    return True


PYSIDE_REFCOUNT_GUARD = guard_pyside_singleton_refcounts()

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
    """The signed-in actor: the login dialog when it exists, else the demo radiologist with --demo."""
    try:
        from radassist.gui import login_dialog  # written by the sign-in work; optional until then
    except ImportError:
        login_dialog = None
    if login_dialog is not None and hasattr(login_dialog, "sign_in"):
        return login_dialog.sign_in(db, parent=parent)
    if demo:
        from radassist.gui.demo import DEMO_ACTOR

        return DEMO_ACTOR
    return None


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
    if screenshot and demo:
        from radassist.gui.demo import DEMO_ACTOR

        actor = DEMO_ACTOR  # non-interactive: no sign-in dialog
    else:
        actor = sign_in(db, demo)
    if actor is None:
        if not screenshot:
            QMessageBox.critical(None, "RadAssist", "Sign-in is not available in this build yet. "
                                 "Start with --demo to use the demo radiologist.")
        print("radassist: error: no signed-in user (sign-in not available; use --demo)", file=sys.stderr)
        return 2

    from radassist.gui.inference_worker import default_engine_factory
    from radassist.gui.main_window import MainWindow

    ui_settings = None
    tmp = None
    if screenshot:  # a reproducible layout, not the user's saved one
        tmp = tempfile.TemporaryDirectory()
        ui_settings = QSettings(os.path.join(tmp.name, "ui.ini"), QSettings.Format.IniFormat)
    factory = default_engine_factory(db, engine) if engine else None
    window = MainWindow(db, actor, engine_factory=factory, ui_settings=ui_settings, engine_label=engine)
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
    deadline = time.monotonic() + timeout_s
    result = {"ok": False}

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
            app.quit()
        else:
            QTimer.singleShot(100, check)

    QTimer.singleShot(100, check)
    app.exec()
    if not result["ok"]:
        print(f"radassist: warning: suggestions were not ready ({window.last_error or 'timeout'}); "
              f"screenshot saved anyway: {path}", file=sys.stderr)
        return 1
    print(f"screenshot saved: {path}")
    return 0
