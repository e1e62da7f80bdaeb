"""What the worklist screens read, as plain snapshots: the GUI runs no SQL of its own.

Every query the app's worklist, order view and inference worker need lives here (or in
``radassist.worklist``), returning frozen dataclasses and domain types, never live ORM rows:
``worklist_entries`` (one row per order with its top suggestion, current decision and stored
flags), ``database_signature`` (a cheap fingerprint to poll), ``order_details`` (an order opened
for viewing, audited, with its best stored prediction), ``orders_to_predict`` (the worker's batch:
stored predictions and the orders still to compute) and ``user_display_name``.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from radassist.access import Actor
from radassist.domain import Order, Prediction, SafetyFlag, Suggestion
from radassist.ingest import Amendment, amended_order_ids, amendment_for
from radassist.store.models import OrderRow, SuggestionRow, UserRow
from radassist.worklist import (
    PRIORITY_RANK, RETURNED, current_decisions, open_order, order_flags, prediction_from_row, stored_flags,
)

_MODALITY_WORDS = {
    "CT": "CT", "CTA": "CT", "MR": "MR", "MRI": "MR", "MRA": "MR", "MRV": "MR", "MRCP": "MR", "US": "US",
    "ULTRASOUND": "US", "XR": "XR", "X-RAY": "XR", "XRAY": "XR", "CR": "XR", "DX": "XR", "NM": "NM", "PET": "PET",
    "PET/CT": "PET", "FL": "FL", "FLUORO": "FL", "MG": "MG", "MAMMO": "MG", "MAMMOGRAM": "MG",
}


def modality_of(exam: str) -> str:
    """Modality from the ordered exam's first word ('MRI BRAIN' -> 'MR'); '' when unknown."""
    words = exam.replace("-", " ").upper().split()
    if not words:
        return ""
    first = words[0]
    if first in _MODALITY_WORDS:
        return _MODALITY_WORDS[first]
    if first.startswith("PET"):
        return "PET"
    return ""


@dataclass(frozen=True)
class WorklistEntry:
    """One worklist row: the order, its top suggestion, its current decision and its stored flags."""

    id: int
    accession: str
    priority: str
    patient_name: str
    mrn: str
    age: int | None
    sex: str
    ordered_exam: str
    ordered_at: datetime | None
    status: str               # todo | done | returned | cancelled
    suggestion_code: str = ""
    suggestion_name: str = ""
    confidence: float | None = None
    review_reason: str = ""  # the engine asked for review (target precision, near tie, OOD, flag conflict)
    model_version: str = ""
    decided_code: str = ""    # done orders: the (primary) protocol decided
    decided_action: str = ""  # accepted | overridden | returned
    decision_id: int | None = None
    flags: tuple = ()         # SafetyFlag, as assessed and stored with the suggestions
    decided_extra: tuple[str, ...] = ()  # further protocols of a multi-protocol decision
    question: str = ""        # returned: the question to the referrer
    amended: bool = False     # back in To do: re-sent with different content after its decision

    @property
    def modality(self) -> str:
        return modality_of(self.ordered_exam)

    @property
    def decided(self) -> bool:
        return self.status in ("done", "returned")

    @property
    def age_sex(self) -> str:
        age = "" if self.age is None else str(self.age)
        return f"{age} {self.sex}".strip() if self.sex != "U" or age else ""

    def sort_key(self) -> tuple:
        """Worklist order: STAT first, then URGENT, then ROUTINE; oldest first; then id."""
        return (PRIORITY_RANK.get(self.priority, 3), self.ordered_at or datetime.max, self.id)

    def haystack(self) -> str:
        return " ".join((self.accession, self.patient_name, self.mrn, self.ordered_exam, self.suggestion_code,
                         self.suggestion_name, self.priority, self.decided_code, *self.decided_extra)).lower()

    @property
    def decided_label(self) -> str:
        """'CT-HEAD-WO +2', 'Returned', '' while waiting."""
        if self.status == "returned" or self.decided_action == RETURNED:
            return "Returned"
        if not self.decided_code:
            return ""
        return self.decided_code + (f" +{len(self.decided_extra)}" if self.decided_extra else "")

    @property
    def protocol_code(self) -> str:
        """What the Protocol column shows: the decision once decided, else the suggestion."""
        return self.decided_label if self.decided and self.decided_label else self.suggestion_code


