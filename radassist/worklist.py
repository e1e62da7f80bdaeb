"""Worklist services: which orders wait, their cached suggestions, and recording decisions."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from radassist.access import Actor, require
from radassist.audit import record_event
from radassist.domain import Order, Prediction, SafetyFlag, Suggestion
from radassist.store.models import DecisionRow, OrderRow, ProtocolRow, SuggestionRow, utcnow

ACCEPTED = "accepted"
OVERRIDDEN = "overridden"
RETURNED = "returned"  # sent back to the referrer with a question: no protocol, no training example
MAX_PROTOCOLS = 3      # protocols one decision may carry (a code stroke: CT head + CTA + perfusion)
MAX_QUESTION = 500     # characters of a question to the referrer
DECIDED_STATUSES = ("done", "returned")  # an order with a current decision
PRIORITY_RANK = {"STAT": 0, "URGENT": 1, "ROUTINE": 2}


class DecisionError(ValueError):
    pass


def worklist_order_by():
    """STAT first, then URGENT, then ROUTINE; oldest first within a priority."""
    rank = case({"STAT": 0, "URGENT": 1}, value=OrderRow.priority, else_=2)
    return (rank, OrderRow.ordered_at, OrderRow.id)


def list_orders(session: Session, status: str | None = None) -> list[OrderRow]:
    query = select(OrderRow).order_by(*worklist_order_by())
    if status:
        query = query.where(OrderRow.status == status)
    return list(session.scalars(query))


def todo_order_ids(session: Session) -> list[int]:
    query = select(OrderRow.id).where(OrderRow.status == "todo").order_by(*worklist_order_by())
    return list(session.scalars(query))


def save_prediction(session: Session, order_id: int, prediction: Prediction) -> None:
    """Cache an engine's suggestions for an order (replacing those of the same model version)."""
    existing = session.scalar(select(SuggestionRow).where(
        SuggestionRow.order_id == order_id, SuggestionRow.model_version == prediction.model))
    payload = json.dumps([s.to_json() for s in prediction.suggestions])
    flags = json.dumps([f.to_store() for f in prediction.flags])
    review = (prediction.review_reason or "needs review")[:200] if prediction.review else None
    if existing is None:
        session.add(SuggestionRow(order_id=order_id, model_version=prediction.model, suggestions_json=payload,
                                  flags_json=flags, latency_ms=prediction.latency_ms, review_reason=review))
    else:
        existing.suggestions_json, existing.flags_json = payload, flags
        existing.review_reason = review
        existing.latency_ms, existing.created_at = prediction.latency_ms, utcnow()
    session.flush()


def prediction_from_row(row: SuggestionRow, accession: str) -> Prediction:
    """A stored prediction, decoded (the one place that reads ``suggestions_json`` / ``flags_json``)."""
    return Prediction(
        accession=accession,
        suggestions=[Suggestion.from_json(s) for s in json.loads(row.suggestions_json)],
        flags=[SafetyFlag.from_json(f) for f in json.loads(row.flags_json or "[]")],
        model=row.model_version,
        latency_ms=row.latency_ms,
        review=bool(row.review_reason),
        review_reason=row.review_reason or "",
    )


def cached_prediction(session: Session, order_id: int, model_version: str) -> Prediction | None:
    row = session.scalar(select(SuggestionRow).where(
        SuggestionRow.order_id == order_id, SuggestionRow.model_version == model_version))
    if row is None:
        return None
    order = session.get(OrderRow, order_id)
    return prediction_from_row(row, order.accession if order is not None else "")


def open_order(session: Session, actor: Actor, order_id: int) -> OrderRow:
    """Fetch an order for viewing; the view is audited (without note text)."""
    require(actor, "order.view")
    order = session.get(OrderRow, order_id)
    if order is None:
        raise DecisionError(f"no order with id {order_id}")
    record_event(session, actor, "order.open", entity=f"order:{order.accession}")
    return order


