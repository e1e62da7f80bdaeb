"""Protocol results back to the sender, through a persistent outbox.

``enqueue_decisions`` turns every decision (on an order that came from an interface) newer than
the destination's last queued one into an outbox row whose payload is fixed at that moment: an
HL7 ORM^O01 / OMI^O23 with order control XO (or an ORR^O02 / ORL^O22 acknowledgement), the
protocol in OBR-4 or in an OBX, or a FHIR R4 transaction Bundle (ServiceRequest update with
orderDetail + Provenance naming the radiologist) for an outbound folder.
``OutboxSender`` delivers the rows of one destination strictly in order, one at a time: a peer
that is down keeps the head of the queue pending with exponential back-off (nothing is skipped,
nothing lost; the rows are in the database, so a restart resumes where it stopped). Every final
delivery (sent, or rejected by the peer) is an audit event. The control id of a result is the
same on every retry so that a receiver can drop a duplicate after a lost ACK.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.orm import Session

from radassist.audit import record_event
from radassist.interop.feed import INTERFACE
from radassist.interop.hl7_orders import escape, parse_ack
from radassist.store.models import DecisionRow, InterfaceOrderRow, OrderRow, OutboxRow, ProtocolRow, utcnow

if TYPE_CHECKING:
    from radassist.interop.mllp import MLLPClient
    from radassist.store.database import Database

log = logging.getLogger(__name__)

PENDING, SENT, REJECTED = "pending", "sent", "rejected"
PROTOCOL_SYSTEM = "urn:radassist:protocol"


@dataclass(frozen=True)
class Destination:
    """Where results go. ``kind``: ``mllp`` (host, port) or ``fhir`` (folder)."""

    kind: str
    host: str = ""
    port: int = 0
    folder: str = ""
    style: str = "xo"            # xo: ORM/OMI with ORC-1 XO | ack: ORR^O02 / ORL^O22
    placement: str = "obr4"      # obr4: protocol in OBR-4 | obx: OBR-4 as ordered, protocol in an OBX
    sources: tuple[str, ...] = ()  # which feeds' orders (default: mllp -> hl7; fhir -> hl7 and fhir)
    app: str = "RADASSIST"
    facility: str = ""

    @property
    def name(self) -> str:
        return f"mllp:{self.host}:{self.port}" if self.kind == "mllp" else f"fhir:{self.folder}"[:100]

    @property
    def feed_sources(self) -> tuple[str, ...]:
        return self.sources or (("hl7",) if self.kind == "mllp" else ("hl7", "fhir"))


def _ts(value: datetime) -> str:
    return value.strftime("%Y%m%d%H%M%S") + "+0000"


def build_hl7_result(dest: Destination, decision: DecisionRow, order: OrderRow, meta: InterfaceOrderRow,
                     protocol_name: str, control_id: str) -> str:
    patient = json.loads(meta.patient_json or "{}")
    version = meta.version or "2.5.1"
    omi = meta.message_type.startswith("OMI")
    if dest.style == "ack":
        kind = "ORL^O22^ORL_O22" if omi else "ORR^O02" + ("^ORR_O02" if version >= "2.4" else "")
        control = "OK"
    else:
        kind = "OMI^O23^OMI_O23" if omi else "ORM^O01" + ("^ORM_O01" if version >= "2.4" else "")
        control = "XO"
    when = _ts(decision.decided_at)
    protocol = f"{escape(decision.final_code)}^{escape(protocol_name)}^RADASSIST"
    segs = ["|".join(["MSH", "^~\\&", escape(dest.app), escape(dest.facility), escape(meta.sending_app),
                      escape(meta.sending_facility), _ts(utcnow()), "", kind, control_id, "P", version])]
    if dest.style == "ack":
        segs.append(f"MSA|AA|{escape(meta.control_id)}")
    pid = ["PID", "1", "", patient.get("pid3") or escape(order.mrn or ""), "", patient.get("pid5", ""), "",
           patient.get("pid7", ""), patient.get("pid8", "") or order.sex]
    segs.append("|".join(pid))
    orc = ["ORC", control, meta.placer_number, meta.filler_number, "", "", "", "", "", when,
           escape(decision.username)]
    segs.append("|".join(orc))
    obr = ["OBR", "1", meta.placer_number, meta.filler_number,
           protocol if dest.placement == "obr4" else (meta.service_code or escape(order.ordered_exam))]
    obr += [""] * 13 + [escape(order.accession)]  # OBR-5..OBR-17 empty, OBR-18 accession
    segs.append("|".join(obr))
    if dest.placement == "obx":
        segs.append("|".join(["OBX", "1", "CE", "PROTOCOL^Imaging protocol^RADASSIST", "", protocol, "", "", "",
                              "", "", "F", "", "", when, "", escape(decision.username)]))
    return "\r".join(segs) + "\r"


def build_fhir_result(decision: DecisionRow, order: OrderRow, meta: InterfaceOrderRow, protocol_name: str,
                      control_id: str) -> str:
    from fhir.resources.R4B.bundle import Bundle

    sr_id = meta.resource_id or "".join(c if c.isalnum() or c in "-." else "-" for c in order.accession)[:64]
    patient = json.loads(meta.patient_json or "{}")
    subject = ({"reference": patient["reference"]} if patient.get("reference")
               else {"identifier": {"value": order.mrn or "unknown"}})
    when = decision.decided_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    service_request = {
        "resourceType": "ServiceRequest", "id": sr_id, "status": "active", "intent": "order",
        "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                             "code": "ACSN"}]}, "value": order.accession}],
        "code": {"text": order.ordered_exam}, "subject": subject,
        "orderDetail": [{"coding": [{"system": PROTOCOL_SYSTEM, "code": decision.final_code,
                                     "display": protocol_name}], "text": protocol_name}],
    }
    provenance = {
        "resourceType": "Provenance", "target": [{"reference": f"ServiceRequest/{sr_id}"}], "recorded": when,
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                 "code": "UPDATE"}], "text": f"protocol {decision.action}"},
        "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                        "code": "author"}]},
                   "who": {"display": decision.username, "identifier": {"value": decision.username}}}],
    }
    bundle = {"resourceType": "Bundle", "type": "transaction", "id": control_id, "entry": [
        {"resource": service_request, "request": {"method": "PUT", "url": f"ServiceRequest/{sr_id}"}},
        {"resource": provenance, "request": {"method": "POST", "url": "Provenance"}},
    ]}
    Bundle.model_validate(bundle)  # R4 structure check before it goes out
    return json.dumps(bundle, indent=1)


def enqueue_decisions(session: Session, dest: Destination, limit: int = 1000) -> int:
    """Queue the results of decisions newer than the destination's last queued one; returns how many."""
    cursor = session.scalar(select(func.max(OutboxRow.decision_id)).where(OutboxRow.destination == dest.name)) or 0
    rows = session.execute(
        select(DecisionRow, OrderRow, InterfaceOrderRow, ProtocolRow.name)
        .join(OrderRow, OrderRow.id == DecisionRow.order_id)
        .join(InterfaceOrderRow, InterfaceOrderRow.order_id == OrderRow.id)
        .outerjoin(ProtocolRow, ProtocolRow.code == DecisionRow.final_code)
        .where(DecisionRow.id > cursor, InterfaceOrderRow.source.in_(dest.feed_sources),
               DecisionRow.action != "returned")  # returned to the referrer: no protocol result goes out
        .order_by(DecisionRow.id).limit(limit)).all()
    added = 0
    for decision, order, meta, protocol_name in rows:
        control_id = f"RAR{decision.id:09d}"
        name = protocol_name or decision.final_code
        if dest.kind == "mllp":
            payload = build_hl7_result(dest, decision, order, meta, name, control_id)
        else:
            payload = build_fhir_result(decision, order, meta, name, control_id)
        now = utcnow()
        result = session.execute(insert(OutboxRow).values(
            destination=dest.name, decision_id=decision.id, order_id=order.id, control_id=control_id,
            payload=payload, status=PENDING, attempts=0, next_attempt_at=now, created_at=now,
        ).on_conflict_do_nothing(index_elements=["destination", "decision_id"]))
        added += getattr(result, "rowcount", 0) or 0  # an INSERT's CursorResult
    return added