def worklist_entries(session: Session, model_version: str | None) -> list[WorklistEntry]:
    """Every order, with the top suggestion of ``model_version`` (where it has none: the latest stored one)."""
    orders = session.execute(select(
        OrderRow.id, OrderRow.accession, OrderRow.priority, OrderRow.patient_name, OrderRow.mrn, OrderRow.age,
        OrderRow.sex, OrderRow.ordered_exam, OrderRow.ordered_at, OrderRow.status)).all()
    query = select(SuggestionRow.order_id, SuggestionRow.suggestions_json, SuggestionRow.model_version,
                   SuggestionRow.review_reason)
    # model_version's suggestions where it has some; else the latest stored ones (a quick engine's while
    # the LLM loads, or the previous model's until the new one has computed)
    top: dict[int, tuple[Suggestion | None, str, str]] = {}
    preferred: set[int] = set()
    for order_id, payload, version, review in session.execute(query.order_by(SuggestionRow.created_at,
                                                                             SuggestionRow.id)):
        mine = bool(model_version) and version == model_version
        if order_id in preferred and not mine:
            continue
        items = json.loads(payload)
        if items:
            top[order_id] = (Suggestion.from_json(items[0]), version, review or "")
        elif order_id not in top or mine:
            top[order_id] = (None, version, "")
        if mine:
            preferred.add(order_id)
    decisions = current_decisions(session)
    flags = stored_flags(session)
    amended = amended_order_ids(session)
    entries = []
    for o in orders:
        best, version, review = top.get(o.id, (None, "", ""))
        decided = decisions.get(o.id)
        entries.append(WorklistEntry(
            id=o.id, accession=o.accession, priority=o.priority, patient_name=o.patient_name or "", mrn=o.mrn or "",
            age=o.age, sex=o.sex or "U", ordered_exam=o.ordered_exam, ordered_at=o.ordered_at, status=o.status,
            suggestion_code=best.code if best else "", suggestion_name=best.name if best else "",
            confidence=best.score if best else None, model_version=version, review_reason=review,
            decided_code=decided.final_code if decided else "", decided_action=decided.action if decided else "",
            decision_id=decided.decision_id if decided else None, flags=tuple(flags.get(o.id, ())),
            decided_extra=decided.additional_codes if decided else (), question=decided.question if decided else "",
            amended=o.id in amended))
    return entries


def database_signature(session: Session) -> tuple:
    """Cheap fingerprint of what the worklist shows: changes when orders, decisions or suggestions do."""
    row = session.execute(text(
        "SELECT (SELECT count(*) FROM orders), (SELECT max(id) FROM orders), "
        "(SELECT count(*) FROM orders WHERE status != 'todo'), (SELECT max(id) FROM decisions), "
        "(SELECT id FROM audit_events WHERE action IN ('order.amend', 'order.cancel') ORDER BY id DESC LIMIT 1), "
        "(SELECT max(id) FROM suggestions), (SELECT max(created_at) FROM suggestions), "
        "(SELECT count(*) FROM suggestions)")).one()
    return tuple(row)


# database_signature()[:ORDER_PART]: orders, decisions, amendments and cancellations (the rest: suggestions)
ORDER_PART = 5


def best_prediction(session: Session, order_id: int, model_version: str | None) -> Prediction | None:
    """The stored suggestions of ``model_version``; with None, the latest stored ones of any engine."""
    query = select(SuggestionRow).where(SuggestionRow.order_id == order_id)
    if model_version:
        query = query.where(SuggestionRow.model_version == model_version)
    row = session.scalar(query.order_by(SuggestionRow.created_at.desc(), SuggestionRow.id.desc()).limit(1))
    if row is None:
        return None
    accession = session.scalar(select(OrderRow.accession).where(OrderRow.id == order_id)) or ""
    return prediction_from_row(row, accession)


