"""Results back to the sender: payloads, persistent outbox, order, retry, restart, audit."""
from __future__ import annotations

from support import DATA_DIR, REPO, TESTS_DIR  # noqa: F401
import json
import os
import stat
import time
from pathlib import Path

from sqlalchemy import select

from radassist.access import Actor
from radassist.interop.hl7_orders import build_ack, parse_order_message
from radassist.interop.mllp import MLLPListener
from radassist.interop.outbox import Destination, OutboxSender, OutboxWorker, enqueue_decisions, pending_count
from radassist.interop.receiver import HL7Receiver
from radassist.store.models import AuditEventRow, OrderRow, OutboxRow
from radassist.worklist import DecisionInput, record_decision
from support.mllp import Peer, order_message

DATA = DATA_DIR / "hl7"
RAD = Actor("dr.rad", "radiologist")


def _receive_and_decide(db, numbers, kind="ORM^O01", version="2.3", code="CT-HEAD-WO"):
    receiver = HL7Receiver(db)
    for n in numbers:
        assert receiver.handle(order_message(n, kind, version)).code == "AA"
    with db.session() as s:
        ids = {a: i for a, i in s.execute(select(OrderRow.accession, OrderRow.id))}
    for n in numbers:
        with db.session() as s:
            record_decision(s, RAD, DecisionInput(ids[f"ACC{n:06d}"], code))


def _segments(text):
    return {line.split("|")[0]: line.split("|") for line in text.strip("\r").split("\r")}


def test_xo_result_carries_protocol_patient_and_order_numbers(db):
    _receive_and_decide(db, [1])
    dest = Destination("mllp", host="127.0.0.1", port=1, facility="RADDEPT")
    with db.session() as s:
        assert enqueue_decisions(s, dest) == 1
        assert enqueue_decisions(s, dest) == 0          # queued once
        payload = s.scalar(select(OutboxRow.payload))
    seg = _segments(payload)
    assert seg["MSH"][8] == "ORM^O01" and seg["MSH"][4:6] == ["RIS", "HOSP"] and seg["MSH"][11] == "2.3"
    assert seg["PID"][3] == "MRN1^^^H^MR" and seg["PID"][7] == "19600101"
    assert seg["ORC"][1:4] == ["XO", "P1", "F1"] and seg["ORC"][10] == "dr.rad"
    assert seg["OBR"][4].startswith("CT-HEAD-WO^") and seg["OBR"][4].endswith("^RADASSIST")
    assert seg["OBR"][18] == "ACC000001"
    assert parse_order_message(payload).items[0].record["accession"] == "ACC000001"  # valid HL7 v2


def test_omi_obx_and_ack_styles(db):
    _receive_and_decide(db, [2], kind="OMI^O23^OMI_O23", version="2.5.1")
    obx = Destination("mllp", host="h", port=1, placement="obx")
    ack = Destination("mllp", host="h", port=2, style="ack")
    with db.session() as s:
        enqueue_decisions(s, obx)
        enqueue_decisions(s, ack)
        rows = {r.destination: r.payload for r in s.scalars(select(OutboxRow))}
    a, b = _segments(rows[obx.name]), _segments(rows[ack.name])
    assert a["MSH"][8] == "OMI^O23^OMI_O23" and a["OBR"][4] == "CTHEAD^CT head^L"
    assert a["OBX"][2] == "CE" and a["OBX"][5].startswith("CT-HEAD-WO^") and a["OBX"][11] == "F"
    assert b["MSH"][8] == "ORL^O22^ORL_O22" and b["MSA"][1:3] == ["AA", "C000002"] and b["ORC"][1] == "OK"