def pending_count(session: Session, dest: Destination) -> int:
    return session.scalar(select(func.count()).select_from(OutboxRow).where(
        OutboxRow.destination == dest.name, OutboxRow.status == PENDING)) or 0


class DeliveryError(Exception):
    """Transient: the peer is down or did not answer; retried."""


class Rejected(Exception):
    """Final: the peer refused the message (AR/CR, or AE/CE too often)."""


@dataclass
class OutboxSender:
    """Delivers one destination's outbox in order; ``run_once`` does at most one delivery."""

    db: Database
    dest: Destination
    timeout: float = 10.0
    max_backoff: float = 10.0
    max_app_errors: int = 3
    _client: MLLPClient | None = field(default=None, init=False, repr=False)

    def backoff(self, attempts: int) -> float:
        return min(self.max_backoff, 0.25 * (2 ** max(0, attempts - 1)))

    def _send(self, row: OutboxRow) -> str:
        if self.dest.kind == "fhir":
            folder = Path(self.dest.folder)
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{row.control_id}.json"
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
            try:
                os.fchmod(fd, 0o600)  # a result names the patient: owner only
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(row.payload)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except OSError as exc:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise DeliveryError(f"cannot write to the outbound folder ({exc.strerror})") from None
            return "written"
        from radassist.interop.mllp import MLLPClient, MLLPError

        if self._client is None:
            self._client = MLLPClient(self.dest.host, self.dest.port, timeout=self.timeout)
        try:
            reply = self._client.send(row.payload)
        except (MLLPError, OSError) as exc:
            self._client.close()
            raise DeliveryError(str(exc) if isinstance(exc, MLLPError) else
                                f"cannot connect ({exc.strerror or type(exc).__name__})") from None
        code, control = parse_ack(reply)
        if control and control != row.control_id:
            self._client.close()  # out of step with the peer: reconnect, send again
            raise DeliveryError("acknowledgement for another message")
        if code in ("AA", "CA"):
            return code
        if code in ("AR", "CR"):
            raise Rejected(code)
        if code in ("AE", "CE"):
            if row.attempts + 1 >= self.max_app_errors:
                raise Rejected(code)
            raise DeliveryError(f"peer answered {code}")
        raise DeliveryError("reply without MSA acknowledgement code")

    def run_once(self) -> str | None:
        """Deliver the head of the queue if due: 'sent', 'rejected', 'retry', 'waiting' or None (empty)."""
        with self.db.session() as session:
            row = session.scalar(select(OutboxRow).where(
                OutboxRow.destination == self.dest.name, OutboxRow.status == PENDING)
                .order_by(OutboxRow.id).limit(1))
            if row is None:
                return None
            if row.next_attempt_at > utcnow():
                return "waiting"
            session.expunge(row)
        try:
            answer = self._send(row)
        except DeliveryError as exc:
            attempts = row.attempts + 1
            delay = self.backoff(attempts)
            with self.db.session() as session:
                live = session.get_one(OutboxRow, row.id)
                live.attempts = attempts
                live.last_error = str(exc)[:200]
                live.next_attempt_at = utcnow() + timedelta(seconds=delay)
            if attempts == 1 or attempts % 10 == 0:
                log.warning("result %s to %s not delivered (attempt %d): %s", row.control_id, self.dest.name,
                            attempts, exc)
            return "retry"
        except Rejected as exc:
            self._finish(row, REJECTED, str(exc))
            log.error("result %s rejected by %s (%s)", row.control_id, self.dest.name, exc)
            return "rejected"
        self._finish(row, SENT, answer)
        return "sent"

    def _finish(self, row: OutboxRow, status: str, answer: str) -> None:
        with self.db.session() as session:
            live = session.get_one(OutboxRow, row.id)
            live.status = status
            live.attempts = row.attempts + 1
            live.sent_at = utcnow() if status == SENT else None
            live.last_error = None if status == SENT else f"peer answered {answer}"
            accession = session.scalar(select(OrderRow.accession).where(OrderRow.id == row.order_id))
            record_event(session, INTERFACE, "result.send", entity=f"order:{accession}",
                         outcome="success" if status == SENT else "failure",
                         details={"destination": self.dest.name, "decision": row.decision_id,
                                  "control_id": row.control_id, "attempts": row.attempts + 1, "answer": answer})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class OutboxWorker(threading.Thread):
    """Polls for new decisions and delivers every destination's queue until ``stop()``."""

    def __init__(self, db, destinations: list[Destination], poll_s: float = 0.5, **sender_options):
        super().__init__(name="outbox", daemon=True)
        self.db = db
        self.senders = [OutboxSender(db, d, **sender_options) for d in destinations]
        self.poll_s = poll_s
        self._halt = threading.Event()
        self._wake = threading.Event()
        self.errors = 0

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._halt.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)
        for sender in self.senders:
            sender.close()

    def run(self) -> None:
        while not self._halt.is_set():
            busy = False
            try:
                with self.db.session() as session:
                    for sender in self.senders:
                        enqueue_decisions(session, sender.dest)
                for sender in self.senders:
                    for _ in range(200):  # deliver a burst, then look for new decisions again
                        if self._halt.is_set():
                            break
                        outcome = sender.run_once()
                        if outcome in ("sent", "rejected"):
                            busy = True
                            continue
                        break
            except Exception as exc:  # the database is busy or gone for a moment: try again later
                self.errors += 1
                log.error("outbox: %s", type(exc).__name__)
            if not busy:
                self._wake.wait(self.poll_s)
                self._wake.clear()