@dataclass(frozen=True)
class DecisionInput:
    order_id: int
    final_code: str
    suggested: Suggestion | None = None
    model_version: str | None = None
    comment: str = ""
    time_to_decide_ms: int | None = None
    acknowledged: tuple[str, ...] = ()  # flag types the radiologist acknowledged for these protocols
    additional_codes: tuple[str, ...] = ()  # further protocols after final_code, in order (multi-protocol)

    @property
    def codes(self) -> tuple[str, ...]:
        return (self.final_code, *self.additional_codes)


class ConflictNotAcknowledged(DecisionError):
    """The chosen protocol goes against a safety flag that the radiologist has not acknowledged."""

    def __init__(self, code: str, conflicts: tuple[str, ...]):
        self.code, self.conflicts = code, conflicts
        super().__init__(f"{code} conflicts with {', '.join(conflicts)}: acknowledge to proceed")


def order_flags(session: Session, order: OrderRow) -> list:
    """The order's flags as stored with its latest suggestions, else assessed from its notes now."""
    row = session.scalar(select(SuggestionRow).where(SuggestionRow.order_id == order.id)
                         .order_by(SuggestionRow.created_at.desc(), SuggestionRow.id.desc()).limit(1))
    stored = [SafetyFlag.from_json(f) for f in json.loads(row.flags_json or "[]")] if row is not None else []
    if stored or not order.clinical_notes:
        return stored
    from radassist.flag_assessment import assess_order

    return assess_order(Order(order.accession, order.ordered_exam, order.clinical_notes or "", order.age,
                              order.sex or "U"))


def decision_conflicts(session: Session, order: OrderRow, code: str | Sequence[str]) -> tuple[str, ...]:
    """Flag types (that the site's policy counts) which protocol ``code`` goes against for this order.

    ``code`` may be several protocols (a multi-protocol decision): the conflicts of every one of them,
    each flag type once, in the order found.
    """
    from radassist.catalog import catalog_from_db
    from radassist.safety_policy import site_policy

    codes = [code] if isinstance(code, str) else list(code)
    catalog = catalog_from_db(session)
    by_code = {p.code: p for p in catalog}
    protocols = [by_code[c] for c in codes if c in by_code]
    if not protocols:
        return ()
    policy = site_policy(catalog)
    flags = order_flags(session, order)
    out: list[str] = []
    for protocol in protocols:
        out.extend(c for c in policy.conflicts_of(protocol, flags) if c not in out)
    return tuple(out)


def conflicts_for_order(session: Session, order_id: int, codes: Sequence[str]) -> tuple[str, ...]:
    """``decision_conflicts`` by order id (what the order view asks before it sends a decision)."""
    order = session.get(OrderRow, order_id)
    return decision_conflicts(session, order, codes) if order is not None else ()


def _check_codes(session: Session, codes: Sequence[str]) -> None:
    if len(codes) > MAX_PROTOCOLS:
        raise DecisionError(f"at most {MAX_PROTOCOLS} protocols per order ({len(codes)} given)")
    if len(set(codes)) != len(codes):
        raise DecisionError("a protocol is listed twice")
    for code in codes:
        protocol = session.get(ProtocolRow, code)
        if protocol is None or not protocol.active:
            raise DecisionError(f"protocol {code!r} is not in the catalog")


