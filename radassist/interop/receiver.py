"""One HL7 v2 order message in, the worklist updated, an ACK out (used by the listener and `import`).

AA: every order group landed. AE: the message was understood but some group (or all) could not be
used; an ERR segment names each bad field, the good groups still land. AR: the message type is not
an order message this system accepts, or the message cannot be parsed. Logs carry control ids,
message types and counts, never patient text.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from radassist.access import Actor
from radassist.domain import Order
from radassist.ingest import OrderFormatError, order_from_record
from radassist.interop.feed import IGNORED, INTERFACE, FeedResult, apply_order
from radassist.interop.hl7_orders import (
    CANCEL_CONTROLS,
    DEFAULT_ACCESSION_FIELDS,
    IGNORED_CONTROLS,
    HL7FormatError,
    ItemError,
    ParsedMessage,
    build_ack,
    parse_header,
    parse_order_message,
)

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    ack: str
    code: str                      # AA | AE | AR
    control_id: str = ""
    result: FeedResult = field(default_factory=FeedResult)
    errors: list[ItemError] = field(default_factory=list)


def _field_of(exc: OrderFormatError) -> str:
    text = str(exc)
    mapping = {"accession": "OBR-18", "ordered_exam": "OBR-4", "clinical_notes": "OBR-13", "age": "PID-7",
               "sex": "PID-8", "priority": "TQ1-9", "ordered_at": "ORC-9", "mrn": "PID-3",
               "patient_name": "PID-5", "ordering_provider": "ORC-12"}
    return next((loc for key, loc in mapping.items() if key in text), "OBR")


def to_order(record: dict, control: str) -> Order:
    """The order contract's validation; a cancellation needs only its accession."""
    if control in CANCEL_CONTROLS:
        record = {**record, "ordered_exam": record.get("ordered_exam") or "(cancelled)"}
    return order_from_record(record)


class HL7Receiver:
    """Turns one message into stored orders and an ACK; thread-compatible (one DB transaction each)."""

    def __init__(self, db, accession_fields: Sequence[str] = DEFAULT_ACCESSION_FIELDS,
                 on_orders: Callable[[list[int]], None] | None = None, actor: Actor = INTERFACE,
                 app: str = "RADASSIST", facility: str = ""):
        self.db = db
        self.accession_fields = tuple(accession_fields)
        self.on_orders = on_orders
        self.actor = actor
        self.app, self.facility = app, facility

    def handle(self, text: str) -> Outcome:
        try:
            msg = parse_order_message(text, self.accession_fields)
        except HL7FormatError as exc:
            header = None
            try:
                header = parse_header(text)
            except HL7FormatError:
                pass
            log.warning("rejected HL7 message %s: %s", header.control_id if header else "(no MSH)", exc)
            err = ItemError(0, exc.location, exc.code, str(exc))
            return Outcome(build_ack(header, "AR", [err], "message rejected", self.app, self.facility), "AR",
                           header.control_id if header else "", errors=[err])
        if not msg.supported:
            err = ItemError(0, "MSH-9", 200, "unsupported message type")
            log.warning("rejected HL7 message %s: unsupported type %s", msg.control_id, msg.message_type[:20])
            return Outcome(build_ack(msg, "AR", [err], "unsupported message type", self.app, self.facility),
                           "AR", msg.control_id, errors=[err])
        result = FeedResult()
        errors = list(msg.errors)
        try:
            self._store(msg, result, errors)
        except Exception as exc:  # database trouble: the sender must retry; no SQL parameters in logs
            log.error("could not store HL7 message %s: %s", msg.control_id, type(exc).__name__)
            err = ItemError(0, "MSH", 207, "application internal error; retry")
            return Outcome(build_ack(msg, "AE", [err], "not stored, retry", self.app, self.facility), "AE",
                           msg.control_id, errors=[err])
        code = "AE" if errors else "AA"
        log.info("HL7 %s %s: %s%s", msg.message_type, msg.control_id,
                 ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items())) or "nothing stored",
                 f", {len(errors)} error(s)" if errors else "")
        if result.order_ids and self.on_orders is not None:
            self.on_orders(list(result.order_ids))
        return Outcome(build_ack(msg, code, errors, "" if code == "AA" else "some orders not accepted",
                                 self.app, self.facility), code, msg.control_id, result, errors)

    def _store(self, msg: ParsedMessage, result: FeedResult, errors: list[ItemError]) -> None:
        prepared = []
        for item in msg.items:
            if item.control in IGNORED_CONTROLS:
                result.add(IGNORED)
                continue
            try:
                prepared.append((item, to_order(item.record, item.control)))
            except OrderFormatError as exc:
                errors.append(ItemError(item.index, _field_of(exc), 102, str(exc)))
        if not prepared:
            return
        with self.db.session() as session:
            for item, order in prepared:
                meta = {**item.meta, "message_type": msg.message_type, "version": msg.version,
                        "sending_app": msg.sending_app, "sending_facility": msg.sending_facility,
                        "receiving_app": msg.receiving_app, "receiving_facility": msg.receiving_facility,
                    "control_id": msg.control_id}
                apply_order(session, order, item.control, meta, "hl7", result, self.actor,
                            cancel=item.control in CANCEL_CONTROLS)

    def handle_bytes(self, data: bytes) -> bytes:
        """The MLLP listener's handler: one frame in, one framed-ready ACK out."""
        from radassist.interop.hl7_orders import normalise_text

        return self.handle(normalise_text(data)).ack.encode("utf-8")