@dataclass(frozen=True)
class OrderDetails:
    """A snapshot of an order for display (no live ORM object crosses into the view)."""

    id: int
    accession: str
    ordered_exam: str
    clinical_notes: str
    priority: str
    age: int | None
    sex: str
    patient_name: str
    mrn: str
    ordering_provider: str
    ordered_at: datetime | None
    status: str
    decided_code: str = ""
    decided_by: str = ""
    decided_action: str = ""
    decided_extra: tuple[str, ...] = ()  # further protocols of a multi-protocol decision
    question: str = ""                   # returned: the question to the referrer
    flags: tuple[SafetyFlag, ...] = ()   # as stored with its suggestions (else assessed from the notes)
    amendment: "Amendment | None" = None  # re-sent with different content after its decision

    @property
    def decided_codes(self) -> tuple[str, ...]:
        return (self.decided_code, *self.decided_extra) if self.decided_code else ()

    def as_order(self) -> Order:
        return Order(self.accession, self.ordered_exam, self.clinical_notes, self.age, self.sex, self.priority)


def order_details(session: Session, actor: Actor, order_id: int, model_version: str | None = None
                  ) -> tuple[OrderDetails, Prediction | None]:
    """Open an order for viewing (role-checked and audited, no note text in the event) with the stored
    suggestions of ``model_version`` (when it has none yet, or is not known: the latest stored ones)."""
    row = open_order(session, actor, order_id)
    decided = current_decisions(session, [order_id]).get(order_id)
    details = OrderDetails(
        id=row.id, accession=row.accession, ordered_exam=row.ordered_exam, clinical_notes=row.clinical_notes or "",
        priority=row.priority, age=row.age, sex=row.sex or "U", patient_name=row.patient_name or "",
        mrn=row.mrn or "", ordering_provider=row.ordering_provider or "", ordered_at=row.ordered_at,
        status=row.status, decided_code=decided.final_code if decided else "",
        decided_by=decided.username if decided else "", decided_action=decided.action if decided else "",
        decided_extra=decided.additional_codes if decided else (), question=decided.question if decided else "",
        flags=tuple(order_flags(session, row)), amendment=amendment_of(session, order_id))
    prediction = best_prediction(session, order_id, model_version)
    if prediction is None and model_version:
        prediction = best_prediction(session, order_id, None)
    return details, prediction


def orders_to_predict(session: Session, order_ids: Sequence[int], model_version: str, *, any_status: bool = False
                      ) -> tuple[list[tuple[int, Prediction]], list[tuple[int, Order]]]:
    """For the inference worker: (orders whose suggestions of ``model_version`` are stored, with them;
    orders still to compute). Orders no longer waiting are skipped unless ``any_status``."""
    from radassist.ingest import order_from_row

    stored: list[tuple[int, Prediction]] = []
    todo: list[tuple[int, Order]] = []
    for order_id in order_ids:
        row = session.get(OrderRow, order_id)
        if row is None:
            continue
        cached = session.scalar(select(SuggestionRow).where(
            SuggestionRow.order_id == order_id, SuggestionRow.model_version == model_version))
        if cached is not None:
            stored.append((order_id, prediction_from_row(cached, row.accession)))
        elif row.status == "todo" or any_status:
            todo.append((order_id, order_from_row(row)))
    return stored, todo


def amendment_of(session: Session, order_id: int) -> Amendment | None:
    """What changed when the order was re-sent after its decision (None: it was not, or it has been
    decided again since)."""
    return amendment_for(session, order_id, after_decision_only=True)


def user_display_name(session: Session, username: str) -> str:
    """The user's full name, else the username."""
    name = session.scalar(select(UserRow.full_name).where(UserRow.username == username))
    return name or username


def order_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(OrderRow)) or 0)