def test_peer_down_then_up_delivers_all_once_in_order_and_audits(db):
    _receive_and_decide(db, range(10, 30))
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dest = Destination("mllp", host="127.0.0.1", port=port)
    sender = OutboxSender(db, dest, timeout=1, max_backoff=0.01)
    with db.session() as s:
        enqueue_decisions(s, dest)
    for _ in range(5):                                  # peer down: nothing skipped, nothing lost
        assert sender.run_once() in ("retry", "waiting")
        time.sleep(0.02)
    with db.session() as s:
        assert pending_count(s, dest) == 20
        head = s.scalar(select(OutboxRow).order_by(OutboxRow.id).limit(1))
        assert head.attempts >= 2 and "connect" in head.last_error
    sender.close()
    peer = Peer(port)
    try:
        # a restart: a new database object and a new sender resume from the stored outbox
        from radassist.store import open_database

        db2 = open_database(db.path)
        sender2 = OutboxSender(db2, dest, timeout=2, max_backoff=0.01)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sender2.run_once() in ("sent", "retry", "waiting"):
            pass
        sender2.close()
    finally:
        peer.stop()
    accessions = [parse_order_message(m).items[0].record["accession"] for m in peer.received]
    assert accessions == [f"ACC{n:06d}" for n in range(10, 30)]          # once each, in order
    with db.session() as s:
        assert pending_count(s, dest) == 0
        events = list(s.scalars(select(AuditEventRow).where(AuditEventRow.action == "result.send")))
    assert len(events) == 20 and all(e.outcome == "success" for e in events)
    assert json.loads(events[0].details)["destination"] == dest.name


def test_rejected_result_is_audited_and_the_queue_moves_on(db):
    _receive_and_decide(db, [40, 41])
    peer = Peer(answer=lambda text: "AR" if "ACC000040" in text else "AA")
    try:
        dest = Destination("mllp", host="127.0.0.1", port=peer.port)
        sender = OutboxSender(db, dest, timeout=2)
        with db.session() as s:
            enqueue_decisions(s, dest)
        assert [sender.run_once(), sender.run_once(), sender.run_once()] == ["rejected", "sent", None]
        sender.close()
    finally:
        peer.stop()
    with db.session() as s:
        outcomes = [e.outcome for e in s.scalars(select(AuditEventRow).where(AuditEventRow.action == "result.send"))]
        statuses = list(s.scalars(select(OutboxRow.status).order_by(OutboxRow.id)))
    assert outcomes == ["failure", "success"] and statuses == ["rejected", "sent"]


def test_only_interface_orders_go_back_and_redecisions_go_again(db, tmp_path):
    from radassist.ingest import import_files

    path = tmp_path / "o.jsonl"
    path.write_text(json.dumps({"accession": "FILE-1", "ordered_exam": "CT head"}) + "\n")
    import_files(db, [path])
    with db.session() as s:
        file_order = s.scalar(select(OrderRow.id).where(OrderRow.accession == "FILE-1"))
        record_decision(s, RAD, DecisionInput(file_order, "CT-HEAD-WO"))
    _receive_and_decide(db, [50])
    _receive_and_decide(db, [50], code="CT-HEAD-W")   # decided again: a second result
    dest = Destination("mllp", host="h", port=9)
    with db.session() as s:
        assert enqueue_decisions(s, dest) == 2
        codes = [p.split("\rOBR|")[1].split("|")[3].split("^")[0] for p in s.scalars(select(OutboxRow.payload))]
    assert codes == ["CT-HEAD-WO", "CT-HEAD-W"]


def test_fhir_folder_result_is_valid_r4_private_and_names_the_radiologist(db, tmp_path):
    from fhir.resources.R4B.bundle import Bundle

    _receive_and_decide(db, [60])
    out = tmp_path / "out"
    dest = Destination("fhir", folder=str(out))
    with db.session() as s:
        enqueue_decisions(s, dest)
    assert OutboxSender(db, dest).run_once() == "sent"
    files = list(out.glob("*.json"))
    assert len(files) == 1 and stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
    doc = json.loads(files[0].read_text())
    Bundle.model_validate(doc)
    sr, prov = (e["resource"] for e in doc["entry"])
    assert sr["orderDetail"][0]["coding"][0]["code"] == "CT-HEAD-WO"
    assert sr["identifier"][0]["value"] == "ACC000060"
    assert prov["agent"][0]["who"]["display"] == "dr.rad"
    assert prov["target"][0]["reference"].startswith("ServiceRequest/")
    assert not list(out.glob(".tmp-*"))


def test_worker_thread_picks_up_new_decisions(db):
    peer = Peer()
    worker = OutboxWorker(db, [Destination("mllp", host="127.0.0.1", port=peer.port)], poll_s=0.05)
    worker.start()
    try:
        _receive_and_decide(db, [70, 71, 72])
        deadline = time.monotonic() + 5
        while len(peer.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
        peer.stop()
    assert [parse_order_message(m).items[0].record["accession"] for m in peer.received] == \
        ["ACC000070", "ACC000071", "ACC000072"]
