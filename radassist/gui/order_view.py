"""One order: notes with safety flags, top-3 suggestions, accept / override, comment.

Keyboard (the view has focus while an order is open):
  Enter        accept the selected suggestion (top-1 when it is confident; nothing is pre-selected
               when it is below the confidence threshold: "needs review")
  1 / 2 / 3    decide with that suggestion
  Up / Down    move the selection among the suggestions
  letters      start a type-ahead search over the whole catalog; Up/Down pick, Enter confirms,
               Esc cancels
  +            add the selected suggestion (or search result) as one more protocol of the order
               (up to three: a code stroke's CT head + CTA + perfusion); Enter then saves them all,
               1/2/3 or a search adds the last one and saves; Backspace removes the last added
  Ctrl+M       comment field (Enter there confirms the selected protocol with the comment)
The view never writes to the database: it emits ``decision_requested`` with a DecisionInput and
the main window commits it.
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence

from PySide6.QtCore import QElapsedTimer, QEvent, QPoint, QRect, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QApplication, QFrame, QHBoxLayout, QLabel, QLayout, QLineEdit, QListWidget, QListWidgetItem, QProgressBar, QSizePolicy,
    QTextBrowser, QVBoxLayout, QWidget,
)

from radassist.domain import Prediction, Protocol, SafetyFlag, Suggestion, format_model_confidence
from radassist.safety import FLAG_LABELS
from radassist.worklist import MAX_PROTOCOLS, DecisionInput
from radassist.worklist_queries import OrderDetails

__all__ = ["CatalogSearch", "ElidedLabel", "OrderDetails", "OrderView", "SuggestionRowWidget"]

DEFAULT_FLAG_LABELS = {
    "contrast-allergy": "Contrast allergy", "renal-impairment": "Renal impairment", "pregnancy": "Pregnancy",
    "mri-unsafe-implant": "MRI-unsafe implant", "anticoagulation": "Anticoagulation", "metformin": "Metformin",
    "claustrophobia": "Claustrophobia",
}


def flag_label(flag_type: str) -> str:
    return FLAG_LABELS.get(flag_type) or DEFAULT_FLAG_LABELS.get(flag_type) or flag_type.replace("-", " ").capitalize()


def flag_chip_text(flag: SafetyFlag) -> str:
    """'⚠ Contrast allergy · severe', '⚠ Renal impairment · caution', '✓ MRI-unsafe implant · resolved'."""
    details = [d for d in (flag.kind if flag.type == "anticoagulation" else "",
                           flag.severity if flag.severity not in ("any", "") else "",
                           flag.status if flag.status != "active" else "") if d]
    icon = "⚠" if flag.is_current else "✓"
    return f"{icon} {flag_label(flag.type)}" + (" · " + ", ".join(details) if details else "")


def flag_tooltip(flags: Sequence[SafetyFlag]) -> str:
    lines = []
    for f in flags:
        line = f"“{f.evidence}”"
        if f.handled:
            line += f" (handled: “{f.handled}”)"
        if f.note:
            line += f"; {f.note}"
        lines.append(line)
    return "Evidence: " + "; ".join(lines)


# --- catalog type-ahead ------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")


class CatalogSearch:
    """Type-ahead over the catalog by code, name and indication words. Every typed word must match."""

    def __init__(self, protocols: Sequence[Protocol]):
        self.protocols = list(protocols)
        self._policy = None
        if self.protocols:
            try:  # the core's eligibility rules (the ranking applies the same ones to the engine's list)
                from radassist.safety_policy import site_policy

                self._policy = site_policy(self.protocols)
            except Exception:  # a site catalog the policy files do not fit: search everything
                self._policy = None
        self._index = []
        for p in self.protocols:
            code = p.code.lower()
            name = p.name.lower()
            head_words = set(_WORD.findall(code + " " + name + " " + p.modality.lower() + " " + p.body_region.lower()))
            ind_words = set(_WORD.findall(p.indications.lower()))
            self._index.append((p, code, name, head_words, ind_words, p.indications.lower()))

    def allows(self, protocol: Protocol, sex: str = "U", age: int | None = None) -> bool:
        """Whether the protocol is possible for the patient (the site's eligibility rules)."""
        return self._policy is None or self._policy.allows(protocol, sex, age)

    def search(self, query: str, limit: int = 30, sex: str = "U", age: int | None = None) -> list[Protocol]:
        """Matches for ``query``, never a protocol impossible for the patient's sex or age."""
        q = query.strip().lower()
        if not q:
            return []
        terms = _WORD.findall(q)
        compact = re.sub(r"[^a-z0-9]", "", q)
        scored = []
        for p, code, name, head, ind, ind_text in self._index:
            if not self.allows(p, sex, age):
                continue
            if code.startswith(q) or (compact and re.sub(r"[^a-z0-9]", "", code).startswith(compact)):
                scored.append((-100, p.code, p))
                continue
            if not terms:
                continue
            score = 0
            for t in terms:
                if t in head:
                    score += 4
                elif any(w.startswith(t) for w in head):
                    score += 3
                elif any(w.startswith(t) for w in ind):
                    score += 2
                elif len(t) >= 4 and t in ind_text:
                    score += 1
                else:
                    score = None
                    break
            if score is not None:
                if len(terms) > 1 and q in ind_text:
                    score += 2  # the words as typed, e.g. "head trauma"
                scored.append((-score, p.code, p))
        scored.sort(key=lambda s: (s[0], s[1]))
        return [p for _, _, p in scored[:limit]]


class ElidedLabel(QLabel):
    """A label that shows '…' instead of cutting its text when narrow."""

    def __init__(self, text: str = "", parent=None):
        super().__init__(parent)
        self._full = text
        self.setMinimumWidth(40)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt naming
        self._full = text
        self._elide()

    def full_text(self) -> str:
        return self._full

    def _elide(self) -> None:
        metrics = self.fontMetrics()
        super().setText(metrics.elidedText(self._full, Qt.TextElideMode.ElideRight, max(10, self.width())))

    def resizeEvent(self, event):
        super().resizeEvent(event)
        self._elide()


class FlowLayout(QLayout):
    """Lays its widgets out left to right and wraps to the next line: a long row of flag chips never
    widens the window."""

    def __init__(self, parent=None, spacing: int = 6):
        super().__init__(parent)
        self._items: list = []
        self._spacing = spacing
        self.setContentsMargins(0, 0, 0, 0)

    def addItem(self, item):  # noqa: N802 - Qt naming
        self._items.append(item)

    def addStretch(self, _stretch: int = 0) -> None:  # noqa: N802 - nothing to stretch in a flow
        return None

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int):  # noqa: N802
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int):  # noqa: N802
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self):  # noqa: N802
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:  # noqa: N802
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect):  # noqa: N802
        super().setGeometry(rect)
        self._arrange(rect, move=True)

    def sizeHint(self):  # noqa: N802
        return self.minimumSize()

    def minimumSize(self):  # noqa: N802
        size = QSize()
        for item in self._items:
            size = size.expandedTo(item.minimumSize())
        return size

    def _arrange(self, rect, move: bool) -> int:
        x, y, line = rect.x(), rect.y(), 0
        for item in self._items:
            hint = item.sizeHint()
            if x + hint.width() > rect.right() + 1 and line > 0:
                x, y, line = rect.x(), y + line + self._spacing, 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), hint))
            x += hint.width() + self._spacing
            line = max(line, hint.height())
        return y + line - rect.y()


