"""HL7 v2 order messages -> orders: field mapping, vendors' habits, escapes, ACKs, .hl7 import."""
from __future__ import annotations

from support import DATA_DIR, REPO, TESTS_DIR  # noqa: F401
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from radassist.audit import verify_chain
from radassist.interop.hl7_orders import (
    build_ack,
    escape,
    parse_ack,
    parse_order_message,
    parse_ts,
    split_messages,
)
from radassist.interop.receiver import HL7Receiver
from radassist.store.models import AuditEventRow, InterfaceOrderRow, OrderRow, SuggestionRow

DATA = DATA_DIR / "hl7"


def _messages(name: str) -> list[str]:
    return [text for _, text in split_messages((DATA / name).read_bytes())]


def test_vendor_a_orm_v23_maps_every_field():
    msg = parse_order_message(_messages("vendor_a_orm_o01_v23.hl7")[0])
    assert (msg.control_id, msg.message_type, msg.version, msg.sending_app) == ("MSG00001", "ORM^O01", "2.3",
                                                                               "EPICRIS")
    assert not msg.errors and len(msg.items) == 1
    item = msg.items[0]
    rec = item.record
    assert item.control == "NW"
    assert rec["accession"] == "ACC10001"                       # OBR-18 wins over OBR-3
    assert rec["ordered_exam"] == "CT Head without contrast"   # OBR-4 text component
    assert rec["clinical_notes"].splitlines() == [              # \.br\ -> line break, \T\ -> &
        "Fall from standing at home", "On apixaban for AF", "Headache & vomiting",
        "Daughter reports prior hives after contrast"]         # order NTE kept, patient NTE not
    assert "Patient-level" not in rec["clinical_notes"]
    assert rec["age"] == 67 and rec["sex"] == "F" and rec["priority"] == "ROUTINE"
    assert rec["mrn"] == "00123456"                             # PID-3 repetition typed MR
    assert rec["patient_name"] == "TESTPATIENT, ALICE"
    assert rec["ordering_provider"] == "DR MARCUS WELBY"        # ORC-12 XCN
    assert rec["ordered_at"] == "2025-03-14T08:29:00"           # ORC-9
    assert item.meta["placer_number"] == "PLC10001" and item.meta["filler_number"] == "FIL10001"


def test_vendor_b_omi_two_orders_tq1_obx_and_escapes():
    msg = parse_order_message(_messages("vendor_b_omi_o23_v251_two_orders.hl7")[0])
    assert msg.message_type == "OMI^O23" and msg.version == "2.5.1"
    first, second = msg.items
    assert (first.record["accession"], second.record["accession"]) == ("SMC-ACC-551", "SMC-ACC-552")
    assert first.record["priority"] == "STAT" and second.record["priority"] == "ROUTINE"  # TQ1-9 per order
    notes = first.record["clinical_notes"]
    assert "RLQ pain ^ fever; r/o appendicitis" in notes        # OBR-31 repetitions, \S\
    assert "RLQ pain 12h, WBC 15" in notes                      # OBX TX
    assert "eGFR: 28 mL/min/1.73m2" in notes                    # OBX NM with units
    assert second.record["clinical_notes"] == "Cough | SOB; \\ check line placement"  # \F\ and \E\
    assert first.record["sex"] == "M"                           # PID-8 'M^'
    # birth date with a time part, message time with a zone (-0500 -> 19:15 UTC)
    assert first.record["age"] == 55
    assert "OBX" not in notes and "ZPI" not in notes


def test_vendor_c_sparse_bom_lf_obr44_orc7():
    messages = _messages("vendor_c_sparse_lf_bom.hl7")
    assert len(messages) == 1
    rec = parse_order_message(messages[0]).items[0].record
    assert rec["accession"] == "V-ACC-1"                        # only OBR-3
    assert rec["ordered_exam"] == "MRI brain with and without contrast"  # OBR-4 empty -> OBR-44
    assert rec["priority"] == "URGENT"                          # ORC-7.6 = A
    assert rec["age"] is None and rec["sex"] == "U"             # no birth date: age unknown
    assert rec["ordering_provider"] == "MICHAELA QUINN"         # OBR-16 when ORC-12 is empty


def test_accession_field_is_configurable():
    text = _messages("vendor_a_orm_o01_v23.hl7")[0]
    assert parse_order_message(text, ("ORC-3",)).items[0].record["accession"] == "FIL10001"
    assert parse_order_message(text, ("OBR-2",)).items[0].record["accession"] == "PLC10001"


def test_split_handles_cr_lf_crlf_batches_and_mllp_bytes():
    assert [len(_messages(n)) for n in ("vendor_a_followups_crlf.hl7", "vendor_b_batch_dc.hl7",
                                        "mixed_malformed.hl7")] == [2, 1, 4]
    framed = b"\x0b" + (DATA / "vendor_a_orm_o01_v23.hl7").read_bytes() + b"\x1c\r"
    assert len(split_messages(framed)) == 1


