"""The worklist: a table model over the orders in the database, and its sort/filter proxy.

The source model holds one ``WorklistEntry`` per order (a plain snapshot, no live ORM objects).
``WorklistModel.reload`` re-reads the database and applies the differences (rows inserted or
changed), so selections survive. ``WorklistModel.poll`` is a cheap query on counts and max ids
that triggers a reload only when something changed (an import by another process, a decision
made on another workstation).
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPainter
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem
from radassist.domain import Prediction, SafetyFlag, format_model_confidence
from radassist.store.models import utcnow
from radassist.worklist import PRIORITY_RANK
from radassist.worklist_queries import (  # the queries live in the core; re-exported for callers
    ORDER_PART, WorklistEntry, best_prediction, database_signature, modality_of, worklist_entries,
)
from radassist.worklist import prediction_from_row  # noqa: F401  (re-export)

load_entries = worklist_entries

# Column indices
COL_PRIORITY, COL_ACCESSION, COL_PATIENT, COL_AGE_SEX, COL_FLAGS, COL_EXAM, COL_WAITING, COL_STATUS, \
    COL_SUGGESTION, COL_CONFIDENCE = range(10)
# the "Protocol" column: the engine's suggestion while an order waits, the decided protocol once done
HEADERS = ("Priority", "Accession", "Patient", "Age/Sex", "Flags", "Ordered exam", "Waiting", "Status", "Protocol",
           "Conf.")
HEADER_TOOLTIPS = {COL_FLAGS: "Safety flags found in the notes (hover a row for the evidence)",
                   COL_STATUS: "To do, or how it was decided: Accepted (the suggestion) or Overridden",
                   COL_SUGGESTION: "To do: the engine's top suggestion. Done: the protocol decided"}

# compact flag icons: a short glyph per flag type (drawn as a badge by FlagsDelegate)
FLAG_ICONS = {"contrast-allergy": "Cx", "renal-impairment": "Rn", "pregnancy": "Pg", "mri-unsafe-implant": "Im",
              "anticoagulation": "Ac", "metformin": "Mf", "claustrophobia": "Cl"}
FLAG_NAMES = {"contrast-allergy": "Contrast allergy", "renal-impairment": "Renal impairment",
              "pregnancy": "Pregnancy", "mri-unsafe-implant": "MRI-unsafe implant",
              "anticoagulation": "Anticoagulation", "metformin": "Metformin", "claustrophobia": "Claustrophobia"}
FLAG_COLOURS = {"current": ("#b3261e", "#ffffff"), "caution": ("#a15c00", "#ffffff"),
                "muted": ("#d5dae1", "#4a5260")}
FLAGS_ROLE = Qt.ItemDataRole.UserRole + 3  # [(icon text, tone)] for FlagsDelegate


def flag_tone(flag: SafetyFlag) -> str:
    if not flag.is_current or flag.handled:
        return "muted"
    return "caution" if flag.severity == "caution" else "current"


def unique_flags(flags) -> list[SafetyFlag]:
    """One flag per type: the most pressing one (current before caution before resolved)."""
    best: dict[str, SafetyFlag] = {}
    rank = {"current": 0, "caution": 1, "muted": 2}
    for f in flags:
        if f.type not in best or rank[flag_tone(f)] < rank[flag_tone(best[f.type])]:
            best[f.type] = f
    return list(best.values())


def flags_tooltip(flags) -> str:
    lines = []
    for f in unique_flags(flags):
        name = FLAG_NAMES.get(f.type, f.type.replace("-", " ").capitalize())
        extra = [x for x in (f.severity if f.severity not in ("any", "") else "",
                             f.status if f.status != "active" else "", "handled" if f.handled else "") if x]
        lines.append(f"{FLAG_ICONS.get(f.type, '?')}  {name}" + (f" ({', '.join(extra)})" if extra else "")
                     + (f": “{f.evidence}”" if f.evidence else ""))
    return "\n".join(lines)

ENTRY_ROLE = Qt.ItemDataRole.UserRole + 1  # the WorklistEntry of a row
SORT_ROLE = Qt.ItemDataRole.UserRole + 2   # a sortable key for the column

PRIORITY_COLOURS = {"STAT": ("#b3261e", "#ffffff"), "URGENT": ("#a15c00", "#ffffff"), "ROUTINE": ("#e3e8ef", "#2b3440")}

def format_waiting(ordered_at: datetime | None, now: datetime | None = None) -> str:
    if ordered_at is None:
        return ""
    minutes = max(0, int(((now or utcnow()) - ordered_at).total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d}"
    return f"{hours // 24} d {hours % 24} h"


# --- the table model ---------------------------------------------------------------------------

class WorklistModel(QAbstractTableModel):
    """All orders of the database (filtering is the proxy's job). Reads on the GUI thread are cheap
    selects; the model never runs inference."""

    polled = Signal(list)  # after a poll found changes: ids of orders new to the model

    def __init__(self, db=None, parent=None, poll_ms: int = 2000):
        super().__init__(parent)
        self._db = db
        self._entries: list[WorklistEntry] = []
        self._row_of: dict[int, int] = {}
        self._signature: tuple | None = None
        self.model_version: str | None = None
        self.own_suggestions = False  # the app's worker is computing suggestions (it reports each one)
        self.confidence_threshold = 0.5
        self._cells: dict[int, tuple] = {}  # order id -> (entry, threshold, tick, cells): see data()
        self._ticks = 0
        self._bold = QFont()
        self._bold.setBold(True)
        self._poll = QTimer(self)
        self._poll.setInterval(poll_ms)
        self._poll.timeout.connect(self.poll)
        self._clock = QTimer(self)  # waiting times tick
        self._clock.setInterval(30_000)
        self._clock.timeout.connect(self._tick)
        if db is not None:
            self.reload()
            self._poll.start()
            self._clock.start()

    # -- data access
    def entry(self, row: int) -> WorklistEntry:
        return self._entries[row]

    def entry_by_id(self, order_id: int) -> WorklistEntry | None:
        row = self._row_of.get(order_id)
        return self._entries[row] if row is not None else None

    def row_of(self, order_id: int) -> int | None:
        return self._row_of.get(order_id)

    def entries(self) -> list[WorklistEntry]:
        return list(self._entries)

    def todo_ids_in_order(self) -> list[int]:
        return [e.id for e in sorted(self._entries, key=WorklistEntry.sort_key) if e.status == "todo"]

    # -- updates
    def set_entries(self, entries: list[WorklistEntry]) -> list[int]:
        """Apply a fresh snapshot: changed rows emit dataChanged, new ones are inserted. Returns new ids."""
        fresh = {e.id: e for e in entries}
        gone = [e.id for e in self._entries if e.id not in fresh]
        for order_id in gone:  # rare: orders are never deleted by the app
            row = self._row_of[order_id]
            self.beginRemoveRows(QModelIndex(), row, row)
            del self._entries[row]
            self._row_of = {e.id: i for i, e in enumerate(self._entries)}
            self.endRemoveRows()
        for i, old in enumerate(self._entries):
            new = fresh[old.id]
            if new != old:
                self._entries[i] = new
                self.dataChanged.emit(self.index(i, 0), self.index(i, len(HEADERS) - 1))
        added = [e for e in entries if e.id not in self._row_of]
        if added:
            first = len(self._entries)
            self.beginInsertRows(QModelIndex(), first, first + len(added) - 1)
            self._entries.extend(added)
            for i, e in enumerate(added, start=first):
                self._row_of[e.id] = i
            self.endInsertRows()
        return [e.id for e in added]

    def update_entry(self, entry: WorklistEntry) -> None:
        row = self._row_of.get(entry.id)
        if row is None:
            self.set_entries(self._entries + [entry])
            return
        if self._entries[row] != entry:
            self._entries[row] = entry
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(HEADERS) - 1))

    def mark_done(self, order_id: int, final_code: str = "", action: str = "",
                  decision_id: int | None = None, extra: tuple[str, ...] | None = None) -> None:
        """Show an order as done. Callers do this only after its decision is committed."""
        entry = self.entry_by_id(order_id)
        if entry is not None:
            self.update_entry(replace(entry, status="done", decided_code=final_code or entry.decided_code,
                                      decided_action=action or entry.decided_action,
                                      decision_id=decision_id if decision_id is not None else entry.decision_id,
                                      decided_extra=tuple(extra) if extra is not None else entry.decided_extra,
                                      question=""))

    def mark_returned(self, order_id: int, decision_id: int, question: str) -> None:
        """Show an order as returned to the referrer (after the commit)."""
        entry = self.entry_by_id(order_id)
        if entry is not None:
            self.update_entry(replace(entry, status="returned", decided_code="", decided_action="returned",
                                      decision_id=decision_id, decided_extra=(), question=question))

    def mark_todo(self, order_id: int) -> None:
        """Show an order as waiting again (its decision was reverted and committed)."""
        entry = self.entry_by_id(order_id)
        if entry is not None:
            self.update_entry(replace(entry, status="todo", decided_code="", decided_action="", decision_id=None,
                                      decided_extra=(), question=""))

    def set_prediction(self, order_id: int, prediction: Prediction | None) -> None:
        entry = self.entry_by_id(order_id)
        if entry is None:
            return
        top = prediction.top if prediction else None
        self.update_entry(replace(
            entry, suggestion_code=top.code if top else "", suggestion_name=top.name if top else "",
            confidence=top.score if top else None, model_version=prediction.model if prediction else "",
            review_reason=(prediction.review_reason or "needs review") if prediction and prediction.review else "",
            flags=tuple(prediction.flags) if prediction and prediction.flags else entry.flags))

    def reload(self) -> list[int]:
        """Re-read every order from the database; returns the ids of orders new to the model."""
        if self._db is None:
            return []
        with self._db.session() as session:
            self._signature = database_signature(session)
            entries = worklist_entries(session, self.model_version)
        return self.set_entries(entries)

    def poll(self) -> bool:
        """Reload when the database changed since the last look (cheap query). True when reloaded."""
        if self._db is None:
            return False
        try:
            with self._db.session() as session:
                signature = database_signature(session)
        except Exception:  # a locked or busy database: try again at the next tick
            return False
        if signature == self._signature:
            return False
        if self.own_suggestions and self._signature is not None and signature[:ORDER_PART] == self._signature[:ORDER_PART]:
            # only suggestions changed, and the app's own worker writes those and hands each one to
            # set_prediction: no need to re-read the whole worklist on the GUI thread
            self._signature = signature
            return False
        added = self.reload()
        self.polled.emit(added)
        return True

    def absorb_own_suggestions(self) -> None:
        """A worker of this app has handed every suggestion it saved to `set_prediction`: take the
        database's suggestions as seen, so that the next poll does not re-read (and repaint) the
        whole worklist for them. Changes to orders or decisions still reload."""
        if self._db is None or self._signature is None:
            return
        try:
            with self._db.session() as session:
                signature = database_signature(session)
        except Exception:  # a busy database: the next poll reloads, which is only slower
            return
        if signature[:ORDER_PART] == self._signature[:ORDER_PART]:
            self._signature = signature

    def set_model_version(self, version: str | None, reload: bool = True) -> None:
        """The engine whose suggestions the worklist prefers. ``reload=False`` when its worker is about
        to hand over every order's suggestion anyway (stored or new): re-reading the whole worklist on
        the GUI thread the moment the engine is ready was its longest stall (~55 ms)."""
        if version != self.model_version:
            self.model_version = version
            if reload:
                self.reload()

    def _tick(self) -> None:
        self._ticks += 1  # waiting times changed: cached cells are stale
        if self._entries:
            self.dataChanged.emit(self.index(0, COL_WAITING), self.index(len(self._entries) - 1, COL_WAITING),
                                  [Qt.ItemDataRole.DisplayRole])

    # -- QAbstractTableModel
    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._entries)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and 0 <= section < len(HEADERS):
            if role == Qt.ItemDataRole.DisplayRole:
                return HEADERS[section]
            if role == Qt.ItemDataRole.ToolTipRole:
                return HEADER_TOOLTIPS.get(section)
            if role == Qt.ItemDataRole.TextAlignmentRole:
                return int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        return None

    _ITEM_FLAGS = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren

    def flags(self, index):
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return self._ITEM_FLAGS

    def _needs_review(self, e: WorklistEntry) -> bool:
        return e.confidence is not None and (bool(e.review_reason) or e.confidence < self.confidence_threshold)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        """Answered from a per-row cache: painting the worklist asks ~6 roles of every visible cell
        (1,500 calls for a full repaint), and computing them each time made a full repaint ~55 ms of the
        GUI thread. A row's cells are computed again when its entry object, the confidence threshold
        or the waiting-time tick changes (entries are immutable: a change replaces the object)."""
        row = index.row()
        if not (0 <= row < len(self._entries)) or not index.isValid():
            return None
        e = self._entries[row]
        cached = self._cells.get(e.id)
        if cached is None or cached[0] is not e or cached[1] != self.confidence_threshold \
                or cached[2] != self._ticks:
            cached = (e, self.confidence_threshold, self._ticks, self._row_cells(e))
            self._cells[e.id] = cached
        return cached[3][index.column()].get(role)

    _CACHED_ROLES = (Qt.ItemDataRole.DisplayRole, ENTRY_ROLE, SORT_ROLE, FLAGS_ROLE, Qt.ItemDataRole.ToolTipRole,
                     Qt.ItemDataRole.BackgroundRole, Qt.ItemDataRole.ForegroundRole, Qt.ItemDataRole.FontRole,
                     Qt.ItemDataRole.TextAlignmentRole)

    def _row_cells(self, e: WorklistEntry) -> list[dict]:
        cells = []
        for col in range(len(HEADERS)):
            values = {}
            for role in self._CACHED_ROLES:
                value = self._cell(e, col, role)
                if value is not None:
                    values[role] = value
            cells.append(values)
        return cells

    def _cell(self, e: WorklistEntry, col: int, role):
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(e, col)
        if role == ENTRY_ROLE:
            return e
        if role == SORT_ROLE:
            return self._sort_value(e, col)
        if role == FLAGS_ROLE:
            return [(FLAG_ICONS.get(f.type, "?"), flag_tone(f)) for f in unique_flags(e.flags)]
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == COL_FLAGS:
                return flags_tooltip(e.flags) or None
            if col == COL_SUGGESTION and e.status == "returned":
                return f"Returned to the referrer: “{e.question}”" if e.question else "Returned to the referrer"
            if col == COL_SUGGESTION and e.status == "done" and e.decided_code:
                how = {"accepted": "accepted the suggestion", "overridden": "overridden"}.get(e.decided_action, "")
                sugg = f"; the engine suggested {e.suggestion_code}" if e.decided_action == "overridden" \
                    and e.suggestion_code else ""
                return f"Decided: {' + '.join((e.decided_code, *e.decided_extra))} ({how}){sugg}"
            if col == COL_SUGGESTION and e.suggestion_code:
                return f"{e.suggestion_code}: {e.suggestion_name}"
            if col == COL_EXAM and e.ordered_exam:
                return f"Amended after decision (re-sent with different content)\n{e.ordered_exam}" if e.amended \
                    else e.ordered_exam
            if col in (COL_PATIENT, COL_ACCESSION):
                return f"{e.patient_name or 'Unknown patient'}" + (f" (MRN {e.mrn})" if e.mrn else "") \
                    + f" · accession {e.accession}"
            if col == COL_STATUS and e.status == "returned" and e.question:
                return f"Returned to the referrer: “{e.question}”"
            if col == COL_CONFIDENCE and self._needs_review(e):
                return f"Needs review: {e.review_reason}" if e.review_reason else \
                    "Below the minimum confidence: needs review"
            return None
        if role == Qt.ItemDataRole.BackgroundRole and col == COL_PRIORITY:
            return QBrush(QColor(PRIORITY_COLOURS.get(e.priority, PRIORITY_COLOURS["ROUTINE"])[0]))
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == COL_PRIORITY:
                return QBrush(QColor(PRIORITY_COLOURS.get(e.priority, PRIORITY_COLOURS["ROUTINE"])[1]))
            if e.status in ("done", "returned", "cancelled"):
                return QBrush(QColor("#6b7480"))
            if col == COL_CONFIDENCE and self._needs_review(e):
                return QBrush(QColor("#a15c00"))
            return None
        if role == Qt.ItemDataRole.FontRole:
            if col == COL_PRIORITY or (e.priority == "STAT" and e.status == "todo" and col == COL_PATIENT):
                return self._bold
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            if col in (COL_PRIORITY, COL_STATUS):
                return int(Qt.AlignmentFlag.AlignCenter)
            if col in (COL_CONFIDENCE, COL_WAITING):
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            return None
        return None

    def _display(self, e: WorklistEntry, col: int) -> str:
        if col == COL_PRIORITY:
            return e.priority
        if col == COL_ACCESSION:
            return e.accession
        if col == COL_PATIENT:
            return e.patient_name
        if col == COL_AGE_SEX:
            return e.age_sex
        if col == COL_EXAM:
            return f"✎ {e.ordered_exam}" if e.amended and e.status == "todo" else e.ordered_exam
        if col == COL_WAITING:
            return format_waiting(e.ordered_at) if e.status == "todo" else ""
        if col == COL_STATUS:
            if e.status == "done" and e.decided_action:
                return {"accepted": "Accepted", "overridden": "Overridden"}.get(e.decided_action,
                                                                               e.decided_action.capitalize())
            return {"done": "Done", "todo": "To do", "cancelled": "Cancelled", "returned": "Returned"}.get(
                e.status, e.status.capitalize())
        if col == COL_FLAGS:
            return " ".join(FLAG_ICONS.get(f.type, "?") for f in unique_flags(e.flags))
        if col == COL_SUGGESTION:
            if e.decided and e.decided_label:
                return e.decided_label  # "CT-HEAD-WO +2", "Returned"
            return e.suggestion_code or ("…" if e.status == "todo" else "")
        if col == COL_CONFIDENCE:
            if e.decided or e.confidence is None:
                return ""
            text = format_model_confidence(e.confidence)
            return f"⚠ {text}" if self._needs_review(e) else text
        return ""

    def _sort_value(self, e: WorklistEntry, col: int):
        if col == COL_PRIORITY:
            return PRIORITY_RANK.get(e.priority, 3)
        if col == COL_WAITING:  # longest waiting first when ascending
            return e.ordered_at.timestamp() if e.ordered_at else 0.0
        if col == COL_CONFIDENCE:
            return -1.0 if e.confidence is None else e.confidence
        if col == COL_AGE_SEX:
            return -1 if e.age is None else e.age
        if col == COL_FLAGS:  # most flags first when descending
            return len(unique_flags(e.flags))
        return self._display(e, col).lower() if col != COL_STATUS else e.status


class PriorityDelegate(QStyledItemDelegate):
    """Paints the priority as a badge: STAT red, URGENT amber, ROUTINE grey."""

    def paint(self, painter: QPainter, option, index):
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        text = opt.text
        opt.text = ""
        style = opt.widget.style() if opt.widget is not None else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
        if not text:
            return
        bg, fg = PRIORITY_COLOURS.get(text, PRIORITY_COLOURS["ROUTINE"])
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(opt.font)
        font.setBold(True)
        font.setPointSizeF(max(7.5, font.pointSizeF() - 1.5))
        painter.setFont(font)
        metrics = painter.fontMetrics()
        width = min(opt.rect.width() - 8, metrics.horizontalAdvance(text) + 16)
        height = min(opt.rect.height() - 8, metrics.height() + 4)
        rect = opt.rect.adjusted(0, 0, 0, 0)
        rect.setWidth(width)
        rect.setHeight(height)
        rect.moveCenter(opt.rect.center())
        rect.moveLeft(opt.rect.left() + 6)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(bg))
        painter.drawRoundedRect(rect, 4, 4)
        painter.setPen(QColor(fg))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()


class FlagsDelegate(QStyledItemDelegate):
    """Paints an order's flags as small badges: red current, amber caution, grey resolved or handled."""

    def paint(self, painter: QPainter, option, index):
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""
        style = opt.widget.style() if opt.widget is not None else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
        badges = index.data(FLAGS_ROLE) or []
        if not badges:
            return
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(opt.font)
        font.setBold(True)
        font.setPointSizeF(max(7.0, font.pointSizeF() - 2.0))
        painter.setFont(font)
        metrics = painter.fontMetrics()
        x = opt.rect.left() + 4
        height = min(opt.rect.height() - 10, metrics.height() + 2)
        for text, tone in badges:
            width = metrics.horizontalAdvance(text) + 8
            if x + width > opt.rect.right() - 2:
                painter.setPen(QColor("#4a5260"))
                painter.drawText(opt.rect.adjusted(x - opt.rect.left(), 0, 0, 0),
                                 Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, "…")
                break
            bg, fg = FLAG_COLOURS.get(tone, FLAG_COLOURS["current"])
            rect = opt.rect.adjusted(0, 0, 0, 0)
            rect.setLeft(x)
            rect.setWidth(width)
            rect.setHeight(height)
            rect.moveTop(opt.rect.top() + (opt.rect.height() - height) // 2)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(bg))
            painter.drawRoundedRect(rect, 3, 3)
            painter.setPen(QColor(fg))
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
            x += width + 3
        painter.restore()


# --- the proxy ---------------------------------------------------------------------------------

class WorklistProxy(QSortFilterProxyModel):
    """Filters (to do / done / all, modality, text) and the worklist order (STAT first, then oldest)."""

    STATUSES = ("todo", "done", "all")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._status = "todo"
        self._modality = ""
        self._terms: list[str] = []
        self.setDynamicSortFilter(True)
        self.setSortRole(SORT_ROLE)

    def set_status_filter(self, status: str) -> None:
        if status not in self.STATUSES:
            raise ValueError(status)
        if status != self._status:
            self._status = status
            self.invalidateFilter()

    def status_filter(self) -> str:
        return self._status

    def set_modality_filter(self, modality: str) -> None:
        modality = (modality or "").upper()
        if modality != self._modality:
            self._modality = modality
            self.invalidateFilter()

    def set_text_filter(self, text: str) -> None:
        terms = text.lower().split()
        if terms != self._terms:
            self._terms = terms
            self.invalidateFilter()

    def entry(self, proxy_row: int) -> WorklistEntry:
        return self.index(proxy_row, 0).data(ENTRY_ROLE)

    def proxy_row_of(self, order_id: int) -> int | None:
        source = self.sourceModel()
        row = source.row_of(order_id) if source is not None else None
        if row is None:
            return None
        idx = self.mapFromSource(source.index(row, 0))
        return idx.row() if idx.isValid() else None

    def accepts(self, e: WorklistEntry, *, any_status: bool = False) -> bool:
        """Whether ``e`` passes the filters (``any_status``: the modality and text filters only)."""
        if not any_status and self._status == "done" and not e.decided:
            return False  # Done: accepted, overridden and returned to the referrer
        if not any_status and self._status == "todo" and e.status != "todo":
            return False
        if self._modality and e.modality != self._modality:
            return False
        if self._terms:
            hay = e.haystack()
            return all(t in hay for t in self._terms)
        return True

    def filterAcceptsRow(self, source_row, source_parent):
        return self.accepts(self.sourceModel().entry(source_row))

    def lessThan(self, left, right):
        model = self.sourceModel()
        a, b = model.entry(left.row()), model.entry(right.row())
        col = left.column()
        if col == COL_PRIORITY:
            return a.sort_key() < b.sort_key()
        va, vb = model._sort_value(a, col), model._sort_value(b, col)
        if va == vb:
            return a.sort_key() < b.sort_key()
        return va < vb


__all__ = [
    "COL_ACCESSION", "COL_AGE_SEX", "COL_CONFIDENCE", "COL_EXAM", "COL_FLAGS", "COL_PATIENT", "FLAGS_ROLE",
    "FlagsDelegate", "COL_PRIORITY", "COL_STATUS",
    "COL_SUGGESTION", "COL_WAITING", "ENTRY_ROLE", "HEADERS", "SORT_ROLE",
    "WorklistEntry", "WorklistModel", "WorklistProxy", "best_prediction", "database_signature", "format_waiting",
    "load_entries", "modality_of", "prediction_from_row",
]
