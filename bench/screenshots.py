"""Offscreen screenshots of every screen at 1366x768 and 1920x1080, to look at (issue 10 item 10).

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/screenshots.py [--out DIR] [--engine keyword|embedding]

Screens: sign-in (demo accounts), worklist with an order open, type-ahead open, a multi-protocol order,
the return-to-referrer dialog, the Done list, the audit viewer, the export dialog, settings and the
keyboard shortcuts. (The retraining panel has its own owner.) Also prints, per screen and size, any
widget whose text is cut (a label narrower than its text without eliding) and whether the worklist
scrolls sideways, so a change that cuts text shows up without looking.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SIZES = ((1366, 768), (1920, 1080))


def cut_labels(widget) -> list[str]:
    """Visible QLabels (plain, non-wrapping, non-eliding) narrower than their text."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QLabel

    from radassist.gui.order_view import ElidedLabel

    out = []
    for label in widget.findChildren(QLabel):
        if not label.isVisible() or label.wordWrap() or isinstance(label, ElidedLabel) or not label.text():
            continue
        if label.textFormat() == Qt.TextFormat.RichText or "<" in label.text():
            continue
        shown = label.text().replace("&&", "\0").replace("&", "").replace("\0", "&")  # mnemonics are not drawn
        need = label.fontMetrics().horizontalAdvance(shown)
        if need > label.contentsRect().width() + 1:
            out.append(f"{label.objectName() or 'label'}: {label.text()[:40]!r} needs {need}px, "
                       f"has {label.contentsRect().width()}px")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "out" / "screenshots"), help="folder for the PNG files")
    parser.add_argument("--engine", default="keyword", help="keyword (fast, the test engine) or embedding")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    tmp = tempfile.TemporaryDirectory()
    os.environ["RADASSIST_DATA_DIR"] = tmp.name
    from PySide6.QtCore import QSettings, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from radassist.access import ADMIN, Actor
    from radassist.gui.app import create_application, make_login_dialog
    from radassist.gui.audit_viewer import AuditViewer, ExportDialog
    from radassist.gui.demo import DEMO_ACTOR, seed_demo
    from radassist.gui.main_window import MainWindow
    from radassist.gui.return_dialog import ReturnDialog
    from radassist.gui.settings_panel import SettingsPanel
    from radassist.gui.shortcuts_dialog import ShortcutsDialog
    from radassist.store import open_database

    app = create_application()
    db = open_database(Path(tmp.name) / "shots.db")
    seed_demo(db)
    if args.engine == "keyword":
        from support.gui import KeywordEngine, catalog_of

        catalog = catalog_of(db)
        factory = lambda: KeywordEngine(catalog, temperature=0.3)  # noqa: E731
    else:
        from radassist.gui.inference_worker import default_engine_factory

        factory = default_engine_factory(db, args.engine)
    window = MainWindow(db, DEMO_ACTOR, engine_factory=factory,
                        ui_settings=QSettings(str(Path(tmp.name) / "ui.ini"), QSettings.Format.IniFormat))
    window.close_wait_ms = 5000
    window.show()

    def wait(cond, ms=60000):
        from PySide6.QtCore import QElapsedTimer

        clock = QElapsedTimer()
        clock.start()
        while not cond() and clock.elapsed() < ms:
            app.processEvents()
        app.processEvents()

    wait(lambda: window.engine_state == "ready" and all(e.suggestion_code for e in window.model.entries()
                                                        if e.status == "todo"))
    problems: dict[str, list[str]] = {}

    def shot(widget, name, w, h):
        widget.resize(w, h)
        app.processEvents()
        app.processEvents()
        path = out / f"{name}-{w}x{h}.png"
        widget.grab().save(str(path))
        issues = cut_labels(widget)
        if (widget.width(), widget.height()) != (w, h):
            issues.append(f"the window does not fit: it is {widget.width()}x{widget.height()}")
        if widget is window:
            bar = window.table.horizontalScrollBar()
            if bar.maximum() > 0:
                issues.append(f"worklist scrolls sideways by {bar.maximum()}px")
            if window.minimumSizeHint().width() > w:
                issues.append(f"window needs {window.minimumSizeHint().width()}px wide")
        if issues:
            problems[path.name] = issues
        print(f"saved {path}")

    def dialog_shot(dialog, name, w, h, size=None):
        dialog.setParent(window, dialog.windowFlags())
        dialog.show()
        if size:
            dialog.resize(*size)
        app.processEvents()
        path = out / f"{name}-{w}x{h}.png"
        dialog.grab().save(str(path))
        issues = cut_labels(dialog)
        if dialog.width() > w or dialog.height() > h:
            issues.append(f"dialog {dialog.width()}x{dialog.height()} larger than the screen")
        if issues:
            problems[path.name] = issues
        print(f"saved {path}")
        dialog.close()

    for w, h in SIZES:
        window.set_status_filter("todo")
        window.open_order(window.next_in_queue())
        wait(lambda: window.order_view.prediction is not None, 10000)
        window.order_view.setFocus()
        shot(window, "worklist-order", w, h)
        window.order_view.start_search("torsion")
        shot(window, "type-ahead", w, h)
        window.order_view.cancel_search()
        stroke = next((e for e in window.model.entries() if "stroke" in (e.ordered_exam + e.suggestion_name).lower()
                       and e.status == "todo"), None)
        if stroke is not None:
            window.open_order(stroke.id)
        for code in ("CT-HEAD-WO", "CTA-HEAD-NECK"):
            window.order_view.add_protocol(code)
        window.order_view.start_search("perfusion")
        shot(window, "multi-protocol", w, h)
        window.order_view.cancel_search()
        window.order_view.plan.clear()
        window.order_view._render_plan()
        # a few decisions so that Done shows accepted / overridden / multi / returned
        if w == SIZES[0][0]:
            ids = [e.id for e in sorted(window.model.entries(), key=lambda e: e.sort_key()) if e.status == "todo"][:3]
            for code_list, order_id in zip((("CT-HEAD-WO", "CTA-HEAD-NECK", "CT-PERF-HEAD"), ("MR-BRAIN-WO",)), ids):
                from radassist.worklist import DecisionInput

                window.order_view.show_order(*_details(window, order_id))
                window.conflicts_of(order_id, code_list)
                window.commit(DecisionInput(order_id, code_list[0], additional_codes=code_list[1:],
                                            acknowledged=window.conflicts_of(order_id, code_list)))
            window.return_order(ids[2], "Please confirm which side: the request says left, the notes say right.")
        window.set_status_filter("done")
        shot(window, "done-list", w, h)
        window.set_status_filter("todo")

        ret = ReturnDialog("Doe, Jane (A1001)", "CT HEAD WITHOUT CONTRAST")
        ret.text.setPlainText("Please confirm the clinical question and the side.")
        dialog_shot(ret, "return-dialog", w, h)
        dialog_shot(make_login_dialog(db, True), "sign-in", w, h)
        admin = Actor("admin", ADMIN)
        dialog_shot(AuditViewer(db, admin), "audit-viewer", w, h, size=(min(1280, w - 40), min(760, h - 60)))
        dialog_shot(ExportDialog(db, admin), "export-dialog", w, h)
        dialog_shot(SettingsPanel(db, admin, window), "settings", w, h)
        dialog_shot(ShortcutsDialog(window), "shortcuts", w, h, size=(min(760, w - 40), min(780, h - 60)))

    QTimer.singleShot(0, window.close)
    window.close()
    print()
    if problems:
        print("Possible cut-off text:")
        for name, issues in problems.items():
            for issue in issues:
                print(f"  {name}: {issue}")
    else:
        print("No cut-off label found.")
    db.dispose()
    _ = (Qt, QApplication)
    return 0


def _details(window, order_id):
    from radassist.worklist_queries import order_details

    with window.db.session() as session:
        return order_details(session, window.actor, order_id, window.engine_info.get("model_id") or None)


if __name__ == "__main__":
    sys.exit(main())
