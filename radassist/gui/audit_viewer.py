"""Audit viewer (auditors and admins): filterable table of events, chain check, export with progress.

Integration (main window):

    window.add_tool_action("Audit log…", lambda: AuditViewer(db, actor, parent=window).exec(),
                           permission="audit.view")

``AuditViewer(db, actor, parent=None, *, max_rows=5000)`` raises ``PermissionDenied`` for a
radiologist (checked in the constructor, before any widget or query). ``ExportDialog(db, actor,
since=None, until=None, parent=None)`` runs ``radassist.audit.export_events`` on the global
QThreadPool with a QProgressDialog; the dialog can be used on its own too.
"""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from PySide6.QtCore import (QAbstractTableModel, QDate, QModelIndex, QObject, QRunnable, Qt, QThreadPool,
                            Signal)
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetrics
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDateEdit, QDialog, QDialogButtonBox,
                               QFileDialog, QFormLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QMessageBox, QProgressDialog, QPushButton, QTableView, QVBoxLayout, QWidget)

from radassist import audit
from radassist.access import Actor, require

ALL = "(all)"
COLUMNS = ("Time (UTC)", "User", "Role", "Action", "Entity", "Outcome", "Details", "#")


class AuditEventModel(QAbstractTableModel):
    """Read-only table of ``radassist.audit.AuditEvent``; Qt.UserRole gives the event."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._events: list[audit.AuditEvent] = []

    def set_events(self, events: list[audit.AuditEvent]) -> None:
        self.beginResetModel()
        self._events = list(events)
        self.endResetModel()

    def event_at(self, row: int) -> audit.AuditEvent:
        return self._events[row]

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._events)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal \
                and 0 <= section < len(COLUMNS):
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self._events) \
                or not 0 <= index.column() < len(COLUMNS):
            return None
        e = self._events[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return e.recorded_at.replace("T", " ").rstrip("Z")[:19]
            return (None, e.username, e.role, e.action, e.entity, e.outcome, _short(e.details), e.id)[col]
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{e.recorded_at} · {e.entity}\n{e.details}\nhash {e.hash[:16]}…"
        if role == Qt.ItemDataRole.ForegroundRole and e.outcome != "success" and col == 5:
            return QBrush(QColor("#b00020"))
        if role == Qt.ItemDataRole.TextAlignmentRole and col == 7:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.UserRole:
            return e
        return None


def _short(details: str) -> str:
    """``key: value, …`` for the table (the exact JSON is in the tooltip and the exports)."""
    if details == "{}":
        return ""
    try:
        parsed = json.loads(details)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        details = ", ".join(f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
                            for k, v in parsed.items())
    return details if len(details) <= 160 else details[:159] + "…"


def _utc_today() -> date:
    """Event times are UTC, so are the date filters."""
    return datetime.now(timezone.utc).date()


def _to_date(qd: QDate) -> date:
    return date(qd.year(), qd.month(), qd.day())


def _qdate(d: date) -> QDate:
    return QDate(d.year, d.month, d.day)


class AuditViewer(QDialog):
    """Events filtered by user, action and date range; newest first; at most ``max_rows`` shown."""

    def __init__(self, db, actor: Actor, parent: QWidget | None = None, *, max_rows: int = 5000):
        require(actor, "audit.view")  # a radiologist never gets a viewer, whoever calls this
        super().__init__(parent)
        self._db = db
        self._actor = actor
        self.max_rows = max_rows
        self.setObjectName("AuditViewer")
        self.setWindowTitle("Audit log")
        self.resize(1180, 600)

        today = _utc_today()
        self.user_combo = QComboBox()
        self.user_combo.setObjectName("userFilter")
        self.user_combo.setMinimumWidth(130)
        self.action_combo = QComboBox()
        self.action_combo.setObjectName("actionFilter")
        self.action_combo.setMinimumWidth(150)
        self.since_edit = QDateEdit(_qdate(today - timedelta(days=30)))
        self.until_edit = QDateEdit(_qdate(today))
        for edit in (self.since_edit, self.until_edit):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd")
        self.refresh_button = QPushButton("Refresh")

        filters = QHBoxLayout()
        for text, w in (("User:", self.user_combo), ("Action:", self.action_combo), ("From:", self.since_edit),
                        ("To:", self.until_edit)):
            filters.addWidget(QLabel(text))
            filters.addWidget(w)
        filters.addStretch(1)
        filters.addWidget(self.refresh_button)

        self.model = AuditEventModel(self)
        self.table = QTableView()
        self.table.setObjectName("auditTable")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)  # else "CT-HEAD-…" is cut at the first hyphen
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(22)
        header = self.table.horizontalHeader()
        # Widths from the font (the app font is 10.5 pt, the header bold): a full time, role and
        # action must fit, not "2026-11-27 …"; Details takes the rest.
        cell_fm = self.table.fontMetrics()
        bold = QFont(header.font())
        bold.setBold(True)
        head_fm = QFontMetrics(bold)
        samples = ("2026-12-31 23:59:59", "auditor.name", "radiologist", "decision.override",
                   "order:DEMO24061000", "failure", "", "100000")  # a real accession is ~12 characters
        for col, sample in enumerate(samples):
            if sample:
                self.table.setColumnWidth(col, max(cell_fm.horizontalAdvance(sample),
                                                   head_fm.horizontalAdvance(COLUMNS[col])) + 20)
        header.setSectionResizeMode(6, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(40)

        self.status_label = QLabel()
        self.status_label.setObjectName("auditStatus")
        self.verify_button = QPushButton("Verify chain")
        self.export_button = QPushButton("Export…")
        self.export_button.setEnabled(actor.can("audit.export"))
        close = QPushButton("Close")
        bottom = QHBoxLayout()
        bottom.addWidget(self.status_label, 1)
        bottom.addWidget(self.verify_button)
        bottom.addWidget(self.export_button)
        bottom.addWidget(close)

        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(self.table, 1)
        layout.addLayout(bottom)

        self._fill_filters()
        self.refresh_button.clicked.connect(self.refresh)
        self.user_combo.currentIndexChanged.connect(self.refresh)
        self.action_combo.currentIndexChanged.connect(self.refresh)
        self.since_edit.dateChanged.connect(self.refresh)
        self.until_edit.dateChanged.connect(self.refresh)
        self.verify_button.clicked.connect(self.verify)
        self.export_button.clicked.connect(self.open_export_dialog)
        close.clicked.connect(self.accept)
        self.refresh()

    # filters ------------------------------------------------------------------------------
    def _fill_filters(self) -> None:
        with self._db.session() as s:
            names = audit.distinct_values(s, "username")
            actions = audit.distinct_values(s, "action")
        groups = sorted({a.split(".")[0] + ".*" for a in actions if "." in a})
        for combo, items in ((self.user_combo, names), (self.action_combo, groups + actions)):
            combo.blockSignals(True)
            current = combo.currentText()
            combo.clear()
            combo.addItem(ALL)
            combo.addItems(items)
            if current and combo.findText(current) >= 0:
                combo.setCurrentIndex(combo.findText(current))
            combo.blockSignals(False)

    def filters(self) -> dict:
        user = self.user_combo.currentText()
        action = self.action_combo.currentText()
        return {
            "username": None if user == ALL or not user else user,
            "action": None if action == ALL or not action else action,
            "since": _to_date(self.since_edit.date()),
            "until": _to_date(self.until_edit.date()),
        }

    def set_filters(self, username: str | None = None, action: str | None = None,
                    since: date | None = None, until: date | None = None) -> None:
        """Set filters programmatically (one refresh)."""
        widgets = (self.user_combo, self.action_combo, self.since_edit, self.until_edit)
        for w in widgets:
            w.blockSignals(True)
        try:
            for combo, value in ((self.user_combo, username), (self.action_combo, action)):
                idx = combo.findText(value) if value else 0
                combo.setCurrentIndex(max(idx, 0))
            if since:
                self.since_edit.setDate(_qdate(since))
            if until:
                self.until_edit.setDate(_qdate(until))
        finally:
            for w in widgets:
                w.blockSignals(False)
        self.refresh()

    def refresh(self) -> None:
        f = self.filters()
        with self._db.session() as s:
            total = audit.count_events(s, f["since"], f["until"], f["username"], f["action"])
            events = audit.query_events(s, f["since"], f["until"], f["username"], f["action"],
                                        limit=self.max_rows, newest_first=True)
        self.model.set_events(events)
        shown = f"{len(events):,} events" if len(events) == total else \
            f"newest {len(events):,} of {total:,} events (narrow the filters or export)"
        self.status_label.setText(shown)

    # actions ------------------------------------------------------------------------------
    def verify(self) -> audit.VerifyResult:
        with self._db.session() as s:
            result = audit.verify_chain(s)
        if result.ok:
            QMessageBox.information(self, "Audit log intact",
                                    f"All {result.count:,} events are intact and in order.")
        else:
            QMessageBox.critical(self, "Audit log altered",
                                 f"The chain breaks at event {result.first_bad_id}:\n{result.reason}")
        return result

    def open_export_dialog(self) -> "ExportDialog":
        f = self.filters()
        dlg = ExportDialog(self._db, self._actor, f["since"], f["until"], parent=self)
        dlg.finished_export.connect(lambda _r: self._after_export())
        dlg.open()
        return dlg

    def _after_export(self) -> None:
        self._fill_filters()
        self.refresh()


class _ExportSignals(QObject):
    progress = Signal(int, int)
    finished = Signal(object)  # audit.ExportResult
    failed = Signal(str)


class ExportTask(QRunnable):
    """Runs export_events on a pool thread with its own session; ``cancel()`` stops it cleanly."""

    def __init__(self, db, actor: Actor, fmt: str, out_path: str | Path, since=None, until=None):
        super().__init__()
        self.signals = _ExportSignals()
        self._args = (db, actor, fmt, out_path, since, until)
        self._cancelled = False
        self.setAutoDelete(False)

    def cancel(self) -> None:
        self._cancelled = True

    def _progress(self, done: int, total: int) -> bool:
        self.signals.progress.emit(done, total)
        return not self._cancelled

    def run(self) -> None:
        db, actor, fmt, out_path, since, until = self._args
        try:
            with db.session() as session:
                result = audit.export_events(session, actor, fmt, out_path, since, until, progress=self._progress)
        except audit.ExportCancelled:
            self.signals.failed.emit("Export cancelled.")
        except Exception as exc:  # shown in the dialog: never silently lost
            self.signals.failed.emit(f"{type(exc).__name__}: {exc}")
        else:
            self.signals.finished.emit(result)


FORMAT_LABELS = (("fhir", "FHIR R4 AuditEvent bundle (.json)"), ("csv", "CSV (.csv)"), ("json", "JSON (.json)"))


class ExportDialog(QDialog):
    """Format, date range and file; the export runs on a pool thread with a progress dialog."""

    finished_export = Signal(object)  # audit.ExportResult
    failed_export = Signal(str)

    def __init__(self, db, actor: Actor, since: date | None = None, until: date | None = None,
                 parent: QWidget | None = None):
        require(actor, "audit.export")
        super().__init__(parent)
        self._db = db
        self._actor = actor
        self.task: ExportTask | None = None
        self.progress_dialog: QProgressDialog | None = None
        self.result: audit.ExportResult | None = None
        self.setObjectName("ExportDialog")
        self.setWindowTitle("Export audit log")
        self.setMinimumWidth(460)

        today = _utc_today()
        self.format_combo = QComboBox()
        for key, label in FORMAT_LABELS:
            self.format_combo.addItem(label, key)
        self.since_edit = QDateEdit(_qdate(since or today - timedelta(days=30)))
        self.until_edit = QDateEdit(_qdate(until or today))
        for edit in (self.since_edit, self.until_edit):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd")
        self.path_edit = QLineEdit(str(Path.home() / f"radassist-audit-{today:%Y%m%d}.json"))
        # wide enough for the default path (home folder + file name); the full path is in the tooltip
        self.path_edit.setMinimumWidth(min(560, self.path_edit.fontMetrics().horizontalAdvance(self.path_edit.text())
                                           + 24))
        self.path_edit.setToolTip(self.path_edit.text())
        self.path_edit.textChanged.connect(self.path_edit.setToolTip)
        self.path_edit.setCursorPosition(0)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit, 1)
        path_row.addWidget(browse)
        self.format_combo.currentIndexChanged.connect(self._fix_suffix)

        form = QFormLayout()
        form.addRow("Format:", self.format_combo)
        form.addRow("From:", self.since_edit)
        form.addRow("To (inclusive):", self.until_edit)
        form.addRow("File:", path_row)
        note = QLabel("The export is recorded in the audit log. The file holds user names and "
                      "order numbers: keep it on an approved drive.")
        note.setWordWrap(True)
        self.error_label = QLabel()
        self.error_label.setStyleSheet("color: #b00020;")
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.accepted.connect(self.start_export)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)

    def fmt(self) -> str:
        return self.format_combo.currentData()

    def _fix_suffix(self) -> None:
        path = Path(self.path_edit.text())
        suffix = ".csv" if self.fmt() == "csv" else ".json"
        if path.suffix in (".csv", ".json"):
            self.path_edit.setText(str(path.with_suffix(suffix)))

    def _browse(self) -> None:
        filt = "CSV (*.csv)" if self.fmt() == "csv" else "JSON (*.json)"
        path, _ = QFileDialog.getSaveFileName(self, "Export audit log", self.path_edit.text(), filt)
        if path:
            self.path_edit.setText(path)

    def start_export(self) -> ExportTask | None:
        path = self.path_edit.text().strip()
        if not path:
            self.error_label.setText("Choose a file.")
            self.error_label.show()
            return None
        since, until = _to_date(self.since_edit.date()), _to_date(self.until_edit.date())
        if since > until:
            self.error_label.setText("The start date is after the end date.")
            self.error_label.show()
            return None
        self.error_label.hide()
        self.export_button.setEnabled(False)
        self.task = ExportTask(self._db, self._actor, self.fmt(), path, since, until)
        pd = QProgressDialog("Exporting audit events…", "Cancel", 0, 0, self)
        pd.setWindowTitle("Export")
        pd.setWindowModality(Qt.WindowModality.WindowModal)
        pd.setMinimumDuration(400)  # small ranges finish before it ever shows
        pd.setAutoClose(False)
        pd.setAutoReset(False)
        pd.canceled.connect(self.task.cancel)
        self.progress_dialog = pd
        self.task.signals.progress.connect(self._on_progress)
        self.task.signals.finished.connect(self._on_finished)
        self.task.signals.failed.connect(self._on_failed)
        QThreadPool.globalInstance().start(self.task)
        return self.task

    def _on_progress(self, done: int, total: int) -> None:
        if self.progress_dialog is not None:
            self.progress_dialog.setMaximum(max(total, 1))
            self.progress_dialog.setValue(min(done, max(total, 1)))
            self.progress_dialog.setLabelText(f"Exporting audit events… {done:,} of {total:,}")

    def _close_progress(self) -> None:
        if self.progress_dialog is not None:
            self.progress_dialog.close()
            self.progress_dialog.deleteLater()
            self.progress_dialog = None

    def _on_finished(self, result) -> None:
        self._close_progress()
        self.result = result
        self.finished_export.emit(result)
        self.accept()

    def _on_failed(self, message: str) -> None:
        self._close_progress()
        self.export_button.setEnabled(True)
        self.error_label.setText(message)
        self.error_label.show()
        self.failed_export.emit(message)
