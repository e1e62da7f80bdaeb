"""The main window: worklist on the left, the open order on the right, engine state below.

Integration points for other panels (login, audit viewer, settings, retraining):
  * ``MainWindow(db, actor, ...)``: the signed-in ``Actor``; every service call uses it.
  * ``MainWindow.add_tool_action(text, callback, shortcut=None, permission=None)`` adds an entry to
    the Tools menu, shown only when ``actor.can(permission)``.
  * ``MainWindow.restart_engine()`` re-creates the engine in a fresh worker thread (after the admin
    changed settings or promoted a model).
  * ``MainWindow.signed_out`` is emitted by the File > Sign out action (connected by the app when a
    login dialog exists).
"""
from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable

from PySide6.QtCore import QByteArray, QElapsedTimer, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QDialog, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMainWindow,
    QFrame, QMenu, QMessageBox, QProgressBar, QScrollArea, QSplitter, QTableView, QToolButton, QVBoxLayout,
    QWidget,
)

from radassist.access import Actor
from radassist.catalog import ensure_catalog
from radassist.domain import MODALITIES, Prediction
from radassist.engines.base import SuggestionEngine
from radassist.gui.inference_worker import ERROR, LOADING, READY, STOPPED, InferenceWorker, default_engine_factory
from radassist.gui.order_view import ElidedLabel, OrderDetails, OrderView
from radassist.gui.worklist_model import (
    COL_ACCESSION, COL_AGE_SEX, COL_CONFIDENCE, COL_EXAM, COL_FLAGS, COL_PATIENT, COL_PRIORITY, COL_STATUS,
    COL_SUGGESTION, COL_WAITING, HEADERS, FlagsDelegate, PriorityDelegate, WorklistEntry, WorklistModel,
    WorklistProxy,
)
from radassist.settings import SiteSettings, load_settings
from radassist.worklist import (
    DecisionInput, conflicts_for_order, record_decision, return_to_referrer, revert_decision,
)
from radassist.worklist_queries import order_details, user_display_name

log = logging.getLogger(__name__)

ORGANIZATION = "RadAssist"
APPLICATION = "RadAssist"
# Columns sized to their longest short text; the others share what is left (elided, full text in tooltips),
# so the worklist never scrolls sideways at 1366x768 or 1920x1080.
FIXED_COLUMN_TEXT = {COL_PRIORITY: "URGENT", COL_AGE_SEX: "Age/Sex", COL_FLAGS: "Cx Rn", COL_WAITING: "10 h 00",
                     COL_STATUS: "Overridden", COL_CONFIDENCE: "⚠ >99%"}
FLEX_COLUMNS = {COL_SUGGESTION: (112, 0.8), COL_PATIENT: (90, 2.0), COL_ACCESSION: (86, 1.0), COL_EXAM: (90, 2.2)}
NARROW_HIDDEN = (COL_ACCESSION,)  # hidden when even the minimum widths do not fit (in the patient's tooltip)
UNDO_SHOWN_MS = 20_000  # how long the "Saved … Undo" message stays in the status bar


def commit_decision(db, actor: Actor, decision: DecisionInput) -> tuple[int, str]:
    """Record a decision and commit it (returns only once it is durable in the WAL): (id, action)."""
    with db.session() as session:
        row = record_decision(session, actor, decision)
        result = (row.id, row.action)
    return result


def commit_return(db, actor: Actor, order_id: int, question: str, prediction: Prediction | None = None,
                  time_to_decide_ms: int | None = None) -> int:
    """Return an order to the referrer and commit it; the decision id."""
    with db.session() as session:
        row = return_to_referrer(session, actor, order_id, question,
                                 suggested=prediction.top if prediction else None,
                                 model_version=prediction.model if prediction else None,
                                 time_to_decide_ms=time_to_decide_ms)
        decision_id = row.id
    return decision_id


def commit_revert(db, actor: Actor, decision_id: int) -> None:
    """Revert a decision (the order goes back to To do) and commit it."""
    with db.session() as session:
        revert_decision(session, actor, decision_id)


def patient_label(entry: WorklistEntry | None, fallback: str = "") -> str:
    """'Roe, Rick (T2)': how the status bar names the patient of an order."""
    if entry is None:
        return fallback
    return f"{entry.patient_name} ({entry.accession})" if entry.patient_name else entry.accession


_STARTUP_FROZEN = False


def _freeze_startup_objects() -> None:
    """Once per process, at the first paint: the objects alive now (modules, SQLAlchemy's and Qt's
    wrappers, the catalog) go to the garbage collector's permanent generation. A full collection
    otherwise walks all of them and stalled the GUI thread for 70-80 ms (bench_gui, BENCH_STACKS=1)."""
    global _STARTUP_FROZEN
    if not _STARTUP_FROZEN:
        _STARTUP_FROZEN = True
        gc.freeze()  # no collection first: it would be the very pause this avoids (start-up leaves little garbage)