def record_decision(session: Session, actor: Actor, decision: DecisionInput) -> DecisionRow:
    """Record accept/override and mark the order done, in one transaction with its audit event.

    The caller commits (``Database.session()`` does); the UI shows the order as done only after.
    """
    require(actor, "order.decide")
    order = session.get(OrderRow, decision.order_id)
    if order is None:
        raise DecisionError(f"no order with id {decision.order_id}")
    if not decision.final_code:
        raise DecisionError("no protocol chosen")
    _check_codes(session, decision.codes)
    conflicts = decision_conflicts(session, order, decision.codes)  # every protocol of the decision
    missing = tuple(c for c in conflicts if c not in decision.acknowledged)
    if missing:
        raise ConflictNotAcknowledged(decision.final_code, missing)
    suggested_code = decision.suggested.code if decision.suggested else None
    action = ACCEPTED if suggested_code == decision.final_code else OVERRIDDEN
    row = DecisionRow(
        order_id=order.id, username=actor.username, decided_at=utcnow(), suggested_code=suggested_code,
        suggested_score=decision.suggested.score if decision.suggested else None,
        final_code=decision.final_code, action=action, comment=decision.comment.strip(),
        model_version=decision.model_version, time_to_decide_ms=decision.time_to_decide_ms,
        acknowledged_conflicts=json.dumps(list(conflicts)),
        additional_codes=json.dumps(list(decision.additional_codes)),
    )
    session.add(row)
    order.status = "done"
    session.flush()
    details = {"suggested": suggested_code, "final": decision.final_code, "model": decision.model_version,
               "has_comment": bool(row.comment), "acknowledged_conflicts": list(conflicts)}
    if decision.additional_codes:
        details["additional"] = list(decision.additional_codes)
    record_event(session, actor, f"decision.{'accept' if action == ACCEPTED else 'override'}",
                 entity=f"order:{order.accession}", details=details)
    return row


def return_to_referrer(session: Session, actor: Actor, order_id: int, question: str, *,
                       suggested: Suggestion | None = None, model_version: str | None = None,
                       time_to_decide_ms: int | None = None) -> DecisionRow:
    """Send the order back to the referrer with a question: a decision outcome of its own.

    The order leaves To do (status "returned"), carries no protocol (``final_code`` is empty) and
    never feeds training; undo (``revert_decision``) works as for any decision. The question is
    required and at most ``MAX_QUESTION`` characters; the audit event records its length, not its text.
    The caller commits.
    """
    require(actor, "order.decide")
    order = session.get(OrderRow, order_id)
    if order is None:
        raise DecisionError(f"no order with id {order_id}")
    text = (question or "").strip()
    if not text:
        raise DecisionError("returning an order needs a question for the referrer")
    if len(text) > MAX_QUESTION:
        raise DecisionError(f"the question is {len(text)} characters; at most {MAX_QUESTION}")
    if order.status == "cancelled":
        raise DecisionError(f"{order.accession} was cancelled")
    row = DecisionRow(
        order_id=order.id, username=actor.username, decided_at=utcnow(),
        suggested_code=suggested.code if suggested else None,
        suggested_score=suggested.score if suggested else None, final_code="", action=RETURNED, comment="",
        model_version=model_version, time_to_decide_ms=time_to_decide_ms, acknowledged_conflicts="[]",
        additional_codes="[]", question=text)
    session.add(row)
    order.status = "returned"
    session.flush()
    record_event(session, actor, "decision.return", entity=f"order:{order.accession}",
                 details={"suggested": row.suggested_code, "model": model_version, "question_chars": len(text)})
    return row


def decision_codes(row: DecisionRow) -> tuple[str, ...]:
    """Every protocol of a decision in order (primary first); none for a returned order."""
    if row.action == RETURNED or not row.final_code:
        return ()
    return (row.final_code, *json.loads(row.additional_codes or "[]"))


def latest_decisions(session: Session, since: datetime | None = None) -> list[DecisionRow]:
    """The latest decision per order (a re-decided order counts once, with its last answer).

    Orders whose decision was reverted (back in To do) have no current decision and are left out.
    """
    query = (select(DecisionRow).join(OrderRow, OrderRow.id == DecisionRow.order_id)
             .where(OrderRow.status == "done").order_by(DecisionRow.id))
    if since is not None:
        query = query.where(DecisionRow.decided_at >= since)
    latest: dict[int, DecisionRow] = {}
    for row in session.scalars(query):
        latest[row.order_id] = row
    return list(latest.values())


class RevertError(DecisionError):
    """The decision cannot be reverted (already reverted, replaced by a later one, someone else's)."""


