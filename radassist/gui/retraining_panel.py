"""Retraining panel (admins): decisions -> a candidate model in a separate process -> promote.

The training itself runs as ``python -m radassist.cli train ... --json-progress`` in a QProcess, so
the GUI thread only reads JSON lines: per step ``{"step","total","loss","lr","eta_s"}`` and events
``{"event": "log"|"done"|"stopped"|"error"}`` (radassist.training.run_service writes them). The run
is registered in the core before the process starts (`registry.register_app_run`: admins only, one
run at a time, also across app instances) with a one-time token that the process gets in its
environment and spends to claim the run. Whatever way the process ends, the run ends in the
registry: the command records candidate / cancelled / failed; a crash, kill or OOM (no "done") is
recorded here as failed. The promotion gate and the comparison come from the core
(`training.gate`); promoting goes through `registry.promote`, which applies the gate again.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QPointF, QProcess, QProcessEnvironment, Qt, Signal
from PySide6.QtGui import QColor, QFont, QGuiApplication, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QGridLayout, QGroupBox,
    QHBoxLayout, QHeaderView, QLabel, QMessageBox, QPlainTextEdit, QProgressBar, QPushButton, QSpinBox,
    QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from radassist import registry
from radassist.access import Actor, require
from radassist.settings import load_settings
from radassist.training.gate import GateResult, evaluate_gate
from radassist.training.run_service import decision_stats

ENGINES = ("embedding", "llm")


def format_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def nice_ceiling(value: float) -> float:
    """The smallest 1/2/2.5/5 x 10^k at or above ``value`` (a y-axis top)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        top = m * 10 ** exp
        if top >= value - 1e-12:
            return top
    return 10 ** (exp + 1)


def gate_text(gate: GateResult) -> str:
    """One line for the panel: a tick only when the core's gate passes."""
    if gate.passed:
        return "✔ The candidate may be promoted: " + gate.summary + "."
    reasons = "; ".join(gate.reasons)
    if gate.overridable:
        return f"⚠ Too few held-out decisions to tell ({reasons}). Promoting needs your confirmation."
    return f"✘ Promotion blocked: {reasons}."