@pytest.mark.parametrize("value,expected", [
    ("19580312", "1958-03-12T00:00:00"), ("1958", "1958-01-01T00:00:00"),
    ("20250402141500-0500", "2025-04-02T19:15:00"), ("20250402141500.123+0100", "2025-04-02T13:15:00"),
])
def test_hl7_timestamps(value, expected):
    assert parse_ts(value).isoformat() == expected


def test_malformed_messages_are_named_without_patient_text():
    bad_dob, no_exam, adt = [parse_order_message(t) for t in _messages("mixed_malformed.hl7")[1:]]
    assert bad_dob.errors[0].location == "PID-7" and "BADDOB" not in str(bad_dob.errors[0])
    assert no_exam.errors[0].location == "OBR-4"
    assert adt.supported is False


def test_ack_echoes_control_id_and_names_the_field():
    msg = parse_order_message(_messages("mixed_malformed.hl7")[1])
    ack = build_ack(msg, "AE", msg.errors)
    segs = ack.split("\r")
    assert segs[0].startswith("MSH|^~\\&|RADASSIST||RIS|H|") and "|ACK^O01|" in segs[0]
    assert segs[1].startswith("MSA|AE|BAD-1")
    assert segs[2].startswith("ERR|PID^1^7^102")              # v2.3: ERR-1
    assert "TWO" not in ack and "19XX" not in ack
    v25 = parse_order_message(_messages("vendor_b_omi_o23_v251_two_orders.hl7")[0])
    ack25 = build_ack(v25, "AE", [type(msg.errors[0])(1, "OBR-4", 101, "no exam")])
    assert "|ACK^O23^ACK|" in ack25 and "\rERR||OBR^1^4|101^no exam^HL70357|E" in ack25
    assert parse_ack(ack25) == ("AE", "CTL-B-7781")


def test_escape_round_trip():
    text = "a|b^c~d\\e&f\nline2"
    esc = escape(text)
    assert "|" not in esc and "^" not in esc and "\n" not in esc
    msg = ("MSH|^~\\&|X|Y|||20250101||ORM^O01|E1|P|2.3\rPID|1||M||N^A||19800101|F\r"
           f"ORC|NW|P|F\rOBR|1|P|F|CT^CT head|||||||||{esc}|||||ACC-E\r")
    assert parse_order_message(msg).items[0].record["clinical_notes"] == "a|b^c~d\\e&f\nline2"


def test_receiver_new_amend_cancel_follow_the_rules(db):
    receiver = HL7Receiver(db)
    new = receiver.handle(_messages("vendor_a_orm_o01_v23.hl7")[0])
    assert new.code == "AA" and new.result.counts == {"new": 1}
    assert receiver.handle(_messages("vendor_a_orm_o01_v23.hl7")[0]).result.counts == {"duplicate": 1}
    with db.session() as s:
        order = s.scalar(select(OrderRow).where(OrderRow.accession == "ACC10001"))
        s.add(SuggestionRow(order_id=order.id, model_version="m/1", suggestions_json="[]"))
    xo, ca = _messages("vendor_a_followups_crlf.hl7")
    amended = receiver.handle(xo)
    assert amended.code == "AA" and amended.result.counts == {"amended": 1}
    with db.session() as s:
        order = s.scalar(select(OrderRow).where(OrderRow.accession == "ACC10001"))
        assert "Anaphylaxis to iodinated contrast" in order.clinical_notes and order.priority == "STAT"
        assert s.scalar(select(func.count()).select_from(SuggestionRow)) == 0   # recomputed later
        meta = s.scalar(select(InterfaceOrderRow))
        assert meta.last_control == "XO" and meta.control_id == "MSG00002"
        assert json.loads(meta.patient_json)["pid7"] == "19580312"
    assert receiver.handle(ca).result.counts == {"cancelled": 1}
    with db.session() as s:
        assert s.scalar(select(OrderRow.status)) == "cancelled"
        events = list(s.scalars(select(AuditEventRow.action).order_by(AuditEventRow.id)))
        details = " ".join(s.scalars(select(AuditEventRow.details)))
    assert ["order.receive", "order.amend", "order.cancel"] == [e for e in events if e.startswith("order.")]
    assert "Anaphylaxis" not in details and "TESTPATIENT" not in details   # field names only
    with db.session() as s:
        assert verify_chain(s).ok


def test_amendment_after_decision_returns_the_order_to_todo(db):
    from radassist.access import Actor
    from radassist.worklist import DecisionInput, record_decision

    receiver = HL7Receiver(db)
    receiver.handle(_messages("vendor_a_orm_o01_v23.hl7")[0])
    with db.session() as s:
        order = s.scalar(select(OrderRow))
        record_decision(s, Actor("rad", "radiologist"), DecisionInput(order.id, "CT-HEAD-WO"))
    outcome = receiver.handle(_messages("vendor_a_followups_crlf.hl7")[0])
    assert outcome.result.counts == {"amended-after-decision": 1}
    with db.session() as s:
        assert s.scalar(select(OrderRow.status)) == "todo"
        event = s.scalar(select(AuditEventRow).where(AuditEventRow.action == "order.amend"))
        assert json.loads(event.details)["after_decision"] is True
        assert "clinical_notes" in json.loads(event.details)["changed"]


