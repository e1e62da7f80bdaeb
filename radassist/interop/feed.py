"""Orders from an interface feed (HL7 v2, FHIR) into the worklist: new, amended, cancelled.

Rules (issue 11, amendments): an order re-sent with different content updates it while it is
still to do (its cached suggestions are dropped so they are recomputed, flags re-checked), audited
``order.amend``; if it was already decided (done or returned) it returns to To do, audited with
``after_decision``. Every amendment also stores the changed fields before/after and the safety-flag
types before/after (``OrderAmendmentRow``; shown by ``ingest.amendment_for``). A cancellation (CA/DC, FHIR revoked) takes it off To do (status
``cancelled``), audited ``order.cancel``. Identical re-sends are counted as duplicates.
Audit details carry field names and codes, never the values.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from radassist.access import SERVICE, Actor
from radassist.audit import record_event
from radassist.domain import Order
from radassist.store.models import InterfaceOrderRow, OrderAmendmentRow, OrderRow, SuggestionRow, utcnow

# The interface feed's own account in the audit log when no service account signed in: a service
# (it may import orders, nothing else), not an admin.
INTERFACE = Actor("interface", SERVICE)
# Orders from `radassist import` files (JSONL/CSV): no interface metadata, no results sent back.
FILE_SOURCE = "file"
DECIDED = ("done", "returned")

NEW, DUPLICATE, AMENDED, REOPENED, CANCELLED, UNKNOWN, IGNORED = (
    "new", "duplicate", "amended", "amended-after-decision", "cancelled", "unknown", "ignored")
CONTENT_FIELDS = ("ordered_exam", "clinical_notes", "age", "sex", "priority", "mrn", "patient_name",
                  "ordering_provider")


@dataclass
class FeedResult:
    counts: dict[str, int] = field(default_factory=dict)
    order_ids: list[int] = field(default_factory=list)  # orders whose suggestions must be (re)computed

    def add(self, outcome: str, order_id: int | None = None, needs_suggestion: bool = False) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if needs_suggestion and order_id is not None:
            self.order_ids.append(order_id)


def _changed(row: OrderRow, order: Order) -> list[str]:
    return [f for f in CONTENT_FIELDS if (getattr(row, f) or None) != (getattr(order, f) or None)]


def _save_meta(session: Session, order_id: int, source: str, control: str, meta: dict) -> None:
    if source == FILE_SOURCE:
        return
    row = session.scalar(select(InterfaceOrderRow).where(InterfaceOrderRow.order_id == order_id))
    if row is None:
        row = InterfaceOrderRow(order_id=order_id, source=source)
        session.add(row)
    row.source = source
    for key in ("message_type", "version", "sending_app", "sending_facility", "receiving_app",
                "receiving_facility", "placer_number", "filler_number", "service_code", "resource_id", "control_id"):
        if key in meta and meta[key] is not None:
            value = str(meta[key])
            setattr(row, key, value[:400] if key == "service_code" else value[:200])
    if "patient" in meta:
        row.patient_json = json.dumps(meta["patient"], sort_keys=True)
    row.last_control = control[:4]
    row.updated_at = utcnow()


_ORDER_COLUMNS = ("accession", "ordered_exam", "clinical_notes", "age", "sex", "priority", "mrn", "patient_name",
                  "ordering_provider", "ordered_at", "received_at", "status")
_META_COLUMNS = ("message_type", "version", "sending_app", "sending_facility", "receiving_app",
                 "receiving_facility", "placer_number", "filler_number", "service_code", "resource_id", "control_id")

# Constant statements (column names from the tuples above); every value is a parameter.
_INSERT_ORDER = ("INSERT INTO orders (" + ", ".join(_ORDER_COLUMNS) + ") VALUES ("
                 + ", ".join("?" * len(_ORDER_COLUMNS)) + ") ON CONFLICT(accession) DO NOTHING")
_INSERT_META = ("INSERT INTO interface_orders (order_id, source, " + ", ".join(_META_COLUMNS)
                + ", patient_json, last_control, updated_at) VALUES ("
                + ", ".join("?" * (len(_META_COLUMNS) + 5)) + ")")


def _insert_new(session: Session, order: Order, meta: dict, source: str, control: str) -> int | None:
    """The common case, a new order, in raw parameterized SQL on the session's connection (the ORM
    unit of work costs more than the insert itself): INSERT ... ON CONFLICT DO NOTHING, so that
    concurrent importers and listeners never collide. Returns the new id, None if it exists."""
    now = utcnow()
    values = {"accession": order.accession, "ordered_exam": order.ordered_exam,
              "clinical_notes": order.clinical_notes, "age": order.age, "sex": order.sex,
              "priority": order.priority, "mrn": order.mrn, "patient_name": order.patient_name,
              "ordering_provider": order.ordering_provider, "ordered_at": order.ordered_at or now,
              "received_at": now, "status": "todo"}
    session.flush()
    dbapi = session.connection().connection.driver_connection
    assert dbapi is not None  # an open session's connection
    cur = dbapi.cursor()
    try:
        cur.execute(_INSERT_ORDER, [_sql_value(values[c]) for c in _ORDER_COLUMNS])
        if cur.rowcount != 1:
            return None
        order_id = cur.lastrowid
        if source == FILE_SOURCE:
            return order_id
        meta_values = [str(meta.get(c) or "")[:400 if c == "service_code" else 200] for c in _META_COLUMNS]
        patient = json.dumps(meta.get("patient") or {}, sort_keys=True)
        cur.execute(_INSERT_META, [order_id, source, *meta_values, patient, control[:4], _sql_value(now)])
        return order_id
    finally:
        cur.close()


def _sql_value(value):
    # the format SQLAlchemy's SQLite DateTime type stores and reads back
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if hasattr(value, "strftime") else value


def _flag_types(order: Order) -> list[str]:
    from radassist.flag_assessment import assess_order

    return sorted({f.type for f in assess_order(order)})


def _record_amendment(session: Session, row: OrderRow, order: Order, changed: list[str], previous: str,
                      source: str, actor: Actor) -> None:
    """The difference, before/after (PHI: it stays in the database, never in the audit log)."""
    from radassist.ingest import order_from_row

    before = order_from_row(row)
    changes = {f: [getattr(before, f), getattr(order, f)] for f in changed}
    session.add(OrderAmendmentRow(
        order_id=row.id, amended_at=utcnow(), source=source[:8], username=actor.username[:64],
        previous_status=previous, after_decision=previous in DECIDED,
        changes_json=json.dumps(changes, ensure_ascii=False, sort_keys=True),
        flags_before_json=json.dumps(_flag_types(before)), flags_after_json=json.dumps(_flag_types(order))))


def apply_order(session: Session, order: Order, control: str, meta: dict, source: str, result: FeedResult,
                actor: Actor = INTERFACE, cancel: bool = False, audit_new: bool = True) -> str:
    """Insert, amend or cancel one order in the caller's transaction; returns the outcome.

    ``audit_new=False``: a new order gets no event of its own (a file import counts them in its
    ``import`` event); amendments and cancellations are always audited one by one.
    """
    entity = f"order:{order.accession}"
    details = {"source": source, "control": control}
    if cancel:
        row = session.scalar(select(OrderRow).where(OrderRow.accession == order.accession))
        if row is None:
            record_event(session, actor, "order.cancel", entity=entity, outcome="failure",
                         details={**details, "reason": "unknown accession"})
            result.add(UNKNOWN)
            return UNKNOWN
        if row.status == "cancelled":
            result.add(DUPLICATE)
            return DUPLICATE
        after = row.status in DECIDED
        row.status = "cancelled"
        _save_meta(session, row.id, source, control, meta)
        record_event(session, actor, "order.cancel", entity=entity, details={**details, "after_decision": after})
        result.add(CANCELLED, row.id)
        return CANCELLED
    order_id = _insert_new(session, order, meta, source, control)
    if order_id is not None:
        if audit_new:
            record_event(session, actor, "order.receive", entity=entity, details=details)
        result.add(NEW, order_id, needs_suggestion=True)
        return NEW
    row = session.scalar(select(OrderRow).where(OrderRow.accession == order.accession)
                         .execution_options(populate_existing=True))
    if row is None:  # not inserted, yet absent: deleted by another transaction meanwhile
        raise RuntimeError("an order vanished during import; import the file again")
    changed = _changed(row, order)
    if not changed and row.status != "cancelled":
        _save_meta(session, row.id, source, control, meta)
        result.add(DUPLICATE)
        return DUPLICATE
    previous = row.status
    _record_amendment(session, row, order, changed, previous, source, actor)
    for name in CONTENT_FIELDS:
        setattr(row, name, getattr(order, name))
    row.status = "todo"
    session.execute(delete(SuggestionRow).where(SuggestionRow.order_id == row.id))
    _save_meta(session, row.id, source, control, meta)
    session.flush()
    outcome = REOPENED if previous in DECIDED else AMENDED
    record_event(session, actor, "order.amend", entity=entity,
                 details={**details, "changed": changed, "after_decision": previous in DECIDED,
                          "reinstated": previous == "cancelled"})
    result.add(outcome, row.id, needs_suggestion=True)
    return outcome