class MainWindow(QMainWindow):
    signed_out = Signal()
    closing = Signal()                # the window is closing (quit): the app records the sign-out
    decision_committed = Signal(int)  # order id, after the commit and before the row shows done
    order_opened = Signal(int)        # order id, fully rendered

    def __init__(self, db, actor: Actor, *, engine_factory: Callable[[], SuggestionEngine] | None = None,
                 ui_settings: QSettings | None = None, start_worker: bool = True, poll_ms: int = 2000,
                 engine_label: str | None = None, quick_engine_factory: Callable[[], SuggestionEngine] | None = None,
                 parent=None):
        super().__init__(parent)
        self.db = db
        self.actor = actor
        self.ui_settings = ui_settings or QSettings(ORGANIZATION, APPLICATION)
        self._engine_factory = engine_factory
        with db.session() as session:
            self.catalog = ensure_catalog(session)
            self.site: SiteSettings = load_settings(session)
            self.user_display = user_display_name(session, actor.username)
        self.engine_name = engine_label or self.site.engine
        # While a slow engine (the LLM) loads, a quick one (the embedding engine) suggests meanwhile.
        if quick_engine_factory is None and self.engine_name == "llm":
            # seam: the quick engine comes from the engine factory (radassist.engine_factory) too
            quick_engine_factory = default_engine_factory(db, "embedding")
        self._quick_factory = quick_engine_factory
        self.quick_worker: InferenceWorker | None = None
        self.quick_model_id = ""
        self._queued: dict[str, int] = {}  # orders each worker ("main", "quick") still has to compute
        self.current_order_id: int | None = None
        self.worker: InferenceWorker | None = None
        self._old_workers: list[InferenceWorker] = []
        self._opening = False
        self.undo_stack: list[tuple[int, int, str, str]] = []  # (decision id, order id, code, patient)
        self._tool_specs: list[tuple[str, Callable, str | None, str | None, list]] = []
        self.last_error = ""
        self.close_wait_ms: int | None = None  # None: wait for the worker; the app sets a limit
        self.workers_finished = True

        self.setWindowTitle("RadAssist — Worklist")
        self.resize(1560, 940)
        self.model = WorklistModel(db, self, poll_ms=poll_ms)
        self.model.confidence_threshold = self.site.confidence_threshold
        self.proxy = WorklistProxy(self)
        self.proxy.setSourceModel(self.model)
        self._build_ui()
        self._build_menus()
        self._build_status_bar()
        self._restore_layout()
        self.model.polled.connect(self._on_polled)
        self.table.sortByColumn(COL_PRIORITY, Qt.SortOrder.AscendingOrder)
        self._update_count()
        # Promotion/rollback from another instance or the CLI: poll the registry's active versions.
        self._active_models = self._query_active_models()
        self._models_timer = QTimer(self)
        self._models_timer.setInterval(max(poll_ms, 3000))
        self._models_timer.timeout.connect(self.check_active_models)
        self._models_timer.start()
        # The worker starts once the window has painted: it starts the engine process (which competes for
        # the cores while it loads) and reads the to-do list. A window that is never shown (or paints late)
        # starts it after FIRST_PAINT_WAIT_MS anyway.
        self._start_worker_after_paint = start_worker
        if start_worker:
            QTimer.singleShot(self.FIRST_PAINT_WAIT_MS, self.start_worker)
        QTimer.singleShot(0, self.open_first_todo)

    FIRST_PAINT_WAIT_MS = 1000

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().paintEvent(event)
        if self._start_worker_after_paint:
            self._start_worker_after_paint = False
            _freeze_startup_objects()
            QTimer.singleShot(0, self.start_worker)  # after this paint pass has reached the screen

    # --- construction ---------------------------------------------------------------------------
    def _build_ui(self) -> None:
        left = QWidget()
        left.setObjectName("worklistPane")
        lv = QVBoxLayout(left)
        lv.setContentsMargins(10, 10, 6, 6)
        lv.setSpacing(8)
        bar = QHBoxLayout()
        bar.setSpacing(6)
        self.status_buttons: dict[str, QToolButton] = {}
        for status, text in (("todo", "To do"), ("done", "Done"), ("all", "All")):
            button = QToolButton()
            button.setText(text)
            button.setCheckable(True)
            button.setObjectName("filterButton")
            button.clicked.connect(lambda _=False, s=status: self.set_status_filter(s))
            self.status_buttons[status] = button
            bar.addWidget(button)
        self.status_buttons["todo"].setChecked(True)
        self.modality = QComboBox()
        self.modality.setObjectName("modalityFilter")
        self.modality.addItem("All modalities", "")
        for m in MODALITIES:
            self.modality.addItem(m, m)
        self.modality.currentIndexChanged.connect(
            lambda _: self.proxy.set_modality_filter(self.modality.currentData() or "") or self._update_count())
        bar.addWidget(self.modality)
        self.filter_text = QLineEdit()
        self.filter_text.setObjectName("worklistSearch")
        self.filter_text.setPlaceholderText("Search patient, MRN, accession, exam…  (Ctrl+F)")
        self.filter_text.setClearButtonEnabled(True)
        self.filter_text.textChanged.connect(lambda t: self.proxy.set_text_filter(t) or self._update_count())
        self.filter_text.installEventFilter(self)
        self.filter_text.setMinimumWidth(90)
        bar.addWidget(self.filter_text, 1)
        self.count_label = QLabel()
        self.count_label.setObjectName("mutedLabel")
        bar.addWidget(self.count_label)
        lv.addLayout(bar)

        self.table = QTableView()
        self.table.setObjectName("worklist")
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(30)
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        header.setStretchLastSection(False)
        header.setMinimumSectionSize(36)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.viewport().installEventFilter(self)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_row)
        self.table.installEventFilter(self)
        self.table.setItemDelegateForColumn(COL_PRIORITY, PriorityDelegate(self.table))
        self.table.setItemDelegateForColumn(COL_FLAGS, FlagsDelegate(self.table))
        lv.addWidget(self.table, 1)

        self.order_view = OrderView(self.catalog, self.site.confidence_threshold)
        self.order_view.conflicts_provider = self.conflicts_of
        self.order_view.decision_requested.connect(self.commit)
        self.order_view.return_requested.connect(lambda order_id: self.return_order(order_id))
        self.order_view.message.connect(lambda text: self.statusBar().showMessage(text, 6000))

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("mainSplitter")
        self.splitter.addWidget(left)
        # the order panel scrolls vertically when a small screen cannot show it all; never sideways
        self.order_scroll = QScrollArea()
        self.order_scroll.setObjectName("orderScroll")
        self.order_scroll.setWidget(self.order_view)
        self.order_scroll.setWidgetResizable(True)
        self.order_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.order_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.order_scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.order_scroll.setMinimumWidth(380)
        self.splitter.addWidget(self.order_scroll)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([1060, 500])
        self.splitter.setChildrenCollapsible(False)
        self.setCentralWidget(self.splitter)

    def _action(self, text: str, slot, shortcut=None, menu=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(slot)
        if menu is not None:
            menu.addAction(action)
        self.addAction(action)
        return action

    def _build_menus(self) -> None:
        mb = self.menuBar()
        self.file_menu = mb.addMenu("&File")
        self.act_import = self._action("&Import orders…", self.import_orders, "Ctrl+I", self.file_menu)
        self.file_menu.addSeparator()
        self.act_sign_out = self._action("Sign &out", self.signed_out.emit, None, self.file_menu)
        self.act_sign_out.setVisible(False)  # shown by the app once a login dialog exists
        self.act_quit = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit, self.file_menu)
        if self.act_quit.shortcut().isEmpty():
            self.act_quit.setShortcut(QKeySequence("Ctrl+Q"))

        self.edit_menu = mb.addMenu("&Edit")
        self.act_undo = self._action("&Undo last decision", self.undo_last_decision, QKeySequence.StandardKey.Undo,
                                     self.edit_menu)
        if self.act_undo.shortcut().isEmpty():
            self.act_undo.setShortcut(QKeySequence("Ctrl+Z"))
        self.act_undo.setEnabled(False)
        self.edit_menu.addSeparator()
        self.act_add_protocol = QAction("&Add the selected protocol\t+", self)
        self.act_add_protocol.triggered.connect(lambda: self.order_view.add_selected())
        self.edit_menu.addAction(self.act_add_protocol)  # the key itself is the order view's
        self.act_return = self._action("&Return to referrer…", lambda: self.order_view.request_return(), "Ctrl+R",
                                       self.edit_menu)

        self.view_menu = mb.addMenu("&View")
        group = QActionGroup(self)
        self.filter_actions = {}
        for status, text, key in (("todo", "&To do", "Ctrl+1"), ("done", "&Done", "Ctrl+2"), ("all", "&All", "Ctrl+3")):
            a = self._action(text, lambda _=False, s=status: self.set_status_filter(s), key, self.view_menu)
            a.setCheckable(True)
            group.addAction(a)
            self.filter_actions[status] = a
        self.filter_actions["todo"].setChecked(True)
        self.act_modality = self._action("&Modality filter…", self.focus_modality, "Ctrl+Shift+M", self.view_menu)
        self.sort_menu = QMenu("&Sort by", self)
        self.sort_menu.setObjectName("sortMenu")
        self.sort_actions = {}
        for col, name in enumerate(HEADERS):
            a = self.sort_menu.addAction(name)
            a.triggered.connect(lambda _=False, c=col: self.sort_by(c))
            self.sort_actions[col] = a
        self.view_menu.addMenu(self.sort_menu)
        self.act_sort = self._action("Sort b&y column…", self.show_sort_menu, "Ctrl+Shift+S", self.view_menu)
        self.act_sort_default = self._action("Worklist &order (STAT first)", lambda: self.sort_by(COL_PRIORITY, True),
                                             "Ctrl+Shift+D", self.view_menu)
        self.view_menu.addSeparator()
        self.act_next = self._action("&Next order", lambda: self.move_order(1), "Ctrl+Down", self.view_menu)
        self.act_prev = self._action("&Previous order", lambda: self.move_order(-1), "Ctrl+Up", self.view_menu)
        self.act_worklist = self._action("Focus &worklist", self.focus_worklist, "Ctrl+L", self.view_menu)
        self.act_order = self._action("Focus &order", self.focus_order, "Ctrl+O", self.view_menu)
        self.act_filter = self._action("Search work&list", self.focus_filter, "Ctrl+F", self.view_menu)
        self.act_search = self._action("Search &catalog (override)", lambda: self.order_view.start_search(),
                                       "Ctrl+K", self.view_menu)
        self.act_comment = self._action("&Comment", self.order_view.focus_comment, "Ctrl+M", self.view_menu)
        self.view_menu.addSeparator()
        self.act_refresh = self._action("&Refresh", self.refresh, "F5", self.view_menu)

        self.tools_menu = mb.addMenu("&Tools")
        self.tools_menu.menuAction().setVisible(False)  # shown when a panel adds an action

        self.help_menu = mb.addMenu("&Help")
        self.act_shortcuts = self._action("&Keyboard shortcuts", self.show_shortcuts, "F1", self.help_menu)
        self._action("&About RadAssist", self.show_about, None, self.help_menu)

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.user_label = QLabel(f"{self.user_display} ({self.actor.role})")
        self.user_label.setObjectName("statusUser")
        self.progress_label = QLabel()
        self.progress_label.setObjectName("statusProgress")
        self.engine_label = QLabel()
        self.engine_label.setObjectName("statusEngine")
        # model loading: a busy bar and the seconds so far (the LLM takes a while; quick suggestions meanwhile)
        self.load_bar = QProgressBar()
        self.load_bar.setObjectName("loadProgress")
        self.load_bar.setRange(0, 0)
        self.load_bar.setFixedSize(90, 12)
        self.load_bar.setTextVisible(False)
        self.load_bar.setVisible(False)
        self.load_label = QLabel()
        self.load_label.setObjectName("loadLabel")
        self.load_label.setVisible(False)
        self._load_clock = QElapsedTimer()
        self._load_timer = QTimer(self)
        self._load_timer.setInterval(1000)
        self._load_timer.timeout.connect(self._update_loading)
        self.error_label = QLabel()
        self.error_label.setObjectName("statusError")
        self.error_label.setVisible(False)
        sb.addWidget(self.error_label, 1)
        # "Saved: CODE for patient · Undo": a permanent widget, so other status messages do not hide it
        self.undo_box = QWidget()
        self.undo_box.setObjectName("undoBox")
        ub = QHBoxLayout(self.undo_box)
        ub.setContentsMargins(0, 0, 8, 0)
        ub.setSpacing(6)
        self.saved_label = ElidedLabel()  # never widens the window: elided, full text in the tooltip
        self.saved_label.setObjectName("savedLabel")
        self.saved_label.setMinimumWidth(140)
        self.saved_label.setMaximumWidth(300)
        self.undo_button = QToolButton()
        self.undo_button.setObjectName("undoButton")
        self.undo_button.setText("Undo (Ctrl+Z)")
        self.undo_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # clicking it leaves the focus where it was
        self.undo_button.clicked.connect(self.undo_last_decision)
        ub.addWidget(self.saved_label)
        ub.addWidget(self.undo_button)
        self.undo_box.setVisible(False)
        sb.addPermanentWidget(self.undo_box)  # first: left of progress, engine and user
        self._saved_timer = QTimer(self)
        self._saved_timer.setSingleShot(True)
        self._saved_timer.timeout.connect(lambda: self.undo_box.setVisible(False))
        sb.addPermanentWidget(self.progress_label)
        sb.addPermanentWidget(self.load_bar)
        sb.addPermanentWidget(self.load_label)
        sb.addPermanentWidget(self.engine_label)
        sb.addPermanentWidget(self.user_label)
        self._error_timer = QTimer(self)
        self._error_timer.setSingleShot(True)
        self._error_timer.timeout.connect(lambda: self.error_label.setVisible(False))
        self.engine_state = LOADING
        self.engine_info = {"name": self.engine_name, "version": "", "device": "", "model_id": ""}
        self._set_engine_label(LOADING, "waiting to start")

    # --- integration hooks -----------------------------------------------------------------------
    def add_tool_action(self, text: str, callback, shortcut: str | None = None,
                        permission: str | None = None) -> QAction | None:
        """Add a Tools menu entry (audit viewer, settings, retraining...) for actors allowed to use it."""
        holder: list = []  # the QAction once the actor may use it (created again after a user switch)
        self._tool_specs.append((text, callback, shortcut, permission, holder))
        return self._apply_tool_spec(text, callback, shortcut, permission, holder)

    def _apply_tool_spec(self, text, callback, shortcut, permission, holder) -> QAction | None:
        allowed = permission is None or self.actor.can(permission)
        if holder:
            holder[0].setVisible(allowed)
            holder[0].setEnabled(allowed)
        elif allowed:
            holder.append(self._action(text, callback, shortcut, self.tools_menu))
        if allowed:
            self.tools_menu.menuAction().setVisible(True)
        return holder[0] if holder and allowed else None

    def set_actor(self, actor: Actor) -> None:
        """Another user signed in (after a sign-out): same window, same engine, fresh session state.

        Tools follow the new role, the undo history is dropped (it was the previous user's), and the
        first order to do is opened again (its view audited for the new user).
        """
        self.actor = actor
        with self.db.session() as session:
            self.user_display = user_display_name(session, actor.username)
        self.user_label.setText(f"{self.user_display} ({self.actor.role})")
        self.tools_menu.menuAction().setVisible(False)
        for spec in self._tool_specs:
            self._apply_tool_spec(*spec)
        self.undo_stack.clear()
        self._update_undo()
        self.undo_box.setVisible(False)
        self.current_order_id = None
        self.order_view.show_empty()
        self.table.clearSelection()
        self.model.reload()
        self.set_status_filter("todo")
        next_id = self.next_in_queue()
        if next_id is not None:
            self.open_order(next_id)
        else:
            self.open_first_todo()

    # --- engine worker ---------------------------------------------------------------------------
    def start_worker(self) -> None:
        if self.worker is not None:
            return
        quick_built: threading.Event | None = None
        if self._quick_factory is not None and self.quick_worker is None and self.engine_state != READY:
            # the quick engine is built first (seconds), then the slow one: builds take turns
            quick_built = threading.Event()
        worker = InferenceWorker(self.db, self._engine_factory, build_after=quick_built)
        worker.state_changed.connect(self._on_engine_state)
        worker.engine_ready.connect(self._on_engine_ready)
        worker.prediction_ready.connect(self._on_prediction)
        worker.failed.connect(self.show_error)
        worker.progress.connect(self._on_progress)
        self.worker = worker
        if self.current_order_id is not None:
            worker.request(self.current_order_id)
        worker.start()
        if quick_built is not None:
            quick = InferenceWorker(self.db, self._quick_factory, built=quick_built)
            quick.engine_ready.connect(self._on_quick_ready)
            quick.prediction_ready.connect(self._on_quick_prediction)
            quick.failed.connect(lambda m: log.warning("quick engine: %s", m))
            quick.progress.connect(self._on_quick_progress)
            self.quick_worker = quick
            if self.current_order_id is not None:
                quick.request(self.current_order_id)
            quick.start()
            self.order_view.set_engine_status(None, self.engine_name)
        self._start_loading_indicator()  # after the quick worker exists: its text is final from the start

    def _start_loading_indicator(self) -> None:
        self._load_clock.start()
        self._update_loading()
        self.load_bar.setVisible(True)
        self.load_label.setVisible(True)
        self._load_timer.start()

    def _loading_text(self, seconds: int) -> str:
        quick = " · quick suggestions meanwhile" if self.quick_worker is not None else ""
        return f"Loading the {self.engine_name} model… {seconds} s{quick}"

    def _update_loading(self) -> None:
        seconds = int(self._load_clock.elapsed() / 1000) if self._load_clock.isValid() else 0
        text = self._loading_text(seconds)
        # Wide enough for 999 s from the start: a label that grows re-lays out the whole window, which
        # repaints the worklist (~60 ms on the GUI thread).
        width = self.load_label.fontMetrics().horizontalAdvance(self._loading_text(999)) + 8
        if self.load_label.minimumWidth() < width:
            self.load_label.setMinimumWidth(width)
        self.load_label.setText(text)

    def _stop_loading_indicator(self) -> None:
        self._load_timer.stop()
        self.load_bar.setVisible(False)
        self.load_label.setVisible(False)

    def _stop_quick_worker(self) -> None:
        quick, self.quick_worker = self.quick_worker, None
        if quick is None:
            return
        for signal in (quick.engine_ready, quick.prediction_ready, quick.failed, quick.progress):
            signal.disconnect()
        self._queued.pop("quick", None)
        quick.stop()
        self._old_workers.append(quick)
        quick.finished.connect(lambda: self._old_workers.remove(quick) if quick in self._old_workers else None)

    def _on_quick_progress(self, computed: int, queued: int) -> None:
        self._note_queued("quick", queued)

    def _on_quick_ready(self, name: str, version: str, device: str, model_id: str) -> None:
        self.quick_model_id = model_id

    def _on_quick_prediction(self, order_id: int, prediction: Prediction) -> None:
        """A quick suggestion: shown where the running engine has none yet (it replaces them when it does)."""
        main_model = self.engine_info.get("model_id") if self.engine_state == READY else ""
        entry = self.model.entry_by_id(order_id)
        if entry is not None and (not main_model or entry.model_version != main_model):
            self.model.set_prediction(order_id, prediction)
        if order_id == self.current_order_id:
            shown = self.order_view.prediction
            if shown is None or (main_model and shown.model != main_model) or not main_model:
                self.order_view.set_prediction(prediction)

    def restart_engine(self, engine_factory: Callable[[], SuggestionEngine] | None = None) -> None:
        """Stop the current worker (it finishes its batch) and start a new one with fresh settings."""
        if engine_factory is not None:
            self._engine_factory = engine_factory
        with self.db.session() as session:
            self.site = load_settings(session)
            self.catalog = ensure_catalog(session)
        self._active_models = self._query_active_models()
        self.engine_name = self.site.engine
        self.order_view.set_catalog(self.catalog)
        self.order_view.set_threshold(self.site.confidence_threshold)
        self.model.confidence_threshold = self.site.confidence_threshold
        old = self.worker
        self.worker = None
        self._stop_quick_worker()
        if old is not None:
            for signal in (old.state_changed, old.engine_ready, old.prediction_ready, old.failed, old.progress):
                signal.disconnect()
            old.stop()
            self._old_workers.append(old)
            old.finished.connect(lambda: self._old_workers.remove(old) if old in self._old_workers else None)
        self.start_worker()

    def _query_active_models(self) -> dict[str, str | None]:
        from radassist.engine_factory import active_model_paths

        try:
            with self.db.session() as session:
                return active_model_paths(session)
        except Exception as exc:  # a locked or unavailable database: try again on the next tick
            log.warning("could not read the active model versions: %s", exc)
            return dict(getattr(self, "_active_models", {}))

    def check_active_models(self) -> bool:
        """Restart the engine when the registry's active versions changed (promotion elsewhere)."""
        current = self._query_active_models()
        if current == self._active_models:
            return False
        self.statusBar().showMessage("A new model version was activated; reloading the engine", 8000)
        self.restart_engine()
        return True

    def stop_worker(self, wait_ms: int | None = None) -> bool:
        """Ask the worker(s) to stop; True when all have finished (a model still loading may not)."""
        finished = True
        for worker in [self.worker, self.quick_worker, *self._old_workers]:
            if worker is None:
                continue
            worker.stop()
            if wait_ms is None:
                worker.wait()
            else:
                finished = worker.wait(wait_ms) and finished
        return finished

    def _set_engine_label(self, state: str, detail: str = "") -> None:
        info = self.engine_info
        parts = [f"Engine: {info['name']}"]
        if info["version"]:
            parts.append(info["version"])
        if info["device"]:
            parts.append(info["device"])
        label = {LOADING: "loading…", READY: "ready", ERROR: "error", STOPPED: "stopped"}.get(state, state)
        parts.append(label)
        self.engine_label.setText("  ·  ".join(parts))
        self.engine_label.setProperty("state", state)
        self.engine_label.style().unpolish(self.engine_label)
        self.engine_label.style().polish(self.engine_label)
        self.engine_label.setToolTip(detail or info.get("model_id", ""))

    def _on_engine_state(self, state: str, detail: str) -> None:
        self.engine_state = state
        self._set_engine_label(state, detail)
        if state in (ERROR, STOPPED):
            self._stop_loading_indicator()
        if state == ERROR:
            self.show_error(detail or "engine error")
            self.order_view.set_engine_status(None, "")
            self.order_view.set_engine_unavailable(detail or "engine error")

    def _on_engine_ready(self, name: str, version: str, device: str, model_id: str) -> None:
        self.engine_info = {"name": name, "version": version, "device": device, "model_id": model_id}
        self.engine_state = READY
        self._set_engine_label(READY)
        self._stop_loading_indicator()
        self._stop_quick_worker()  # the running engine takes over; its suggestions replace the quick ones
        self.order_view.set_engine_status(model_id, "")
        self.model.set_model_version(model_id, reload=False)  # the worker reports every to-do order's
        if self.current_order_id is not None:
            pred = self.order_view.prediction
            if pred is None or pred.model != model_id:
                self.worker.request(self.current_order_id)

    def _on_prediction(self, order_id: int, prediction: Prediction) -> None:
        self.model.set_prediction(order_id, prediction)
        if order_id == self.current_order_id:
            self.order_view.set_prediction(prediction)

    def _note_queued(self, worker: str, queued: int) -> None:
        """While a worker works, its saves need no worklist reload: it hands each suggestion over itself."""
        self._queued[worker] = queued
        if not queued:
            self.model.absorb_own_suggestions()
        self.model.own_suggestions = any(self._queued.values())

    def _on_progress(self, computed: int, queued: int) -> None:
        self._note_queued("main", queued)
        self.progress_label.setText(f"Suggestions: {queued} queued" if queued else
                                    "Suggestions: all computed" if computed else "")

    def show_error(self, message: str) -> None:
        self.last_error = message
        self.error_label.setText(f"⚠ {message}")
        self.error_label.setToolTip(message)
        self.error_label.setVisible(True)
        self._error_timer.start(30_000)
        log.warning("%s", message)

    # --- worklist --------------------------------------------------------------------------------
    def _update_count(self) -> None:
        shown = self.proxy.rowCount()
        todo = sum(1 for e in self.model.entries() if e.status == "todo")
        stat = sum(1 for e in self.model.entries() if e.status == "todo" and e.priority == "STAT")
        self.count_label.setText(f"{shown} shown · {todo} to do" + (f" · {stat} STAT" if stat else ""))

    def set_status_filter(self, status: str) -> None:
        self.proxy.set_status_filter(status)
        self.fit_columns()
        for s, button in self.status_buttons.items():
            button.setChecked(s == status)
        self.filter_actions[status].setChecked(True)
        self._update_count()
        self._reselect_current()

    def _reselect_current(self) -> None:
        row = self.proxy.proxy_row_of(self.current_order_id) if self.current_order_id is not None else None
        if row is not None:
            self._select_row(row, open_it=False)

    def _select_row(self, proxy_row: int, open_it: bool = True) -> None:
        index = self.proxy.index(proxy_row, 0)
        self._opening = not open_it
        try:
            self.table.selectionModel().setCurrentIndex(
                index, self.table.selectionModel().SelectionFlag.ClearAndSelect
                | self.table.selectionModel().SelectionFlag.Rows)
        finally:
            self._opening = False
        self.table.scrollTo(index)

    def _on_current_row(self, current, _previous) -> None:
        if self._opening or not current.isValid():
            return
        entry = self.proxy.entry(current.row())
        if entry is not None and entry.id != self.current_order_id:
            self.open_order(entry.id)

    def _on_polled(self, added: list[int]) -> None:
        self._update_count()
        if added:
            self.statusBar().showMessage(f"{len(added)} new order(s) in the worklist", 8000)
            if self.worker is not None:
                self.worker.refresh_queue()
            if self.current_order_id is None:
                self.open_first_todo()
        self._reselect_current()

    def refresh(self) -> None:
        self.model.poll()
        if self.worker is not None:
            self.worker.refresh_queue()

    def open_first_todo(self) -> None:
        for row in range(self.proxy.rowCount()):
            if self.proxy.entry(row).status == "todo":
                self._select_row(row)
                return
        if self.current_order_id is None:
            self.order_view.show_empty("No orders waiting" if self.model.rowCount() else "The worklist is empty")

    def move_order(self, step: int) -> None:
        """Open the next/previous row (Ctrl+Down/Up). Only opens it: the focus stays where it is."""
        rows = self.proxy.rowCount()
        if not rows:
            return
        current = self.proxy.proxy_row_of(self.current_order_id) if self.current_order_id is not None else None
        target = 0 if current is None else max(0, min(rows - 1, current + step))
        self._select_row(target)

    def open_order(self, order_id: int) -> None:
        """Show an order: audited view, cached suggestions if any; ask the worker for the rest."""
        try:
            with self.db.session() as session:
                details, prediction = order_details(session, self.actor, order_id,
                                                    self.engine_info.get("model_id") or None)
        except Exception as exc:
            self.show_error(f"Could not open the order: {type(exc).__name__}: {exc}")
            return
        self.current_order_id = order_id
        self.order_view.show_order(details, prediction)
        row = self.proxy.proxy_row_of(order_id)
        if row is not None and self.table.currentIndex().row() != row:
            self._select_row(row, open_it=False)
        if self.worker is not None and details.status == "todo" and (
                prediction is None or prediction.model != self.engine_info.get("model_id")):
            self.worker.request(order_id)
        self.order_opened.emit(order_id)

    def next_in_queue(self, exclude: int | None = None) -> int | None:
        """The top of the queue: the to-do order first in worklist order (STAT, then URGENT, then
        ROUTINE; longest waiting first), among those the modality and text filters let through,
        whatever the table is sorted by or which row was decided."""
        todo = [e for e in self.model.entries()
                if e.status == "todo" and e.id != exclude and self.proxy.accepts(e, any_status=True)]
        return min(todo, key=WorklistEntry.sort_key).id if todo else None

    # --- decisions -------------------------------------------------------------------------------
    def conflicts_of(self, order_id: int, codes: tuple[str, ...]) -> tuple[str, ...]:
        """The core's answer (worklist.decision_conflicts): the flags these protocols go against."""
        try:
            with self.db.session() as session:
                return conflicts_for_order(session, order_id, codes)
        except Exception as exc:  # the core checks again when it records the decision
            log.warning("could not check flag conflicts: %s", type(exc).__name__)
            return ()

    def confirm_redecide(self, entry: WorklistEntry | None, order, code: str) -> bool:
        """A decided order is decided again: ask first (No is the default, so a stray Enter changes nothing)."""
        if entry is not None and entry.decided_label:
            previous = entry.decided_label
        elif order is not None and order.status == "returned":
            previous = "Returned"
        else:
            previous = (order.decided_code if order is not None else "") or "?"
        who = patient_label(entry, order.accession if order is not None else "")
        state = "returned to the referrer" if previous == "Returned" else f"already protocoled as {previous}"
        box = QMessageBox(QMessageBox.Icon.Question, "Replace the decision?",
                          f"{who} is {state}.\n\nReplace it with {code}?",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setObjectName("confirmRedecide")
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.setEscapeButton(QMessageBox.StandardButton.No)
        return box.exec() == QMessageBox.StandardButton.Yes

    def commit(self, decision: DecisionInput) -> bool:
        """Commit the decision; only then show the order done and open the top of the queue."""
        entry = self.model.entry_by_id(decision.order_id)
        order = self.order_view.order
        label = " + ".join(decision.codes)
        if self._already_decided(entry, order, decision.order_id) and not self.confirm_redecide(entry, order, label):
            self.statusBar().showMessage("Kept the earlier decision", 4000)
            return False
        try:
            decision_id, action = commit_decision(self.db, self.actor, decision)
        except Exception as exc:
            self.show_error(f"Decision NOT saved: {type(exc).__name__}: {exc}")
            QMessageBox.warning(self, "Decision not saved", f"The decision could not be saved:\n{exc}")
            return False
        self.decision_committed.emit(decision.order_id)
        next_id = self.next_in_queue(exclude=decision.order_id)
        self._opening = True
        try:
            self.model.mark_done(decision.order_id, decision.final_code, action, decision_id,
                                 extra=tuple(decision.additional_codes))
        finally:
            self._opening = False
        who = patient_label(entry, order.accession if order is not None else "")
        self._after_decision(decision_id, decision.order_id, label, who, f"Saved: {label} for {who} ({action})",
                             next_id)
        return True

    @staticmethod
    def _already_decided(entry, order, order_id: int) -> bool:
        return (entry is not None and entry.decided) or (
            order is not None and order.id == order_id and order.status in ("done", "returned"))

    def return_order(self, order_id: int | None = None, question: str | None = None) -> bool:
        """Return the order to the referrer with a question (asked in a dialog when not given)."""
        order_id = order_id if order_id is not None else self.current_order_id
        if order_id is None:
            self.statusBar().showMessage("Open an order first", 4000)
            return False
        entry = self.model.entry_by_id(order_id)
        order = self.order_view.order if self.order_view.order is not None and \
            self.order_view.order.id == order_id else None
        who = patient_label(entry, order.accession if order is not None else "")
        if question is None:
            from radassist.gui.return_dialog import ReturnDialog

            exam = entry.ordered_exam if entry is not None else (order.ordered_exam if order else "")
            dialog = ReturnDialog(who, exam, self)
            self.return_dialog = dialog
            accepted = dialog.exec() == QDialog.DialogCode.Accepted
            self.return_dialog = None
            if not accepted:
                return False
            question = dialog.question()
        elif self._already_decided(entry, order, order_id) and not self.confirm_redecide(
                entry, order, "a return to the referrer"):
            return False
        prediction = self.order_view.prediction if order is not None else None
        try:
            decision_id = commit_return(self.db, self.actor, order_id, question, prediction)
        except Exception as exc:
            self.show_error(f"Return NOT saved: {exc}")
            QMessageBox.warning(self, "Not returned", f"The order could not be returned:\n{exc}")
            return False
        self.decision_committed.emit(order_id)
        next_id = self.next_in_queue(exclude=order_id)
        self._opening = True
        try:
            self.model.mark_returned(order_id, decision_id, question)
        finally:
            self._opening = False
        self._after_decision(decision_id, order_id, "Return", who, f"Returned: {who}", next_id)
        return True

    def _after_decision(self, decision_id: int, order_id: int, label: str, who: str, saved: str,
                        next_id: int | None) -> None:
        """After the commit: undo entry, "Saved … Undo" in the status bar, the top of the queue opens."""
        self._update_count()
        self.undo_stack.append((decision_id, order_id, label, who))
        self._update_undo()
        self.saved_label.setFixedWidth(min(300, self.saved_label.fontMetrics().horizontalAdvance(saved) + 12))
        self.saved_label.setText(saved)
        self.saved_label.setToolTip(saved)
        self.undo_box.setVisible(True)
        self._saved_timer.start(UNDO_SHOWN_MS)
        if next_id is not None:
            self.open_order(next_id)
        else:
            self.current_order_id = None
            self.order_view.show_empty("All orders are protocoled")
            self.table.clearSelection()

    def _update_undo(self) -> None:
        self.act_undo.setEnabled(bool(self.undo_stack))
        if self.undo_stack:
            _, _, code, who = self.undo_stack[-1]
            self.act_undo.setText(f"&Undo {code} for {who}")
        else:
            self.act_undo.setText("&Undo last decision")

    def undo_last_decision(self) -> bool:
        """Ctrl+Z: revert the last decision made here (audited); the order returns to To do and opens."""
        if not self.undo_stack:
            self.statusBar().showMessage("Nothing to undo", 4000)
            return False
        decision_id, order_id, code, who = self.undo_stack[-1]
        try:
            commit_revert(self.db, self.actor, decision_id)
        except Exception as exc:
            self.undo_stack.pop()  # it cannot be undone (replaced elsewhere, reverted already): drop it
            self._update_undo()
            self.show_error(f"Could not undo: {exc}")
            return False
        self.undo_stack.pop()
        self._update_undo()
        self._opening = True
        try:
            self.model.mark_todo(order_id)
        finally:
            self._opening = False
        self._update_count()
        self._saved_timer.stop()
        self.undo_box.setVisible(False)
        self.statusBar().showMessage(f"Undone: {code} for {who}; the order is back in To do", 8000)
        self.open_order(order_id)
        return True

    # --- file menu -------------------------------------------------------------------------------
    def import_orders(self, paths: list[str] | None = None) -> None:
        from radassist.ingest import import_files

        if not paths:
            paths, _ = QFileDialog.getOpenFileNames(self, "Import orders", "", "Orders (*.jsonl *.json *.csv);;All (*)")
        if not paths:
            return
        try:
            report = import_files(self.db, paths, actor=self.actor)
        except Exception as exc:
            self.show_error(f"Import failed: {type(exc).__name__}: {exc}")
            return
        self.model.poll()
        self.statusBar().showMessage(f"Import: {report.summary()}", 10000)
        if report.problems:
            listing = "\n".join(str(p) for p in report.problems[:20])
            more = f"\n… and {len(report.problems) - 20} more" if len(report.problems) > 20 else ""
            QMessageBox.warning(self, "Import problems", f"{report.summary()}\n\n{listing}{more}")

    # --- focus -----------------------------------------------------------------------------------
    def focus_worklist(self) -> None:
        self.table.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def focus_order(self) -> None:
        self.order_view.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def fit_columns(self) -> None:
        """Fixed columns as wide as their text, the rest share the width: no sideways scrolling."""
        header = self.table.horizontalHeader()
        metrics = self.table.fontMetrics()
        bold = self.table.font()
        bold.setBold(True)
        from PySide6.QtGui import QFontMetrics

        head_metrics = QFontMetrics(bold)
        fixed = {col: max(metrics.horizontalAdvance(text), head_metrics.horizontalAdvance(HEADERS[col]))
                 + (30 if col == COL_PRIORITY else 24) for col, text in FIXED_COLUMN_TEXT.items()}
        available = self.table.viewport().width()
        # columns that say nothing in this list: Status in To do (all "To do"), Waiting in Done (empty)
        idle = {"todo": (COL_STATUS,), "done": (COL_WAITING, COL_CONFIDENCE)}.get(self.proxy.status_filter(), ())
        for col in (COL_STATUS, COL_WAITING, COL_CONFIDENCE):
            self.table.setColumnHidden(col, col in idle)
            if col in idle:
                fixed.pop(col, None)
        flex = dict(FLEX_COLUMNS)
        # the Protocol column shows a code with "+2" in full ("CTA-HEAD-NECK +2"; longer ones elide, tooltip)
        flex[COL_SUGGESTION] = (metrics.horizontalAdvance("CTA-HEAD-NECK +2") + 24, FLEX_COLUMNS[COL_SUGGESTION][1])
        for col in NARROW_HIDDEN:
            self.table.setColumnHidden(col, False)
        # the accession (also in the patient's tooltip and the order view) only where names have room
        if available < sum(fixed.values()) + sum(m for m, _ in flex.values()) + 240:
            for col in NARROW_HIDDEN:
                self.table.setColumnHidden(col, True)
                flex.pop(col, None)
        for col, width in fixed.items():
            header.resizeSection(col, width)
        rest = max(0, available - sum(fixed.values()))
        weights = sum(w for _, w in flex.values())
        extra = max(0, rest - sum(m for m, _ in flex.values()))
        cols = list(flex)
        used = 0
        for i, col in enumerate(cols):
            minimum, weight = flex[col]
            width = minimum + int(extra * weight / weights) if i < len(cols) - 1 else max(36, rest - used)
            header.resizeSection(col, width)
            used += width

    def focus_modality(self) -> None:
        """Ctrl+Shift+M: the modality filter, opened (↑/↓ and Enter choose)."""
        self.modality.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.modality.showPopup()

    def sort_by(self, column: int, default_order: bool = False) -> None:
        """Sort the worklist by a column; the same column again reverses it. Priority = worklist order."""
        header = self.table.horizontalHeader()
        if default_order or header.sortIndicatorSection() != column:
            order = Qt.SortOrder.AscendingOrder
        else:
            order = Qt.SortOrder.DescendingOrder if header.sortIndicatorOrder() == Qt.SortOrder.AscendingOrder \
                else Qt.SortOrder.AscendingOrder
        self.table.sortByColumn(column, order)
        direction = "ascending" if order == Qt.SortOrder.AscendingOrder else "descending"
        self.statusBar().showMessage(f"Sorted by {HEADERS[column]} ({direction})", 4000)
        self._reselect_current()

    def show_sort_menu(self) -> None:
        """Ctrl+Shift+S: a menu of the columns at the worklist (↑/↓ and Enter choose)."""
        header = self.table.horizontalHeader()
        for col, action in self.sort_actions.items():
            mark = ""
            if header.sortIndicatorSection() == col:
                mark = "  ▲" if header.sortIndicatorOrder() == Qt.SortOrder.AscendingOrder else "  ▼"
            action.setText(HEADERS[col] + mark)
        self.sort_menu.popup(self.table.mapToGlobal(self.table.rect().topLeft()))

    def focus_filter(self) -> None:
        self.filter_text.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.filter_text.selectAll()

    def eventFilter(self, obj, event):
        from PySide6.QtCore import QEvent

        if event.type() == QEvent.Type.Resize and obj is self.table.viewport():
            QTimer.singleShot(0, self.fit_columns)
        if event.type() == QEvent.Type.KeyPress and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if obj is self.table:
                self.focus_order()
                return True
            if obj is self.filter_text:
                if self.proxy.rowCount():
                    self._select_row(0)
                self.focus_order()
                return True
        if event.type() == QEvent.Type.KeyPress and obj is self.filter_text and event.key() == Qt.Key.Key_Escape:
            self.filter_text.clear()
            self.focus_order()
            return True
        return super().eventFilter(obj, event)

    # --- help ------------------------------------------------------------------------------------
    def show_shortcuts(self) -> None:
        from radassist.gui.shortcuts_dialog import ShortcutsDialog

        ShortcutsDialog(self).exec()

    def show_about(self) -> None:
        QMessageBox.about(self, "About RadAssist",
                          "<b>RadAssist</b><br>Imaging protocol assistant. Runs entirely on this workstation; "
                          "patient data never leaves it.")

    # --- layout persistence ----------------------------------------------------------------------
    def _restore_layout(self) -> None:
        s = self.ui_settings
        geometry = s.value("main/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        state = s.value("main/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        splitter = s.value("main/splitter")
        if isinstance(splitter, QByteArray) and not splitter.isEmpty():
            self.splitter.restoreState(splitter)
        header = s.value("main/worklistHeader")
        if isinstance(header, QByteArray) and not header.isEmpty():
            self.table.horizontalHeader().restoreState(header)

    def save_layout(self) -> None:
        s = self.ui_settings
        s.setValue("main/geometry", self.saveGeometry())
        s.setValue("main/state", self.saveState())
        s.setValue("main/splitter", self.splitter.saveState())
        s.setValue("main/worklistHeader", self.table.horizontalHeader().saveState())
        s.sync()

    def closeEvent(self, event):
        self.closing.emit()
        self.save_layout()
        self.hide()
        self.workers_finished = self.stop_worker(self.close_wait_ms)
        super().closeEvent(event)