def test_two_orders_and_partial_errors_get_ae_and_good_ones_land(db):
    receiver = HL7Receiver(db)
    two = receiver.handle(_messages("vendor_b_omi_o23_v251_two_orders.hl7")[0])
    assert two.code == "AA" and two.result.counts == {"new": 2} and len(two.result.order_ids) == 2
    mixed = ("MSH|^~\\&|R|H|||20250101||ORM^O01|MIX1|P|2.3\rPID|1||M9||N^A||19800101|F\r"
             "ORC|NW|P1|F1\rOBR|1|P1|F1|CT^CT head||||||||||||||A-OK\r"
             "ORC|NW|P2|F2\rOBR|1|P2|F2||||||||||||||A-NOEXAM\r"
             "ORC|ZZ|P3|F3\rOBR|1|P3|F3|CT^CT head||||||||||||||A-BADCTL\r")
    out = receiver.handle(mixed)
    assert out.code == "AE" and out.result.counts == {"new": 1}
    with db.session() as s:
        assert s.scalar(select(OrderRow.id).where(OrderRow.accession == "A-OK"))
    assert [e.location for e in out.errors] == ["OBR-4", "ORC-1"]
    assert "MSA|AE|MIX1" in out.ack and "ERR|OBR^1^4^101" in out.ack
    dc = receiver.handle(_messages("vendor_b_batch_dc.hl7")[0])
    assert dc.code == "AA" and dc.result.counts == {"cancelled": 1}


@pytest.mark.parametrize("text,code", [
    ("PID|1||M||N^A\r", "AR"),                                             # no MSH
    ("MSH|^~\\&|R|H|||20250101||ADT^A01|ADT1|P|2.3\rPID|1||M\r", "AR"),    # not an order message
    ("MSH|^~\\&|R|H|||20250101||ORM^O01||P|2.3\rPID|1||M\r", "AR"),        # no control id
    ("MSH|^~\\&|R|H|||20250101||ORM^O01|NOGRP|P|2.3\rPID|1||M\r", "AE"),   # no order group
    ("MSH|^~\\&|R|H|||20250101||ORM^O01|NOPID|P|2.3\rORC|NW|P|F\rOBR|1|P|F|CT^CT||||||||||||||X1\r", "AE"),
    ("MSH|^~\\&|R|H|||20250101||ORM^O01|LONG|P|2.3\rPID|1||M||N^A||19800101|F\r"
     "ORC|NW|P|F\rOBR|1|P|F|CT^CT||||||||||||||" + "X" * 80 + "\r", "AE"),  # accession too long
    ("\x00\x01garbage", "AR"),
])
def test_malformed_messages_get_a_reply_and_store_nothing(db, text, code):
    out = HL7Receiver(db).handle(text)
    assert out.code == code
    assert out.ack.startswith("MSH|") and "\rMSA|" + code in out.ack
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(OrderRow)) == 0


def test_import_hl7_files_reports_lines_and_lands_good_orders(db, tmp_path):
    from radassist.ingest import import_files

    report = import_files(db, [DATA / "vendor_a_orm_o01_v23.hl7", DATA / "vendor_b_omi_o23_v251_two_orders.hl7",
                               DATA / "vendor_c_sparse_lf_bom.hl7", DATA / "mixed_malformed.hl7"])
    assert report.imported == 5
    lines = sorted((p.file, p.line) for p in report.problems)
    assert lines == [("mixed_malformed.hl7", 5), ("mixed_malformed.hl7", 9), ("mixed_malformed.hl7", 13)]
    assert any("PID-7" in str(p) for p in report.problems)
    assert all("BADDOB" not in str(p) for p in report.problems)
    again = import_files(db, [DATA / "vendor_a_followups_crlf.hl7", DATA / "vendor_b_batch_dc.hl7"])
    assert again.ok and again.imported == 3   # amended, cancelled, discontinued
    with db.session() as s:
        statuses = dict(s.execute(select(OrderRow.accession, OrderRow.status)).all())
    assert statuses["ACC10001"] == "cancelled" and statuses["SMC-ACC-552"] == "cancelled"
    assert statuses["SMC-ACC-551"] == "todo" and statuses["V-ACC-1"] == "todo"


def test_import_command_accepts_hl7(db, tmp_path, capsys):
    from radassist.cli import main

    from support.accounts import service_key_file

    key = service_key_file(db, tmp_path)
    rc = main(["import", "--db", str(db.path), "--key-file", str(key),
               str(DATA / "vendor_b_omi_o23_v251_two_orders.hl7")])
    assert rc == 0 and "2 imported" in capsys.readouterr().out
