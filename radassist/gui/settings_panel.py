"""Site settings dialog (admins): engine, base model, adapter, device, thresholds.

Validated before saving: ``SiteSettings.validate()``, and a base-model folder that does not load
is refused with the reason (loaded off the GUI thread in a QThreadPool runnable through
``radassist.engines.llm_model``). Saved with ``save_settings`` (admin-only, audited in the core), then the
main window restarts its engine so the change takes effect at once.
"""
from __future__ import annotations

import dataclasses

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
    QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from radassist import registry
from radassist.access import Actor, require
from radassist.settings import DEVICES, ENGINES, QUANTIZATIONS, SiteSettings, load_settings, save_settings


def check_base_model(folder: str, quantization: str, device: str) -> str | None:
    """None when the folder loads as a causal LM with a tokenizer; else the reason. Slow: not on the GUI thread."""
    import gc

    from radassist.engines.llm_model import load_base_model

    try:
        loaded = load_base_model(folder, quantization=quantization, device=device)
    except Exception as exc:
        return str(exc) or type(exc).__name__
    del loaded
    gc.collect()
    return None


class _CheckSignals(QObject):
    finished = Signal(str, str)  # folder, problem ("" = loads)


class _CheckModel(QRunnable):
    def __init__(self, folder: str, quantization: str, device: str, check=check_base_model):
        super().__init__()
        self.folder, self.quantization, self.device, self.check = folder, quantization, device, check
        self.signals = _CheckSignals()

    def run(self) -> None:
        try:
            problem = self.check(self.folder, self.quantization, self.device) or ""
        except Exception as exc:  # never let an exception escape into the pool thread
            problem = f"{type(exc).__name__}: {exc}"
        self.signals.finished.emit(self.folder, problem)