class LossChart(QWidget):
    """A small line chart of the training loss (QtCharts is not in PySide6-Essentials)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.points: list[tuple[float, float]] = []
        self.total: float | None = None
        self.setMinimumSize(320, 150)
        self.setObjectName("lossChart")

    def clear(self) -> None:
        self.points, self.total = [], None
        self.update()

    def add_point(self, step: float, loss: float, total: float | None = None) -> None:
        if loss is None or not math.isfinite(loss):
            return
        self.points.append((float(step), float(loss)))
        self.total = total or self.total
        self.update()

    def paintEvent(self, _event):
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        p.fillRect(self.rect(), pal.base())
        text_pen = QPen(pal.text().color())
        font = QFont(self.font())
        if not self.points:
            p.setPen(text_pen)
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "The training loss appears here, step by step")
            return
        if len(self.points) == 1:  # one number is not a chart
            step, loss = self.points[0]
            big = QFont(font)
            big.setPointSizeF(font.pointSizeF() * 2.2)
            big.setBold(True)
            p.setFont(big)
            p.setPen(QPen(QColor("#2f6fd6")))
            r = self.rect().adjusted(0, 0, 0, -self.height() // 5)
            p.drawText(r, Qt.AlignmentFlag.AlignCenter, f"{loss:.4f}")
            p.setFont(font)
            p.setPen(text_pen)
            p.drawText(self.rect().adjusted(0, self.height() // 3, 0, 0), Qt.AlignmentFlag.AlignCenter,
                       f"loss after step {step:g}")
            return
        small = QFont(font)
        small.setPointSizeF(max(7.5, font.pointSizeF() - 1.5))
        p.setFont(small)
        metrics = p.fontMetrics()
        xs = [x for x, _ in self.points]
        ys = [y for _, y in self.points]
        y_top = nice_ceiling(max(ys) * 1.05)
        labels = [f"{y_top * f:.3g}" for f in (0.0, 0.5, 1.0)]
        left = max(metrics.horizontalAdvance(t) for t in labels) + 12
        right, top, bottom = 14, 10, metrics.height() + 10
        w, h = max(10, self.width() - left - right), max(10, self.height() - top - bottom)
        x0 = min(xs)
        x1 = max(max(xs), self.total or 0)
        if x1 - x0 < 1e-9:
            x1 = x0 + 1

        def at(x: float, y: float) -> QPointF:
            return QPointF(left + (x - x0) / (x1 - x0) * w, top + (1 - y / y_top) * h)

        grid = QPen(pal.mid().color())
        grid.setStyle(Qt.PenStyle.DotLine)
        for frac, label in zip((0.0, 0.5, 1.0), labels):
            yy = top + (1 - frac) * h
            p.setPen(grid)
            p.drawLine(QPointF(left, yy), QPointF(left + w, yy))
            p.setPen(text_pen)
            p.drawText(0, int(yy) - metrics.height() // 2, left - 6, metrics.height(),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, label)
        p.setPen(QPen(pal.mid().color()))
        p.drawLine(QPointF(left, top + h), QPointF(left + w, top + h))
        p.drawLine(QPointF(left, top), QPointF(left, top + h))
        p.setPen(text_pen)
        base = top + h + 4
        p.drawText(left, base, w, metrics.height(), Qt.AlignmentFlag.AlignLeft, f"step {x0:g}")
        p.drawText(left, base, w, metrics.height(), Qt.AlignmentFlag.AlignHCenter,
                   f"loss per step (last {ys[-1]:.4f})")
        p.drawText(left, base, w, metrics.height(), Qt.AlignmentFlag.AlignRight, f"{x1:g}")
        colour = QColor("#2f6fd6")
        p.setPen(QPen(colour, 2))
        path = QPainterPath(at(*self.points[0]))
        for x, y in self.points[1:]:
            path.lineTo(at(x, y))
        p.drawPath(path)
        if len(self.points) <= 60:  # the points themselves, while they can be told apart
            p.setBrush(colour)
            for x, y in self.points:
                p.drawEllipse(at(x, y), 2.5, 2.5)


class RetrainingPanel(QDialog):
    """Admin-only: counts, hyperparameters, a training run in a QProcess, comparison, promote/rollback."""

    run_finished = Signal(str, str)  # version, final status
    promoted = Signal(str)

    def __init__(self, db, actor: Actor, window=None, parent=None, *, python: str | None = None,
                 extra_args: list[str] | None = None):
        require(actor, "training.start")  # the panel refuses to open for others
        super().__init__(parent if parent is not None else (window if isinstance(window, QWidget) else None))
        self.db = db
        self.actor = actor
        self.window_ = window
        self.python = python or sys.executable
        self.extra_args = list(extra_args or [])
        self.process: QProcess | None = None
        self.version: str | None = None
        self.cancel_requested = False
        self.done_event: dict | None = None
        self.error_event: dict | None = None
        self.final_status: str | None = None
        self.final_version: registry.ModelVersion | None = None
        self._stdout_buffer = b""
        self._log_file = None
        self.log_path: Path | None = None
        self.started_at = 0.0
        with db.session() as session:
            self.site = load_settings(session)
        self.setWindowTitle("RadAssist — Retraining")
        self.setObjectName("retrainingPanel")
        self.comparison_data: dict = {}
        self.gate: GateResult | None = None
        self._last_logged_step = 0
        screen = QGuiApplication.primaryScreen()
        avail = screen.availableGeometry() if screen is not None else None
        # fits a 1366x768 screen (task bar and title bar included) and uses more of a larger one
        self.resize(min(1100, int(avail.width() * 0.92)) if avail else 1060,
                    min(820, int(avail.height() * 0.9)) if avail else 700)
        self._build()
        self.engine.blockSignals(True)
        self.engine.setCurrentIndex(max(0, self.engine.findData(self.site.engine if self.site.engine in ENGINES
                                                                else "embedding")))
        self.engine.blockSignals(False)
        self._engine_changed()  # shows the fields of that engine only, and refreshes

    # --- construction ---------------------------------------------------------------------------
    def _build(self) -> None:
        from radassist.training.qlora import QLoRAConfig

        d = QLoRAConfig()
        root = QVBoxLayout(self)
        root.setSpacing(10)
        top = QHBoxLayout()

        data_box = QGroupBox("Decisions")
        dv = QVBoxLayout(data_box)
        self.counts_label = QLabel()
        self.counts_label.setObjectName("countsLabel")
        self.counts_label.setWordWrap(True)
        dv.addWidget(self.counts_label)
        self.overrides_table = QTableWidget(0, 4)
        self.overrides_table.setObjectName("overridesTable")
        self.overrides_table.setHorizontalHeaderLabels(["Protocol chosen", "Name", "Overrides", "Most often instead of"])
        self.overrides_table.verticalHeader().setVisible(False)
        self.overrides_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.overrides_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        hh = self.overrides_table.horizontalHeader()
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for col in (0, 2, 3):
            hh.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.overrides_table.setMinimumHeight(70)
        dv.addWidget(self.overrides_table, 1)
        top.addWidget(data_box, 3)

        hp_box = QGroupBox("Training")
        form = QFormLayout(hp_box)
        self.engine = QComboBox()
        self.engine.setObjectName("engineChoice")
        self.engine.addItem("Embedding (seconds)", "embedding")
        self.engine.addItem("LLM QLoRA (minutes to hours)", "llm")
        self.engine.currentIndexChanged.connect(self._engine_changed)
        form.addRow("Engine", self.engine)
        self.embedding_note = QLabel("The embedding head continues from the active model; it needs no settings.")
        self.embedding_note.setObjectName("embeddingNote")
        self.embedding_note.setWordWrap(True)
        form.addRow(self.embedding_note)
        self.epochs = QDoubleSpinBox()
        self.epochs.setRange(0.1, 50)
        self.epochs.setDecimals(1)
        self.epochs.setValue(d.epochs)
        form.addRow("Epochs", self.epochs)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1.0)
        self.lr.setSingleStep(1e-5)
        self.lr.setValue(d.learning_rate)
        form.addRow("Learning rate", self.lr)
        self.lora_r = QSpinBox()
        self.lora_r.setRange(1, 256)
        self.lora_r.setValue(d.lora_r)
        form.addRow("LoRA r", self.lora_r)
        self.lora_alpha = QSpinBox()
        self.lora_alpha.setRange(1, 512)
        self.lora_alpha.setValue(d.lora_alpha)
        form.addRow("LoRA alpha", self.lora_alpha)
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 256)
        self.batch_size.setValue(d.batch_size)
        form.addRow("Batch size", self.batch_size)
        self.replay = QSpinBox()
        self.replay.setRange(0, 200)
        self.replay.setValue(8)
        self.replay.setToolTip("synthetic orders per protocol mixed in, so that rare protocols are not forgotten")
        form.addRow("Replay per protocol", self.replay)
        self._llm_only = [self.epochs, self.lr, self.lora_r, self.lora_alpha, self.batch_size]
        self.form = form
        top.addWidget(hp_box, 2)
        root.addLayout(top, 2)

        run_box = QGroupBox("Run")
        rv = QGridLayout(run_box)
        self.progress = QProgressBar()
        self.progress.setObjectName("trainingProgress")
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.progress.setTextVisible(True)
        rv.addWidget(self.progress, 0, 0)
        self.eta_label = QLabel("ETA —")
        self.eta_label.setObjectName("etaLabel")
        self.eta_label.setMinimumWidth(170)
        rv.addWidget(self.eta_label, 0, 1)
        self.chart = LossChart()
        self.chart.setMinimumSize(280, 110)
        rv.addWidget(self.chart, 1, 0)
        self.log = QPlainTextEdit()
        self.log.setObjectName("trainingLog")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setPlaceholderText("The training log appears here")
        self.log.setMinimumHeight(110)
        rv.addWidget(self.log, 1, 1)
        rv.setColumnStretch(0, 1)
        rv.setColumnStretch(1, 1)
        root.addWidget(run_box, 3)

        cmp_box = QGroupBox("Candidate vs active model on the held-out decisions")
        cv = QVBoxLayout(cmp_box)
        self.comparison = QTableWidget(3, 3)
        self.comparison.setObjectName("comparisonTable")
        self.comparison.setHorizontalHeaderLabels(["Active", "Candidate", "Change"])
        self.comparison.setVerticalHeaderLabels(["Top-1", "Top-3", "Calibration error (ECE)"])
        self.comparison.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.comparison.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        row = self.comparison.fontMetrics().height() + 10
        self.comparison.verticalHeader().setDefaultSectionSize(row)
        self.comparison.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.comparison.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.comparison.setFixedHeight(3 * row + self.comparison.horizontalHeader().sizeHint().height()
                                       + 2 * self.comparison.frameWidth() + 2)
        self.comparison.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        cv.addWidget(self.comparison)
        self.changes_label = QLabel("No candidate yet.")
        self.changes_label.setObjectName("changesLabel")
        self.changes_label.setWordWrap(True)
        cv.addWidget(self.changes_label)
        self.gate_label = QLabel()
        self.gate_label.setObjectName("gateLabel")
        self.gate_label.setWordWrap(True)
        cv.addWidget(self.gate_label)
        root.addWidget(cmp_box, 0)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("startButton")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.promote_button = QPushButton("Promote candidate…")
        self.promote_button.setObjectName("promoteButton")
        self.promote_button.clicked.connect(self.promote)
        self.promote_button.setEnabled(False)
        self.rollback_button = QPushButton("Roll back")
        self.rollback_button.setObjectName("rollbackButton")
        self.rollback_button.clicked.connect(self.rollback)
        for b in (self.start_button, self.cancel_button, self.promote_button, self.rollback_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        buttons.addWidget(close)
        root.addLayout(buttons)

    def _engine_changed(self) -> None:
        llm = self.engine_name == "llm"
        for w in self._llm_only:  # LoRA and optimizer settings mean nothing to the embedding head
            self.form.setRowVisible(w, llm)
            w.setEnabled(llm and not self.running)
        self.form.setRowVisible(self.embedding_note, not llm)
        self.replay.setValue(8 if llm else 40)
        self.refresh()

    @property
    def engine_name(self) -> str:
        return self.engine.currentData() or "embedding"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    # --- counts ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        with self.db.session() as session:
            stats = decision_stats(session, self.engine_name)  # reaps dead runs first
            self.site = load_settings(session)
        self.stats = stats
        active = stats["active"]
        when = (active.finished_at or active.created_at).replace("T", " ") if active else ""
        model = f"{active.version} (trained {when} UTC)" if active else "the shipped model"
        text = (f"Active {self.engine_name} model: <b>{model}</b><br>"
                f"Decisions since it was trained: <b>{stats['since']}</b> "
                f"(total {stats['total']}), of which overrides: <b>{stats['overrides']}</b>")
        if stats["running"] is not None and not self.running:
            r = stats["running"]
            text += f"<br><span style='color:#b35c00'>A run is in progress: {r.version} by {r.created_by}</span>"
        self.counts_label.setText(text)
        rows = stats["by_protocol"]
        self.overrides_table.setRowCount(len(rows))
        for i, (code, name, n, instead) in enumerate(rows):
            for j, value in enumerate((code, name, str(n), instead)):
                item = QTableWidgetItem(value)
                if j == 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.overrides_table.setItem(i, j, item)
        self.rollback_button.setEnabled(active is not None and not self.running)

    # --- a run ----------------------------------------------------------------------------------
    def hyperparams(self) -> dict:
        hp = {"replay": self.replay.value()}
        if self.engine_name == "llm":
            hp.update(epochs=self.epochs.value(), lr=self.lr.value(), lora_r=self.lora_r.value(),
                      lora_alpha=self.lora_alpha.value(), batch_size=self.batch_size.value())
        return hp

    def command_arguments(self, version: str) -> list[str]:
        hp = self.hyperparams()
        args = ["-m", "radassist.cli", "train", "--engine", self.engine_name, "--from-db", "--db", str(self.db.path),
                "--run-id", version, "--json-progress", "--replay", str(hp["replay"])]
        if self.engine_name == "llm":
            args += ["--epochs", f"{hp['epochs']:g}", "--lr", f"{hp['lr']:g}", "--lora-r", str(hp["lora_r"]),
                     "--lora-alpha", str(hp["lora_alpha"]), "--batch-size", str(hp["batch_size"]),
                     "--quantization", self.site.quantization, "--device", self.site.device]
            if self.site.base_model:
                args += ["--base-model", self.site.base_model]
        return args + self.extra_args

    def start(self) -> bool:
        """Register the run (core checks: admin, no other run) and start the training process."""
        if self.running:
            return False
        engine = self.engine_name
        version = registry.new_version_name(engine)
        log_dir = Path(self.db.path).parent / "training-logs"
        log_path = log_dir / f"{version}.log"
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(log_path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)  # logs may name orders
            self._log_file = os.fdopen(fd, "a", encoding="utf-8")  # closed when the run ends
        except OSError as exc:
            self._log_file = None
            self._append_log(f"warning: cannot write the log file {log_path}: {exc.strerror or exc}")
        try:
            with self.db.session() as session:
                _, token = registry.register_app_run(
                    session, self.actor, engine, version=version,
                    data={"decisions": self.stats["total"], "since_active": self.stats["since"],
                          "overrides": self.stats["overrides"]},
                    hyperparams=self.hyperparams(), base_model=self.site.base_model or None, log_path=str(log_path))
        except Exception as exc:  # TrainingBusy, PermissionDenied, database errors
            self._close_log()
            QMessageBox.warning(self, "Cannot start training", str(exc))
            self._append_log(f"not started: {exc}")
            self.refresh()
            return False
        self.version, self.log_path = version, log_path
        self.cancel_requested, self.done_event, self.error_event = False, None, None
        self.final_status, self.final_version = None, None
        self._stdout_buffer = b""
        self._last_logged_step = 0
        self.chart.clear()
        self.log.clear()
        self._clear_comparison()
        self.progress.setRange(0, 0)  # busy until the first step arrives
        self.progress.setFormat("starting…")
        self.eta_label.setText("ETA —")
        what = "embedding head" if engine == "embedding" else "LLM adapter (QLoRA)"
        self._append_log(f"Run {version}: training a new {what} from {self.stats['total']} decisions "
                         f"(replay {self.replay.value()} per protocol)")

        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("HF_HUB_OFFLINE", "1")
        env.insert(registry.RUN_TOKEN_ENV, token)  # the run's one-time token: environment, never argv
        proc.setProcessEnvironment(env)
        proc.readyReadStandardOutput.connect(self._on_stdout)
        proc.readyReadStandardError.connect(self._on_stderr)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_process_error)
        self.process = proc
        self.started_at = time.monotonic()
        proc.start(self.python, self.command_arguments(version))
        if not proc.waitForStarted(10000):
            return False  # _on_process_error ends the run
        self._set_running_ui(True)
        return True

    def cancel(self) -> None:
        """Ask the training process to stop (SIGTERM); the run ends cancelled."""
        if not self.running:
            return
        self.cancel_requested = True
        self._append_log("Cancelling: asked the training process to stop")
        self.progress.setFormat("cancelling…")
        self.cancel_button.setEnabled(False)
        self.process.terminate()

    def _set_running_ui(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.engine.setEnabled(not running)
        self.replay.setEnabled(not running)
        llm = self.engine_name == "llm"
        for w in self._llm_only:
            w.setEnabled(llm and not running)
        if running:
            self.promote_button.setEnabled(False)
            self.rollback_button.setEnabled(False)

    # --- process output -------------------------------------------------------------------------
    def _append_log(self, line: str) -> None:
        line = line.rstrip("\n")
        self.log.appendPlainText(line)
        if self._log_file is not None:
            try:
                self._log_file.write(time.strftime("%H:%M:%S ") + line + "\n")
                self._log_file.flush()
            except OSError as exc:  # e.g. the disk is full: say so once, keep the run going
                self._log_file = None
                self.log.appendPlainText(f"warning: log file no longer written ({exc.strerror or exc})")

    def _on_stderr(self) -> None:
        self._stderr_lines(bytes(self.process.readAllStandardError()).decode("utf-8", "replace"))

    def _stderr_lines(self, data: str) -> None:
        """Library warnings and errors, one readable line each (no source lines, no progress bars)."""
        for line in data.replace("\r", "\n").splitlines():
            if not line.strip() or line[:1].isspace() or "it/s]" in line or "%|" in line:
                continue
            if "Warning: " in line:  # "/path/file.py:12: UserWarning: text" -> "warning: text"
                line = "warning: " + line.split("Warning: ", 1)[1]
            self._append_log(line)

    def _on_stdout(self) -> None:
        self._stdout_buffer += bytes(self.process.readAllStandardOutput())
        *lines, self._stdout_buffer = self._stdout_buffer.split(b"\n")
        for raw in lines:
            self.handle_line(raw.decode("utf-8", "replace"))

    def handle_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            msg = json.loads(line)
        except ValueError:
            self._append_log(line)
            return
        if not isinstance(msg, dict):
            self._append_log(line)
            return
        if "step" in msg and "event" not in msg:
            self._on_step(msg)
            return
        event = msg.get("event")
        if event == "done":
            self.done_event = msg
        elif event == "error":
            self.error_event = msg
        if msg.get("message"):  # events without a message (data for the panel) are not log lines
            self._append_log(("Error: " if event == "error" else "") + str(msg["message"]))

    def _on_step(self, msg: dict) -> None:
        step, total = int(msg.get("step", 0)), int(msg.get("total") or 0)
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(step, total))
            self.progress.setFormat(f"step {step} / {total}  (%p%)")
        eta = msg.get("eta_s")
        elapsed = time.monotonic() - self.started_at
        self.eta_label.setText(f"ETA {format_eta(eta)} · elapsed {format_eta(elapsed)}")
        loss = msg.get("loss")
        if isinstance(loss, (int, float)):
            self.chart.add_point(step, float(loss), total or None)
            # a readable trace: about ten lines per run, not one per step
            if total and (step >= total or step - self._last_logged_step >= max(1, total // 10)) \
                    and math.isfinite(float(loss)):
                self._last_logged_step = step
                self._append_log(f"step {step} of {total}: loss {float(loss):.4f}")

    def _on_process_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart and self.version:
            self._append_log(f"the training process could not start: {self.process.errorString()}")
            self._end_run(exit_code=None, crashed=True)

    def _on_finished(self, exit_code: int, exit_status) -> None:
        if self.process is not None:  # drain what is left
            self._stdout_buffer += bytes(self.process.readAllStandardOutput())
            if self._stdout_buffer:
                self.handle_line(self._stdout_buffer.decode("utf-8", "replace"))
                self._stdout_buffer = b""
            self._stderr_lines(bytes(self.process.readAllStandardError()).decode("utf-8", "replace"))
        crashed = exit_status == QProcess.ExitStatus.CrashExit
        self._end_run(exit_code, crashed)

    def _end_run(self, exit_code: int | None, crashed: bool) -> None:
        version = self.version
        if version is None:
            return
        took = format_eta(time.monotonic() - self.started_at)
        if crashed:
            self._append_log(f"The training process was killed or crashed after {took}")
        elif exit_code == 0:
            self._append_log(f"The training process finished in {took}")
        else:
            self._append_log(f"The training process ended (exit code {exit_code}) after {took}")
        try:
            with self.db.session() as session:
                run = registry.get_version(session, version)
                if run.status == registry.RUNNING:  # the process could not record its end itself
                    if self.cancel_requested:
                        status, error = registry.CANCELLED, "cancelled by " + self.actor.username
                    else:
                        status = registry.FAILED
                        error = ("training process was killed (crash, out of memory or signal)" if crashed
                                 else f"training process exited with code {exit_code} without finishing")
                    metrics = {"error": error, "exit_code": exit_code}
                    if self.log_path:
                        metrics["log"] = str(self.log_path)
                    run = registry.finish_run(session, self.actor, version, status, metrics=metrics)
        except Exception as exc:
            self._append_log(f"could not record the end of the run: {type(exc).__name__}: {exc}")
            run = None
        self.final_version = run
        self.final_status = run.status if run else registry.FAILED
        if run is not None and run.metrics.get("error"):
            self._append_log(f"Run {version} {run.status}: {run.metrics['error']}")
        self._close_log()
        self.process = None
        self._set_running_ui(False)
        if self.final_status == registry.CANDIDATE:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self.progress.setFormat("candidate ready")
            self.eta_label.setText(f"done in {format_eta(time.monotonic() - self.started_at)}")
            self.show_comparison(run)
        else:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat(self.final_status)
            self.eta_label.setText("ETA —")
            error = (run.metrics.get("error") if run else None) or "see the log"
            self.changes_label.setText(f"Run {version} {self.final_status}: {error}. Nothing was promoted.")
            self.gate_label.setText("")
        self.refresh()
        self.run_finished.emit(version, self.final_status)

    def _close_log(self) -> None:
        if self._log_file is not None:
            try:
                self._log_file.close()
            except OSError:
                pass
            self._log_file = None

    # --- comparison, promotion --------------------------------------------------------------------
    def _clear_comparison(self) -> None:
        for r in range(3):
            for c in range(3):
                self.comparison.setItem(r, c, QTableWidgetItem(""))
        self.changes_label.setText("No candidate yet.")
        self.gate_label.setText("")
        self.gate = None
        self.promote_button.setEnabled(False)

    def show_comparison(self, run: registry.ModelVersion) -> None:
        """Top-1, top-3 and ECE of active and candidate, the change, and the core's gate verdict."""
        cmp = run.metrics.get("comparison") or {}
        self.comparison_data = cmp
        self.gate = evaluate_gate(cmp, self.site.promotion_gate)
        if cmp.get("heldout"):
            act, cand = cmp["active"], cmp["candidate"]
            rows = (("top1", f"{act['top1']:.1%}", f"{cand['top1']:.1%}", self.gate.top1_fell, True),
                    ("top3", f"{act['top3']:.1%}", f"{cand['top3']:.1%}", self.gate.top3_fell, True),
                    ("ece", f"{act['ece']:.3f}", f"{cand['ece']:.3f}", False, False))
            for r, (key, a, c, fell, higher_better) in enumerate(rows):
                delta = cand[key] - act[key]
                if higher_better:
                    change = f"{delta * 100:+.1f} pts"
                    change += " ✘" if fell else (" ⚠" if delta < 0 else "")
                else:
                    change = f"{delta:+.3f}"
                for col, value in enumerate((a, c, change)):
                    item = QTableWidgetItem(value)
                    item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                    if col == 2 and (fell or (higher_better and delta < 0)):
                        item.setForeground(QColor("#b00020" if fell else "#b35c00"))
                    self.comparison.setItem(r, col, item)
            for c, key in enumerate(("active", "candidate")):
                self.comparison.horizontalHeaderItem(c).setToolTip(cmp[key]["model"])
            better = ", ".join(cmp.get("better", [])) or "none"
            worse = ", ".join(cmp.get("worse", [])) or "none"
            active_name = (cmp["active"]["model"] or "").split("/", 1)[-1]
            self.changes_label.setText(f"{cmp['heldout']} held-out decisions. Active: {active_name}; candidate: "
                                       f"{run.version}.\nProtocols better: {better}. Worse: {worse}.")
        else:
            self.changes_label.setText(f"Candidate {run.version}: no held-out decisions yet, so it cannot be "
                                       "compared with the active model.")
        self.gate_label.setText(gate_text(self.gate))
        self.gate_label.setProperty("state", "ok" if self.gate.passed else
                                    ("warning" if self.gate.overridable else "blocked"))
        self.gate_label.style().unpolish(self.gate_label)
        self.gate_label.style().polish(self.gate_label)
        self.promote_button.setEnabled(self.gate.passed or self.gate.overridable)
        self.promote_button.setText("Promote candidate…" if self.gate.passed else "Promote anyway…")

    def _restart_engine(self) -> None:
        if self.window_ is not None and hasattr(self.window_, "restart_engine"):
            self.window_.restart_engine()

    def confirmation_text(self) -> str:
        """What the Promote confirmation shows: the comparison and the gate's verdict."""
        run, cmp, gate = self.final_version, self.comparison_data, self.gate
        lines = [f"Make {run.version} the active {run.engine} model for every user?", ""]
        if cmp.get("heldout"):
            lines.append(f"On {cmp['heldout']} held-out decisions (active → candidate):")
            for key, label in (("top1", "Top-1"), ("top3", "Top-3")):
                lines.append(f"  {label}: {cmp['active'][key]:.1%} → {cmp['candidate'][key]:.1%}")
            lines.append(f"  Calibration error: {cmp['active']['ece']:.3f} → {cmp['candidate']['ece']:.3f}")
        else:
            lines.append("There are no held-out decisions to compare the two models on.")
        if gate is not None and not gate.passed:
            lines += ["", "Warning: " + gate.summary + ".", "Promoting anyway is recorded in the audit log."]
        lines += ["", "You can roll back to the current model later."]
        return "\n".join(lines)

    def promote(self, confirm: bool = True) -> bool:
        """Ask (showing the comparison), then promote through the core (which checks the gate and files)."""
        run = self.final_version
        if run is None or run.status != registry.CANDIDATE:
            return False
        gate = self.gate or evaluate_gate(run.metrics.get("comparison"), self.site.promotion_gate)
        if not (gate.passed or gate.overridable):
            return False
        if confirm:
            answer = QMessageBox.question(self, "Promote the candidate?", self.confirmation_text(),
                                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                                          QMessageBox.StandardButton.Cancel)
            if answer != QMessageBox.StandardButton.Yes:
                self._append_log("Promotion cancelled; nothing changed")
                return False
        try:
            with self.db.session() as session:
                v = registry.promote(session, self.actor, run.version, force=not gate.passed)
        except Exception as exc:  # PromotionRefused, ModelIntegrityError, PermissionDenied
            QMessageBox.warning(self, "Cannot promote", str(exc))
            self._append_log(f"Not promoted: {exc}")
            return False
        self.final_version = v
        self.promote_button.setEnabled(False)
        self._append_log(f"{v.version} is now the active {v.engine} model"
                         + ("" if gate.passed else " (promoted despite the gate's warning, audited)"))
        self._restart_engine()
        self.refresh()
        self.promoted.emit(v.version)
        return True

    def rollback(self) -> None:
        try:
            with self.db.session() as session:
                v = registry.rollback(session, self.actor, self.engine_name)
        except Exception as exc:
            QMessageBox.warning(self, "Cannot roll back", str(exc))
            return
        self._append_log(f"Rolled back: the active {self.engine_name} model is now "
                         f"{v.version if v else 'the shipped default'}")
        self._restart_engine()
        self.refresh()

    # --- closing --------------------------------------------------------------------------------
    def reject(self):
        """Close (Esc, Close button, window close): a running run is cancelled first, after asking."""
        if self.running:
            answer = QMessageBox.question(self, "Training is running", "Cancel the training run and close?")
            if answer != QMessageBox.StandardButton.Yes:
                return
            self.stop_and_wait()
        super().reject()

    def stop_and_wait(self, timeout_ms: int = 15000) -> None:
        if not self.running:
            return
        self.cancel()
        if not self.process.waitForFinished(timeout_ms):
            self.process.kill()
            self.process.waitForFinished(5000)