class WrapLabel(QLabel):
    """A word-wrapping label (the whole text, on as many lines as it needs)."""

    def __init__(self, text: str = "", parent=None):
        super().__init__(text, parent)
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

    def full_text(self) -> str:
        return self.text()


# --- widgets -----------------------------------------------------------------------------------

class SuggestionRowWidget(QFrame):
    clicked = Signal(int)
    activated = Signal(int)

    def __init__(self, number: int, parent=None):
        super().__init__(parent)
        self.number = number
        self.setObjectName("suggestionRow")
        self.setProperty("selected", False)
        self.setProperty("lowConfidence", False)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.setSpacing(10)
        self.key = QLabel(str(number))
        self.key.setObjectName("keyCap")
        self.key.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.key.setFixedWidth(26)
        self.code = QLabel()
        self.code.setObjectName("suggestionCode")
        self.name = WrapLabel()  # the full name, wrapped: never cut
        self.name.setObjectName("suggestionName")
        self.detail = WrapLabel()  # why (phrases of the notes) and the flags it goes against or respects
        self.detail.setObjectName("suggestionWhy")
        texts = QVBoxLayout()
        texts.setContentsMargins(0, 0, 0, 0)
        texts.setSpacing(1)
        texts.addWidget(self.code)
        texts.addWidget(self.name)
        texts.addWidget(self.detail)
        self.bar = QProgressBar()
        self.bar.setObjectName("confidenceBar")
        self.bar.setRange(0, 100)
        self.bar.setTextVisible(False)
        self.bar.setFixedSize(70, 10)
        self.score = QLabel()
        self.score.setObjectName("suggestionScore")
        self.score.setFixedWidth(48)
        self.score.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        layout.addWidget(self.key, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(texts, 1)
        for w in (self.bar, self.score):
            layout.addWidget(w)
        self.suggestion: Suggestion | None = None

    def set_suggestion(self, s: Suggestion | None, protocol: Protocol | None, low: bool,
                       respects: tuple[str, ...] = ()) -> None:
        self.suggestion = s
        self.setVisible(s is not None)
        if s is None:
            return
        self.code.setText(s.code)
        self.name.setText(s.name)
        parts = []
        if s.conflicts:
            parts.append("⚠ against " + ", ".join(flag_label(c).lower() for c in s.conflicts))
        if respects:
            parts.append("✓ safe with " + ", ".join(flag_label(c).lower() for c in respects))
        if s.why:
            parts.append("from “" + "”, “".join(s.why) + "”")
        self.detail.setText(" · ".join(parts))
        self.detail.setVisible(bool(parts))
        self._set_prop("conflict", bool(s.conflicts))
        pct = int(round(s.score * 100))
        self.bar.setValue(pct)
        self.score.setText(format_model_confidence(s.score))
        self._set_prop("lowConfidence", low)
        if protocol is not None:
            items = "".join(f"<li>{html.escape(i)}</li>" for i in protocol.indication_list)
            self.setToolTip(f"<b>{html.escape(protocol.code)}</b> — {html.escape(protocol.name)}<br>"
                            f"{html.escape(protocol.modality)} · {html.escape(protocol.body_region)} · contrast: "
                            f"{html.escape(protocol.contrast)}<br><b>Indications</b><ul>{items}</ul>")
        else:
            self.setToolTip(s.name)

    def set_selected(self, selected: bool) -> None:
        self._set_prop("selected", selected)

    def _set_prop(self, name: str, value) -> None:
        if self.property(name) != value:
            self.setProperty(name, value)
            self.style().unpolish(self)
            self.style().polish(self)

    def mousePressEvent(self, event):
        self.clicked.emit(self.number)
        super().mousePressEvent(event)

    def mouseDoubleClickEvent(self, event):
        self.activated.emit(self.number)
        super().mouseDoubleClickEvent(event)


class OrderView(QWidget):
    decision_requested = Signal(object)  # DecisionInput
    return_requested = Signal(int)       # order id: return it to the referrer (the window asks the question)
    message = Signal(str)                 # a hint for the status bar

    def __init__(self, catalog: Sequence[Protocol] = (), confidence_threshold: float = 0.5, parent=None):
        super().__init__(parent)
        self.setObjectName("orderView")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.threshold = confidence_threshold
        self.order: OrderDetails | None = None
        self.prediction: Prediction | None = None
        self.flags: list[SafetyFlag] = []
        self.selected: int | None = None  # 0-based index into the suggestions
        self._clock = QElapsedTimer()
        self._engine_problem = ""
        self._catalog: dict[str, Protocol] = {}
        self._search = CatalogSearch([])
        self.plan: list[str] = []  # protocols added so far (multi-protocol), before the last choice
        # (order id, codes) -> flag types they go against: the core's decision_conflicts, set by the window
        self.conflicts_provider: Callable[[int, tuple[str, ...]], tuple[str, ...]] | None = None
        self.current_model: str | None = None  # the running engine's model id (None: not ready)
        self.loading_engine = ""               # the engine still loading ("llm"): shown suggestions are quick ones
        self._build()
        self.set_catalog(catalog)
        self.show_empty()

    # --- construction
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(16, 12, 16, 12)
        outer.setSpacing(10)

        head = QHBoxLayout()
        self.badge = QLabel()
        self.badge.setObjectName("priorityBadge")
        self.badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.badge.setMinimumWidth(84)
        self.title = QLabel()
        self.title.setObjectName("orderTitle")
        self.title.setWordWrap(True)
        head.addWidget(self.badge, 0, Qt.AlignmentFlag.AlignTop)
        head.addWidget(self.title, 1)
        outer.addLayout(head)

        self.patient = QLabel()
        self.patient.setObjectName("orderMeta")
        self.patient.setWordWrap(True)
        self.patient.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.patient)

        self.decided = QLabel()
        self.decided.setObjectName("decidedBanner")
        self.decided.setWordWrap(True)
        outer.addWidget(self.decided)

        # re-sent with different content after its decision: what changed
        self.amended = QLabel()
        self.amended.setObjectName("amendedBanner")
        self.amended.setWordWrap(True)
        self.amended.setTextFormat(Qt.TextFormat.RichText)
        self.amended.setVisible(False)
        outer.addWidget(self.amended)

        # a decision that goes against a safety flag waits here for one more key
        self.conflict_banner = QLabel()
        self.conflict_banner.setObjectName("conflictBanner")
        self.conflict_banner.setWordWrap(True)
        self.conflict_banner.setVisible(False)
        outer.addWidget(self.conflict_banner)
        self._pending_ack: tuple[str, tuple[str, ...]] | None = None

        self.flag_box = QWidget()
        self.flag_box.setObjectName("flagBox")
        self.flag_layout = FlowLayout(self.flag_box)  # chips wrap instead of widening the window
        outer.addWidget(self.flag_box)

        notes_label = QLabel("Clinical notes")
        notes_label.setObjectName("sectionLabel")
        outer.addWidget(notes_label)
        self.notes = QTextBrowser()
        self.notes.setObjectName("notes")
        self.notes.setOpenLinks(False)
        self.notes.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.notes.setMinimumHeight(90)
        # takes the room that is left (its own size hint would push the suggestions off a 768-pixel screen)
        self.notes.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Ignored)
        outer.addWidget(self.notes, 3)

        sugg_head = QHBoxLayout()
        sugg_label = QLabel("Suggested protocols")
        sugg_label.setObjectName("sectionLabel")
        self.model_label = ElidedLabel()  # full text in its tooltip
        self.model_label.setObjectName("mutedLabel")
        self.model_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        sugg_head.addWidget(sugg_label)
        sugg_head.addWidget(self.model_label, 1)
        outer.addLayout(sugg_head)

        self.review = QLabel()
        self.review.setObjectName("needsReview")
        self.review.setWordWrap(True)
        outer.addWidget(self.review)
        self.pending = QLabel("Computing suggestions…")
        self.pending.setWordWrap(True)
        self.pending.setObjectName("mutedLabel")
        outer.addWidget(self.pending)
        self.rows: list[SuggestionRowWidget] = []
        for n in (1, 2, 3):
            row = SuggestionRowWidget(n)
            row.clicked.connect(lambda number: self._select(number - 1))
            row.activated.connect(lambda number: self.choose_suggestion(number - 1))
            self.rows.append(row)
            outer.addWidget(row)

        # multi-protocol: the protocols added so far (+), saved together with Enter
        self.plan_label = QLabel()
        self.plan_label.setObjectName("protocolPlan")
        self.plan_label.setWordWrap(True)
        self.plan_label.setVisible(False)
        outer.addWidget(self.plan_label)

        self.search = QLineEdit()
        self.search.setObjectName("protocolSearch")
        self.search.setPlaceholderText("Override: type a code, name or indication…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._update_results)
        self.search.installEventFilter(self)
        outer.addWidget(self.search)
        self.results = QListWidget()
        self.results.setObjectName("searchResults")
        self.results.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.results.itemDoubleClicked.connect(lambda item: self._confirm_search(item))
        self.results.setVisible(False)
        self.results.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.results.setTextElideMode(Qt.TextElideMode.ElideRight)  # full name and indications in the tooltip
        self.results.setUniformItemSizes(True)
        self.results.setMinimumHeight(164)  # six rows
        outer.addWidget(self.results, 1)

        self.comment = QLineEdit()
        self.comment.setObjectName("comment")
        self.comment.setPlaceholderText("Optional comment (Ctrl+M), Enter confirms")
        self.comment.installEventFilter(self)
        outer.addWidget(self.comment)

        self.hint = QLabel()
        self.hint.setObjectName("keyHint")
        self.hint.setWordWrap(True)
        outer.addWidget(self.hint)
        outer.addStretch(1)
        self.setFocusProxy(None)

    # --- data
    def set_catalog(self, protocols: Sequence[Protocol]) -> None:
        self._catalog = {p.code: p for p in protocols}
        self._search = CatalogSearch(protocols)

    def set_threshold(self, threshold: float) -> None:
        self.threshold = threshold
        if self.order is not None:
            self._render_suggestions()

    @property
    def suggestions(self) -> list[Suggestion]:
        return list(self.prediction.suggestions[:3]) if self.prediction else []

    @property
    def needs_review(self) -> bool:
        """The engine asked for review (target precision, near tie, unfamiliar order, flag conflict), or the
        top score is below the site's minimum confidence."""
        top = self.prediction.top if self.prediction else None
        return top is not None and (self.prediction.review or top.score < self.threshold)

    def show_empty(self, text: str = "No order open") -> None:
        self.order = None
        self.prediction = None
        self.selected = None
        self.plan = []
        self.plan_label.setVisible(False)
        self.badge.setVisible(False)
        self.title.setText(text)
        self.patient.setText("Pick an order in the worklist (Ctrl+L), or wait for new orders.")
        self.decided.setVisible(False)
        self.amended.setVisible(False)
        self._clear_flags()
        self.flag_box.setVisible(False)
        self.notes.clear()
        for row in self.rows:
            row.set_suggestion(None, None, False)
        self.review.setVisible(False)
        self.pending.setVisible(False)
        self.model_label.clear()
        self.search.clear()
        self.search.setEnabled(False)
        self.comment.clear()
        self.comment.setEnabled(False)
        self.hint.clear()

    def show_order(self, order: OrderDetails, prediction: Prediction | None) -> None:
        """Render an order (flags from radassist.safety; suggestions when already computed)."""
        self.order = order
        self._clear_pending_ack()
        self.plan = []
        self._render_plan()
        self._clock.start()
        self.search.blockSignals(True)
        self.search.clear()
        self.search.blockSignals(False)
        self.results.clear()
        self.results.setVisible(False)
        self.search.setEnabled(True)
        self.comment.clear()
        self.comment.setEnabled(True)

        self.badge.setVisible(True)
        self.badge.setText(order.priority)
        self.badge.setProperty("priority", order.priority)
        self.badge.style().unpolish(self.badge)
        self.badge.style().polish(self.badge)
        self.title.setText(html.escape(order.ordered_exam))
        age = "" if order.age is None else f"{order.age} y"
        parts = [f"<b>{html.escape(order.patient_name or 'Unknown patient')}</b>"]
        if order.mrn:
            parts.append(f"MRN {html.escape(order.mrn)}")
        if age or order.sex != "U":
            parts.append(" ".join(x for x in (age, order.sex if order.sex != "U" else "") if x))
        parts.append(f"Acc. {html.escape(order.accession)}")
        if order.ordering_provider:
            parts.append(f"by {html.escape(order.ordering_provider)}")
        if order.ordered_at:
            from radassist.gui.worklist_model import format_waiting

            parts.append(f"waiting {format_waiting(order.ordered_at)}" if order.status == "todo"
                         else f"ordered {order.ordered_at:%Y-%m-%d %H:%M} UTC")
        self.patient.setText("  ·  ".join(parts))
        if order.status == "done" and order.decided_code:
            names = []
            for code in order.decided_codes:
                p = self._catalog.get(code)
                names.append(f"<b>{html.escape(code)}</b>" + (f" — {html.escape(p.name)}" if p else ""))
            self.decided.setText(f"Protocoled: {' + '.join(names)} ({order.decided_action} by "
                                 f"{html.escape(order.decided_by)}). Deciding again asks first, then replaces it.")
            self.decided.setVisible(True)
        elif order.status == "returned":
            self.decided.setText(f"Returned to the referrer by {html.escape(order.decided_by)}: "
                                 f"“{html.escape(order.question)}”. Deciding now asks first.")
            self.decided.setVisible(True)
        else:
            self.decided.setVisible(False)

        self._render_amendment(order)

        # flags assessed once and stored with the suggestions (the core assesses an order that has none yet)
        if prediction is not None and prediction.flags:
            self.flags = list(prediction.flags)
        else:
            self.flags = list(order.flags)
        self._render_flags()
        self._render_notes()
        self.prediction = prediction
        self._render_suggestions()
        # focus stays where the user put it: browsing the worklist keeps it in the worklist, and only
        # an order view that had the focus (a decision was just made here) takes it back for the next
        focus = QApplication.focusWidget()
        if focus is None or focus is self or self.isAncestorOf(focus):
            self.setFocus(Qt.FocusReason.OtherFocusReason)

    def _render_amendment(self, order: OrderDetails) -> None:
        amendment = getattr(order, "amendment", None)
        if amendment is None:
            self.amended.setVisible(False)
            return
        names = {"ordered_exam": "Ordered exam", "clinical_notes": "Notes", "priority": "Priority", "age": "Age",
                 "sex": "Sex", "patient_name": "Patient", "mrn": "MRN", "ordering_provider": "Ordering provider",
                 "ordered_at": "Ordered at"}
        lines = []
        for change in amendment.changes:
            name = change.field
            before = "" if change.before is None else str(change.before)
            after = "" if change.after is None else str(change.after)
            label = names.get(name, name.replace("_", " ").capitalize())
            if name == "clinical_notes":
                lines.append(f"<b>{label}</b> changed: now “{html.escape(after[:300])}”"
                             f"<br><span style='color:#6b7480'>was “{html.escape(before[:300])}”</span>")
            else:
                lines.append(f"<b>{label}</b>: {html.escape(before) or '—'} → <b>{html.escape(after) or '—'}</b>")
        if amendment.flags_added:
            lines.append("New flags: " + ", ".join(html.escape(flag_label(f)) for f in amendment.flags_added))
        if amendment.flags_removed:
            lines.append("Flags no longer in the notes: "
                         + ", ".join(html.escape(flag_label(f)) for f in amendment.flags_removed))
        when = f" {amendment.amended_at:%Y-%m-%d %H:%M} UTC" if amendment.amended_at else ""
        self.amended.setText(f"✎ <b>Amended after decision</b>{when}: the order was re-sent with different "
                             f"content and is back in To do.<br>" + "<br>".join(lines or ["(no field named)"]))
        self.amended.setVisible(True)

    def set_engine_unavailable(self, reason: str) -> None:
        self._engine_problem = reason
        if self.order is not None and self.prediction is None:
            self._render_suggestions()

    def set_prediction(self, prediction: Prediction | None) -> None:
        """Suggestions arrived for the open order: show them without losing a search in progress."""
        self.prediction = prediction
        if prediction is not None and prediction.flags and prediction.flags != self.flags:
            self.flags = list(prediction.flags)
            self._render_flags()
            self._render_notes()
        self._render_suggestions()

    # --- rendering
    def _clear_flags(self) -> None:
        while self.flag_layout.count():
            item = self.flag_layout.takeAt(0)
            if item.widget():
                item.widget().deleteLater()

    def _render_flags(self) -> None:
        self._clear_flags()
        self.flag_box.setVisible(True)
        if not self.flags:
            none = QLabel("No safety flags in the notes")
            none.setObjectName("noFlags")
            self.flag_layout.addWidget(none)
        seen = set()
        for flag in self.flags:
            if flag.type in seen:
                continue
            seen.add(flag.type)
            chip = QLabel(flag_chip_text(flag))
            # resolved / historical findings are shown muted: seen, but they ask nothing of the radiologist
            chip.setObjectName("flagChip" if flag.is_current else "flagChipMuted")
            chip.setToolTip(flag_tooltip([f for f in self.flags if f.type == flag.type]))
            self.flag_layout.addWidget(chip)
        self.flag_layout.addStretch(1)

    def _spans(self) -> list[tuple[int, int, str]]:
        text = self.order.clinical_notes if self.order else ""
        lower = text.lower()
        spans = []
        for f in self.flags:
            start, end = f.start, f.end
            if not (0 <= start < end <= len(text)):
                start = lower.find(f.evidence.lower()) if f.evidence else -1
                end = start + len(f.evidence) if start >= 0 else -1
            if start >= 0:
                spans.append((start, end, f.type))
        spans.sort()
        merged = []
        for s in spans:
            if merged and s[0] < merged[-1][1]:
                if s[1] > merged[-1][1]:
                    merged[-1] = (merged[-1][0], s[1], merged[-1][2])
                continue
            merged.append(s)
        return merged

    def _render_notes(self) -> None:
        text = self.order.clinical_notes if self.order else ""
        if not text.strip():
            self.notes.setHtml("<p style='color:#6b7480'><i>No clinical notes were sent with this order.</i></p>")
            return
        out, pos = [], 0
        for start, end, kind in self._spans():
            out.append(html.escape(text[pos:start]))
            out.append(f"<span style='background-color:#ffd9a0; color:#4a2a00; font-weight:600' "
                       f"title='{html.escape(flag_label(kind))}'>{html.escape(text[start:end])}</span>")
            pos = end
        out.append(html.escape(text[pos:]))
        body = "".join(out).replace("\n", "<br>")
        self.notes.setHtml(f"<div style='line-height:140%'>{body}</div>")

    def _render_suggestions(self) -> None:
        suggestions = self.suggestions
        low = self.needs_review
        at_stake = {c for x in suggestions for c in x.conflicts}  # flags some suggestion goes against
        for i, row in enumerate(self.rows):
            s = suggestions[i] if i < len(suggestions) else None
            row.set_suggestion(s, self._catalog.get(s.code) if s else None,
                               s is not None and s.score < self.threshold,
                               respects=tuple(sorted(at_stake - set(s.conflicts))) if s else ())
        waiting = self.order is not None and self.prediction is None
        self.pending.setVisible(waiting)
        if self.prediction is not None and not suggestions:
            self.pending.setText("The engine had no suggestion: type to search the catalog.")
            self.pending.setVisible(True)
        elif self._engine_problem:
            self.pending.setText("Suggestions unavailable (engine not running): type to search the catalog.")
        else:
            self.pending.setText("Computing suggestions… (type to search the catalog meanwhile)")
        self._render_model_label()
        if low:
            self.review.setText(f"Needs review: confidence {format_model_confidence(suggestions[0].score)} is below the site threshold "
                                f"({self.threshold:.0%}). Nothing is pre-selected: press 1/2/3 or type to search.")
        self.review.setVisible(low)
        self.selected = 0 if suggestions and not low else None
        self._paint_selection()
        self._update_hint()

    @property
    def provisional(self) -> bool:
        """The shown suggestions are not the running engine's (a quick one while the LLM loads)."""
        model = self.prediction.model if self.prediction else ""
        return bool(model) and (bool(self.loading_engine) or (self.current_model is not None
                                                              and model != self.current_model))

    def set_engine_status(self, current_model: str | None, loading_engine: str = "") -> None:
        """The running engine's model id (None while none is ready) and the engine still loading, if any."""
        self.current_model, self.loading_engine = current_model, loading_engine
        if self.order is not None:
            self._render_model_label()

    def _render_model_label(self) -> None:
        model = self.prediction.model if self.prediction and self.prediction.model else ""
        if not model:
            self.model_label.setText("")
            self.model_label.setToolTip("")
        elif self.provisional and self.loading_engine:
            self.model_label.setText(f"⏳ quick suggestion — {self.loading_engine.upper()} loading")
            self.model_label.setToolTip(f"From {model}; replaced by the {self.loading_engine} engine's suggestions "
                                        "as soon as they are ready")
        elif self.provisional:
            self.model_label.setText("⏳ earlier suggestion — updating…")
            self.model_label.setToolTip(f"From {model}; the running engine ({self.current_model}) is computing")
        else:
            self.model_label.setText(f"model {model}")
            self.model_label.setToolTip(model)
        self.model_label.setProperty("provisional", self.provisional)
        self.model_label.style().unpolish(self.model_label)
        self.model_label.style().polish(self.model_label)

    def _paint_selection(self) -> None:
        for i, row in enumerate(self.rows):
            row.set_selected(i == self.selected)

    def _update_hint(self) -> None:
        if self.order is None:
            self.hint.clear()
            return
        if self.search.text().strip():
            self.hint.setText("↑/↓ pick · <b>Enter</b> confirm override · <b>+</b> add as another protocol · Esc cancel")
        elif self.plan:
            self.hint.setText(f"<b>Enter</b> save {' + '.join(self.plan)} · <b>+</b>/1/2/3/type add another "
                              "· Backspace remove last · Ctrl+R return to referrer")
        elif self.selected is not None:
            self.hint.setText(f"<b>Enter</b> accept {self.selected + 1} · <b>1/2/3</b> choose · <b>+</b> add "
                              "another protocol · type to search · Ctrl+M comment · Ctrl+R return to referrer")
        else:
            self.hint.setText("<b>1/2/3</b> choose · type to search the catalog · Ctrl+R return to referrer "
                              "· Ctrl+↓ next order")

    # --- actions
    def _select(self, index: int | None) -> None:
        if index is not None and not (0 <= index < len(self.suggestions)):
            return
        self.selected = index
        self._paint_selection()
        self._update_hint()

    def choose_suggestion(self, index: int) -> bool:
        suggestions = self.suggestions
        if not (0 <= index < len(suggestions)):
            self.message.emit(f"There is no suggestion {index + 1}")
            return False
        return self._decide(suggestions[index].code)

    def accept_selected(self) -> bool:
        if self.order is None:
            return False
        if self._pending_ack is not None:
            return self._decide_codes(self._pending_ack[0])
        if self.selected is None and self.plan:
            return self._decide_codes(tuple(self.plan))
        if self.selected is None:
            if self.prediction is None:
                self.message.emit("Suggestions are not ready yet: type to search the catalog")
            elif self.needs_review:
                self.message.emit("Needs review: choose 1/2/3 or type to search; Enter does not accept")
            else:
                self.message.emit("Nothing selected: choose 1/2/3 or type to search")
            return False
        return self.choose_suggestion(self.selected)

    def conflicts_for(self, codes: str | Sequence[str]) -> tuple[str, ...]:
        """Flag types the protocol(s) go against: the core's answer (``worklist.decision_conflicts``,
        through ``conflicts_provider``); without one, the engine's stored conflicts of the suggestions."""
        codes = (codes,) if isinstance(codes, str) else tuple(codes)
        if self.conflicts_provider is not None and self.order is not None:
            return tuple(self.conflicts_provider(self.order.id, codes))
        out: list[str] = []
        for s in self.suggestions:
            if s.code in codes:
                out.extend(c for c in s.conflicts if c not in out)
        return tuple(out)

    def _clear_pending_ack(self) -> None:
        self._pending_ack = None
        self.conflict_banner.setVisible(False)

    # --- multi-protocol
    def _codes_with(self, code: str) -> tuple[str, ...]:
        return tuple(self.plan) if code in self.plan else (*self.plan, code)

    def add_protocol(self, code: str) -> bool:
        """Add one more protocol to the order's decision (nothing is saved until Enter)."""
        if self.order is None or not code:
            return False
        if code in self.plan:
            self.message.emit(f"{code} is already one of this order's protocols")
            return False
        if len(self.plan) >= MAX_PROTOCOLS:
            self.message.emit(f"At most {MAX_PROTOCOLS} protocols per order: Enter saves them")
            return False
        self.plan.append(code)
        self._clear_pending_ack()
        self.search.blockSignals(True)
        self.search.clear()
        self.search.blockSignals(False)
        self.results.clear()
        self.results.setVisible(False)
        self.selected = None  # Enter now saves the plan; 1/2/3 or a search adds the last one and saves
        self._paint_selection()
        self._render_plan()
        self.message.emit(f"Added {code}: {len(self.plan)} protocol(s); Enter saves, + adds another")
        return True

    def remove_last_protocol(self) -> bool:
        if not self.plan:
            return False
        code = self.plan.pop()
        self._clear_pending_ack()
        self._render_plan()
        self.message.emit(f"Removed {code}")
        return True

    def add_selected(self) -> bool:
        """'+': the selected suggestion, or the highlighted search result, becomes one more protocol."""
        if self.search.text().strip():
            item = self.results.currentItem()
            code = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
            if not code:
                self.message.emit("No protocol matches the search")
                return False
            ok = self.add_protocol(code)
            self.setFocus(Qt.FocusReason.OtherFocusReason)
            return ok
        if self.selected is not None and self.selected < len(self.suggestions):
            return self.add_protocol(self.suggestions[self.selected].code)
        self.message.emit("Select a suggestion (↑/↓) or search a protocol, then + adds it")
        return False

    def _render_plan(self) -> None:
        if not self.plan:
            self.plan_label.setVisible(False)
            self._update_hint()
            return
        items = []
        for i, code in enumerate(self.plan, 1):
            p = self._catalog.get(code)
            items.append(f"{i}. <b>{html.escape(code)}</b>" + (f" — {html.escape(p.name)}" if p else ""))
        self.plan_label.setText(f"Protocols for this order: {' · '.join(items)}"
                                f"<br><span style='color:#6b7480'>Enter saves "
                                f"{'them' if len(self.plan) > 1 else 'it'} · + adds another (up to "
                                f"{MAX_PROTOCOLS}) · Backspace removes the last</span>")
        self.plan_label.setVisible(True)
        self._update_hint()
        self._reveal(self.search)

    # --- deciding
    def _decide(self, code: str) -> bool:
        return self._decide_codes(self._codes_with(code))

    def _decide_codes(self, codes: tuple[str, ...]) -> bool:
        if self.order is None or not codes:
            return False
        if len(codes) > MAX_PROTOCOLS:
            self.message.emit(f"At most {MAX_PROTOCOLS} protocols per order")
            return False
        conflicts = self.conflicts_for(codes)  # every protocol of the decision
        if conflicts and self._pending_ack != (codes, conflicts):
            # one extra key: the same choice again confirms, Esc or another choice cancels
            self._pending_ack = (codes, conflicts)
            evidence = "; ".join(f"{flag_label(f.type)} (“{f.evidence}”)" for f in self.flags if f.type in conflicts)
            if not evidence:
                evidence = ", ".join(flag_label(c) for c in conflicts)
            self.conflict_banner.setText(
                f"⚠ <b>{html.escape(' + '.join(codes))}</b> goes against: {html.escape(evidence)}.<br>"
                f"Press <b>Enter</b> again to confirm that you have weighed it, or <b>Esc</b> to choose another.")
            self.conflict_banner.setVisible(True)
            self.message.emit(f"{' + '.join(codes)} conflicts with {', '.join(flag_label(c) for c in conflicts)}: "
                              f"Enter again to confirm")
            return False
        top = self.prediction.top if self.prediction else None
        decision = DecisionInput(
            order_id=self.order.id, final_code=codes[0], suggested=top,
            model_version=self.prediction.model if self.prediction else None,
            comment=self.comment.text().strip(),
            time_to_decide_ms=int(self._clock.elapsed()) if self._clock.isValid() else None,
            acknowledged=conflicts, additional_codes=tuple(codes[1:]),
        )
        self._clear_pending_ack()
        self.decision_requested.emit(decision)
        return True

    def request_return(self) -> None:
        """Ctrl+R: return the order to the referrer (the window asks for the question and commits it)."""
        if self.order is not None:
            self.return_requested.emit(self.order.id)

    def start_search(self, text: str = "") -> None:
        if self.order is None:
            return
        self.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        if text:
            self.search.setText(self.search.text() + text)

    def cancel_search(self) -> None:
        self._clear_pending_ack()
        self.search.clear()
        self.setFocus(Qt.FocusReason.OtherFocusReason)

    def focus_comment(self) -> None:
        if self.order is not None:
            self.comment.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def _update_results(self, text: str) -> None:
        self.results.clear()
        order = self.order
        matches = self._search.search(text, sex=order.sex if order else "U", age=order.age if order else None) \
            if text.strip() else []
        for p in matches:
            item = QListWidgetItem(f"{p.code}   {p.name}")
            item.setData(Qt.ItemDataRole.UserRole, p.code)
            item.setToolTip(f"<b>{html.escape(p.name)}</b><br>{html.escape(p.indications)}")
            self.results.addItem(item)
        if matches:
            self.results.setCurrentRow(0)
        elif text.strip():
            item = QListWidgetItem("No protocol matches")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.results.addItem(item)
        self.results.setVisible(bool(text.strip()))
        self._update_hint()
        if text.strip():
            self._reveal(self.results)

    def _reveal(self, widget) -> None:
        """On a small screen the order panel scrolls: keep what the user is working with in sight."""
        parent = self.parentWidget()
        area = parent.parentWidget() if parent is not None else None
        if area is not None and hasattr(area, "ensureWidgetVisible"):
            area.ensureWidgetVisible(widget, 0, 10)

    def _confirm_search(self, item: QListWidgetItem | None = None) -> bool:
        item = item or self.results.currentItem()
        code = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        if not code:
            self.message.emit("No protocol matches the search")
            return False
        return self._decide(code)

    # --- keyboard
    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.KeyPress:
            key = event.key()
            if obj is self.search:
                if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                    if self.search.text().strip():
                        self._confirm_search()
                    else:
                        self.setFocus()
                        self.accept_selected()
                    return True
                if key in (Qt.Key.Key_Down, Qt.Key.Key_Up) and self.results.count():
                    step = 1 if key == Qt.Key.Key_Down else -1
                    row = max(0, min(self.results.count() - 1, self.results.currentRow() + step))
                    self.results.setCurrentRow(row)
                    return True
                if key == Qt.Key.Key_Escape:
                    self.cancel_search()
                    return True
                if key == Qt.Key.Key_Plus and self.search.text().strip():
                    self.add_selected()
                    return True
            elif obj is self.comment:
                if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                    if self.search.text().strip():
                        self._confirm_search()
                    else:
                        self.accept_selected()
                    return True
                if key == Qt.Key.Key_Escape:
                    self.setFocus()
                    return True
        return super().eventFilter(obj, event)

    def keyPressEvent(self, event):
        if self.order is None:
            return super().keyPressEvent(event)
        key = event.key()
        mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        if mods in (Qt.KeyboardModifier.NoModifier, Qt.KeyboardModifier.ShiftModifier):
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self.accept_selected()
                return
            if key in (Qt.Key.Key_1, Qt.Key.Key_2, Qt.Key.Key_3) and mods == Qt.KeyboardModifier.NoModifier:
                self.choose_suggestion(key - Qt.Key.Key_1)
                return
            if key == Qt.Key.Key_Down and self.suggestions:
                self._select(0 if self.selected is None else min(len(self.suggestions) - 1, self.selected + 1))
                return
            if key == Qt.Key.Key_Up and self.suggestions:
                self._select(0 if self.selected is None else max(0, self.selected - 1))
                return
            if key == Qt.Key.Key_Escape:
                self.cancel_search()
                return
            if key == Qt.Key.Key_Plus:
                self.add_selected()
                return
            if key == Qt.Key.Key_Backspace and self.plan:
                self.remove_last_protocol()
                return
            text = event.text()
            if text and (text.isalpha() or text in "-/"):
                self.start_search(text)
                return
        super().keyPressEvent(event)
