"""Worklist services: which orders wait, their cached suggestions, and recording decisions."""
from __future__ import annotations

import json
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


def cached_prediction(session: Session, order_id: int, model_version: str) -> Prediction | None:
    row = session.scalar(select(SuggestionRow).where(
        SuggestionRow.order_id == order_id, SuggestionRow.model_version == model_version))
    if row is None:
        return None
    accession = session.get(OrderRow, order_id).accession
    return Prediction(
        accession=accession,
        suggestions=[Suggestion.from_json(s) for s in json.loads(row.suggestions_json)],
        flags=[SafetyFlag.from_json(f) for f in json.loads(row.flags_json)],
        model=row.model_version,
        latency_ms=row.latency_ms,
        review=bool(row.review_reason),
        review_reason=row.review_reason or "",
    )


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
    acknowledged: tuple[str, ...] = ()  # flag types the radiologist acknowledged for this protocol


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


def decision_conflicts(session: Session, order: OrderRow, code: str) -> tuple[str, ...]:
    """Flag types (that the site's policy counts) which protocol ``code`` goes against for this order."""
    from radassist.catalog import catalog_from_db
    from radassist.safety_policy import site_policy

    catalog = catalog_from_db(session)
    protocol = next((p for p in catalog if p.code == code), None)
    if protocol is None:
        return ()
    return site_policy(catalog).conflicts_of(protocol, order_flags(session, order))


def record_decision(session: Session, actor: Actor, decision: DecisionInput) -> DecisionRow:
    """Record accept/override and mark the order done, in one transaction with its audit event.

    The caller commits (``Database.session()`` does); the UI shows the order as done only after.
    """
    require(actor, "order.decide")
    order = session.get(OrderRow, decision.order_id)
    if order is None:
        raise DecisionError(f"no order with id {decision.order_id}")
    protocol = session.get(ProtocolRow, decision.final_code)
    if protocol is None or not protocol.active:
        raise DecisionError(f"protocol {decision.final_code!r} is not in the catalog")
    conflicts = decision_conflicts(session, order, decision.final_code)
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
    )
    session.add(row)
    order.status = "done"
    session.flush()
    record_event(session, actor, f"decision.{'accept' if action == ACCEPTED else 'override'}",
                 entity=f"order:{order.accession}",
                 details={"suggested": suggested_code, "final": decision.final_code,
                          "model": decision.model_version, "has_comment": bool(row.comment),
                          "acknowledged_conflicts": list(conflicts)})
    return row


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
    if row.username != actor.username and not actor.can("users.manage"):
        raise RevertError(f"the decision on {order.accession} was made by {row.username}; only they can undo it")
    if order.status != "done":
        raise RevertError(f"{order.accession} is already back in To do")
    latest_id = session.scalar(select(func.max(DecisionRow.id)).where(DecisionRow.order_id == order.id))
    if latest_id != row.id:
        raise RevertError(f"{order.accession} was decided again since; undo that decision instead")
    order.status = "todo"
    session.flush()
    record_event(session, actor, "decision.revert", entity=f"order:{order.accession}",
                 details={"decision_id": row.id, "final": row.final_code, "action": row.action,
                          "suggested": row.suggested_code, "decided_by": row.username})
    return order


@dataclass(frozen=True)
class DecisionSummary:
    """What the worklist shows for a decided order."""

    decision_id: int
    final_code: str
    action: str  # accepted | overridden
    username: str
    decided_at: datetime | None


def current_decisions(session: Session) -> dict[int, DecisionSummary]:
    """Order id -> its current (latest) decision, for orders that are done."""
    latest = (select(DecisionRow.order_id, func.max(DecisionRow.id).label("last_id"))
              .group_by(DecisionRow.order_id).subquery())
    rows = session.execute(
        select(DecisionRow.id, DecisionRow.order_id, DecisionRow.final_code, DecisionRow.action,
               DecisionRow.username, DecisionRow.decided_at)
        .join(latest, latest.c.last_id == DecisionRow.id)
        .join(OrderRow, OrderRow.id == DecisionRow.order_id)
        .where(OrderRow.status == "done"))
    return {order_id: DecisionSummary(id_, code, action, user, at)
            for id_, order_id, code, action, user, at in rows}


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