def revert_decision(session: Session, actor: Actor, decision_id: int) -> OrderRow:
    """Undo a decision: the order goes back to To do, in one transaction with its audit event.

    Only the latest decision of an order that is still done can be reverted, and only by the user who
    made it (an admin may revert anyone's). The decision row stays (the audit trail refers to it);
    an order in To do has no current decision, so training and the worklist ignore it.
    The caller commits (``Database.session()`` does).
    """
    require(actor, "order.decide")
    row = session.get(DecisionRow, decision_id)
    if row is None:
        raise RevertError(f"no decision with id {decision_id}")
    order = session.get(OrderRow, row.order_id)
    if order is None:
        raise RevertError(f"decision {decision_id} has no order")
    if row.username != actor.username and not actor.can("users.manage"):
        raise RevertError(f"the decision on {order.accession} was made by {row.username}; only they can undo it")
    if order.status not in DECIDED_STATUSES:
        raise RevertError(f"{order.accession} is already back in To do")
    latest_id = session.scalar(select(func.max(DecisionRow.id)).where(DecisionRow.order_id == order.id))
    if latest_id != row.id:
        raise RevertError(f"{order.accession} was decided again since; undo that decision instead")
    order.status = "todo"
    session.flush()
    details = {"decision_id": row.id, "final": row.final_code, "action": row.action,
               "suggested": row.suggested_code, "decided_by": row.username}
    if json.loads(row.additional_codes or "[]"):
        details["additional"] = json.loads(row.additional_codes)
    record_event(session, actor, "decision.revert", entity=f"order:{order.accession}", details=details)
    return order


@dataclass(frozen=True)
class DecisionSummary:
    """What the worklist shows for a decided order."""

    decision_id: int
    final_code: str
    action: str  # accepted | overridden | returned
    username: str
    decided_at: datetime | None
    additional_codes: tuple[str, ...] = ()
    question: str = ""  # returned: the question to the referrer

    @property
    def codes(self) -> tuple[str, ...]:
        return (self.final_code, *self.additional_codes) if self.final_code else ()

    def label(self) -> str:
        """'CT-HEAD-WO +2', 'Returned'."""
        if self.action == RETURNED:
            return "Returned"
        return self.final_code + (f" +{len(self.additional_codes)}" if self.additional_codes else "")


def current_decisions(session: Session, order_ids: Sequence[int] | None = None) -> dict[int, DecisionSummary]:
    """Order id -> its current (latest) decision, for orders that are done or returned."""
    latest = (select(DecisionRow.order_id, func.max(DecisionRow.id).label("last_id"))
              .group_by(DecisionRow.order_id).subquery())
    query = (select(DecisionRow.id, DecisionRow.order_id, DecisionRow.final_code, DecisionRow.action,
                    DecisionRow.username, DecisionRow.decided_at, DecisionRow.additional_codes, DecisionRow.question)
             .join(latest, latest.c.last_id == DecisionRow.id)
             .join(OrderRow, OrderRow.id == DecisionRow.order_id)
             .where(OrderRow.status.in_(DECIDED_STATUSES)))
    if order_ids is not None:
        query = query.where(DecisionRow.order_id.in_(list(order_ids)))
    return {order_id: DecisionSummary(id_, code, action, user, at, tuple(json.loads(extra or "[]")), question or "")
            for id_, order_id, code, action, user, at, extra, question in session.execute(query)}


def stored_flags(session: Session) -> dict[int, list[SafetyFlag]]:
    """Order id -> the flags assessed with its latest suggestions (orders without any are left out)."""
    out: dict[int, list[SafetyFlag]] = {}
    rows = session.execute(select(SuggestionRow.order_id, SuggestionRow.flags_json)
                           .order_by(SuggestionRow.created_at, SuggestionRow.id))
    for order_id, payload in rows:
        flags = [SafetyFlag.from_json(f) for f in json.loads(payload or "[]")]
        if flags or order_id not in out:
            out[order_id] = flags
    return out