class SettingsPanel(QDialog):
    saved = Signal(dict)  # the changed keys

    def __init__(self, db, actor: Actor, window=None, parent=None, *, model_check=check_base_model):
        require(actor, "settings.change")  # the panel refuses to open for others
        super().__init__(parent if parent is not None else (window if isinstance(window, QWidget) else None))
        self.db = db
        self.actor = actor
        self.window_ = window
        self.model_check = model_check
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self._pending: SiteSettings | None = None
        self._runnable: _CheckModel | None = None
        with db.session() as session:
            self.current = load_settings(session)
            # Only the promoted version: a candidate or retired adapter goes live through Promote / Roll back
            # (gate and file-hash check), never by picking it here.
            adapters = [v for v in registry.list_versions(session, "llm") if v.status == registry.ACTIVE and v.path]
        self.setWindowTitle("RadAssist — Site settings")
        self.setObjectName("settingsPanel")
        self.setMinimumWidth(720)  # the base model folder's hint fits in full
        self._build(adapters)
        self.set_values(self.current)

    def _build(self, adapters) -> None:
        root = QVBoxLayout(self)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self.engine = QComboBox()
        self.engine.setObjectName("engine")
        for name in ENGINES:
            self.engine.addItem({"embedding": "Embedding (fast, CPU)", "llm": "LLM (fine-tuned, slower)"}[name], name)
        form.addRow("Suggestion engine", self.engine)

        row = QWidget()
        h = QHBoxLayout(row)
        h.setContentsMargins(0, 0, 0, 0)
        self.base_model = QLineEdit()
        self.base_model.setObjectName("baseModel")
        self.base_model.setPlaceholderText("empty: bundled SmolLM2-135M-Instruct (or models/meditron-7b when present)")
        self.base_model.setToolTip(self.base_model.placeholderText())
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._browse)
        h.addWidget(self.base_model, 1)
        h.addWidget(self.browse)
        form.addRow("Base model folder", row)

        self.adapter = QComboBox()
        self.adapter.setObjectName("adapter")
        self.adapter.addItem("default (shipped adapter)", "default")
        for v in adapters:
            self.adapter.addItem(f"{v.version}  [{v.status}]", v.path)
        form.addRow("LLM adapter", self.adapter)

        self.device = QComboBox()
        self.device.setObjectName("device")
        for d in DEVICES:
            self.device.addItem(d, d)
        form.addRow("Device", self.device)
        self.quantization = QComboBox()
        self.quantization.setObjectName("quantization")
        for q in QUANTIZATIONS:
            self.quantization.addItem({"nf4": "4-bit NF4 (QLoRA)", "none": "none (full precision)"}[q], q)
        form.addRow("Quantization", self.quantization)

        self.threshold = QDoubleSpinBox()
        self.threshold.setObjectName("threshold")
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setDecimals(2)
        self.threshold.setToolTip("below this confidence an order is marked 'needs review' and nothing is pre-selected")
        form.addRow("Minimum confidence", self.threshold)
        self.target_precision = QDoubleSpinBox()
        self.target_precision.setObjectName("targetPrecision")
        self.target_precision.setRange(90.0, 99.0)
        self.target_precision.setSingleStep(1.0)
        self.target_precision.setDecimals(0)
        self.target_precision.setSuffix(" %")
        self.target_precision.setToolTip("pre-selected suggestions are right this often on held-out orders; "
                                         "the threshold that reaches it is fitted with the model")
        form.addRow("Target precision", self.target_precision)
        self.shortlist = QSpinBox()
        self.shortlist.setObjectName("shortlist")
        self.shortlist.setRange(1, 200)
        self.shortlist.setToolTip("candidates the embedding engine hands to the LLM")
        form.addRow("Shortlist size", self.shortlist)
        self.gate = QDoubleSpinBox()
        self.gate.setObjectName("gate")
        self.gate.setRange(0.0, 0.2)
        self.gate.setSingleStep(0.005)
        self.gate.setDecimals(3)
        self.gate.setToolTip("a candidate model's held-out top-1 may be at most this much below the active one's")
        form.addRow("Promotion gate (top-1)", self.gate)
        self.idle = QSpinBox()
        self.idle.setObjectName("idleLock")
        self.idle.setRange(1, 240)
        self.idle.setSuffix(" min")
        form.addRow("Idle lock after", self.idle)
        root.addLayout(form)

        busy = QHBoxLayout()
        self.busy = QProgressBar()
        self.busy.setObjectName("busyIndicator")
        self.busy.setRange(0, 0)
        self.busy.setMaximumWidth(140)
        self.busy.setVisible(False)
        self.message = QLabel()
        self.message.setObjectName("settingsMessage")
        self.message.setWordWrap(True)
        busy.addWidget(self.busy)
        busy.addWidget(self.message, 1)
        root.addLayout(busy)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        root.addWidget(self.buttons)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Base model folder (Hugging Face format)",
                                                  self.base_model.text())
        if folder:
            self.base_model.setText(folder)

    @staticmethod
    def _select(combo: QComboBox, value) -> None:
        i = combo.findData(value)
        if i < 0 and value:
            combo.addItem(str(value), value)
            i = combo.count() - 1
        combo.setCurrentIndex(max(i, 0))

    def set_values(self, s: SiteSettings) -> None:
        self._select(self.engine, s.engine)
        self.base_model.setText(s.base_model)
        self._select(self.adapter, s.adapter)
        self._select(self.device, s.device)
        self._select(self.quantization, s.quantization)
        self.threshold.setValue(s.confidence_threshold)
        self.target_precision.setValue(round(s.target_precision * 100))
        self.shortlist.setValue(s.shortlist_size)
        self.gate.setValue(s.promotion_gate)
        self.idle.setValue(s.idle_lock_minutes)

    def values(self) -> SiteSettings:
        return dataclasses.replace(
            self.current, engine=self.engine.currentData(), base_model=self.base_model.text().strip(),
            adapter=self.adapter.currentData() or "default", device=self.device.currentData(),
            quantization=self.quantization.currentData(), confidence_threshold=round(self.threshold.value(), 4),
            target_precision=round(self.target_precision.value() / 100, 3),
            shortlist_size=self.shortlist.value(), promotion_gate=round(self.gate.value(), 4),
            idle_lock_minutes=self.idle.value())

    @property
    def checking(self) -> bool:
        return self._pending is not None

    def _set_busy(self, busy: bool, text: str = "") -> None:
        self.busy.setVisible(busy)
        self.buttons.button(QDialogButtonBox.StandardButton.Save).setEnabled(not busy)
        for w in (self.engine, self.base_model, self.browse, self.device, self.quantization):
            w.setEnabled(not busy)
        self.message.setText(text)

    def _error(self, text: str) -> None:
        self.message.setProperty("state", "error")
        self.message.setText(f"⚠ {text}")
        self.message.style().unpolish(self.message)
        self.message.style().polish(self.message)

    def save(self) -> None:
        """Validate; check a new base model folder off the GUI thread; then store and restart the engine."""
        if self.checking:
            return
        new = self.values()
        problems = new.validate()
        if problems:
            self._error("Not saved: " + "; ".join(problems))
            return
        needs_load = bool(new.base_model) and (
            new.base_model != self.current.base_model or new.quantization != self.current.quantization
            or new.device != self.current.device)
        if not needs_load:
            self._store(new)
            return
        self._pending = new
        self._set_busy(True, f"Loading {new.base_model} to check it…")
        runnable = _CheckModel(new.base_model, new.quantization, new.device, self.model_check)
        runnable.signals.finished.connect(self._on_checked)
        self._runnable = runnable  # keep the signals object alive until it reports
        self.pool.start(runnable)

    def _on_checked(self, folder: str, problem: str) -> None:
        new, self._pending, self._runnable = self._pending, None, None
        self._set_busy(False)
        if new is None or folder != new.base_model:
            return
        if problem:
            self._error(f"Not saved: the base model folder does not load: {problem}")
            return
        self._store(new)

    def _store(self, new: SiteSettings) -> None:
        try:
            with self.db.session() as session:
                changed = save_settings(session, self.actor, new)
        except Exception as exc:  # SettingsError, PermissionDenied, database errors
            self._error(f"Not saved: {exc}")
            return
        self.current = new
        self.saved.emit(changed)
        w = self.window_
        if w is not None:
            if changed and hasattr(w, "restart_engine"):
                w.restart_engine()
            watcher = getattr(w, "idle_watcher", None)
            if watcher is not None and "idle_lock_minutes" in changed:
                watcher.set_minutes(new.idle_lock_minutes)
        self.accept()

    def reject(self) -> None:
        if self.checking:
            self.pool.waitForDone(-1)  # the check cannot be interrupted; it reports to nobody after this
            self._pending = None
        super().reject()
