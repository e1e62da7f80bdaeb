"""FHIR R4 ServiceRequest / Bundle import: mapping, sparse feeds, bad resources named by index."""
from __future__ import annotations

import json

from sqlalchemy import select

from radassist.ingest import import_files
from radassist.interop.fhir_orders import read_fhir
from radassist.store.models import InterfaceOrderRow, OrderRow

PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1961-07-04",
           "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                "code": "MR"}]}, "value": "MRN-555"}],
           "name": [{"family": "Fhirtest", "given": ["Grace"]}]}
PRACTITIONER = {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Osler", "given": ["William"]}]}


def sr(**extra) -> dict:
    base = {"resourceType": "ServiceRequest", "id": "sr-1", "status": "active", "intent": "order",
            "priority": "stat", "authoredOn": "2025-06-01T09:30:00+02:00",
            "identifier": [{"system": "urn:ris", "value": "PLACER-9"},
                           {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                 "code": "ACSN"}]}, "value": "FHIR-ACC-1"}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "24727-0", "display": "CT Head WO contrast"}]},
            "subject": {"reference": "Patient/p1"}, "requester": {"reference": "Practitioner/dr1"},
            "reasonCode": [{"text": "Thunderclap headache"},
                           {"coding": [{"system": "http://snomed.info/sct", "code": "230690007",
                                        "display": "Cerebrovascular accident"}]}],
            "note": [{"text": "On warfarin"}]}
    base.update(extra)
    return base


def bundle(*resources) -> dict:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{i}", "resource": r} for i, r in enumerate(resources)]}


def _write(tmp_path, doc, name="orders.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_bundle_maps_patient_requester_codes_and_reasons():
    orders, problems = read_fhir(json.dumps(bundle(PATIENT, PRACTITIONER, sr())).encode())
    assert not problems and len(orders) == 1
    rec = orders[0].record
    assert rec["accession"] == "FHIR-ACC-1"              # the ACSN identifier, not the first one
    assert rec["ordered_exam"] == "CT Head WO contrast"  # LOINC coding display
    assert rec["clinical_notes"].splitlines() == ["Thunderclap headache", "Cerebrovascular accident", "On warfarin"]
    assert rec["priority"] == "STAT" and rec["sex"] == "F" and rec["age"] == 63
    assert rec["mrn"] == "MRN-555" and rec["patient_name"] == "Fhirtest, Grace"
    assert rec["ordering_provider"] == "Osler, William"     # requester resolved in the bundle
    assert rec["ordered_at"] == "2025-06-01T07:30:00"    # to UTC
    assert orders[0].meta["resource_id"] == "sr-1"


def test_sparse_feeds_id_as_accession_and_unknown_patient(tmp_path):
    lone = sr(identifier=None, subject={"reference": "Patient/not-in-bundle"}, requester=None, reasonCode=None,
              note=None, priority=None, code={"text": "MRI lumbar spine"})
    lone = {k: v for k, v in lone.items() if v is not None}
    orders, problems = read_fhir(json.dumps(lone).encode())
    assert not problems
    rec = orders[0].record
    assert rec["accession"] == "sr-1" and rec["ordered_exam"] == "MRI lumbar spine"
    assert rec["age"] is None and rec["sex"] == "U" and rec["priority"] == "ROUTINE"
    snomed_only = sr(code={"coding": [{"system": "http://snomed.info/sct", "code": "241615005"}]})
    assert read_fhir(json.dumps(snomed_only).encode())[0][0].record["ordered_exam"] == "241615005"


def test_contained_patient_is_used():
    doc = sr(contained=[{**PATIENT, "id": "pc", "gender": "male"}], subject={"reference": "#pc"})
    assert read_fhir(json.dumps(doc).encode())[0][0].record["sex"] == "M"


def test_bad_resources_are_named_by_bundle_index(db, tmp_path):
    doc = bundle(PATIENT,
                 sr(),
                 sr(id="sr-2", identifier=[{"value": "FHIR-ACC-2"}], code={}),           # no exam
                 sr(id="sr-3", identifier=[{"value": "FHIR-ACC-3"}], status="sideways"),  # bad status
                 sr(id="sr-4", identifier=[{"value": "FHIR-ACC-4"}], authoredOn=12),      # wrong type
                 sr(id="sr-5", identifier=[{"value": "FHIR-ACC-5"}]))
    doc["entry"].append({"fullUrl": "urn:uuid:x"})                                       # no resource
    report = import_files(db, [_write(tmp_path, doc)])
    assert report.imported == 2
    where = {p.line: p.message for p in report.problems}
    assert set(where) == {2, 3, 4, 6}
    assert "ServiceRequest.code" in where[2] and "status" in where[3] and "authoredOn" in where[4]
    assert all("Fhirtest" not in m and "Thunderclap" not in m for m in where.values())
    with db.session() as s:
        assert set(s.scalars(select(OrderRow.accession))) == {"FHIR-ACC-1", "FHIR-ACC-5"}
        meta = s.scalar(select(InterfaceOrderRow).limit(1))
        assert meta.source == "fhir" and meta.message_type == "ServiceRequest"


def test_revoked_cancels_and_changed_content_amends(db, tmp_path):
    import_files(db, [_write(tmp_path, bundle(PATIENT, sr()), "a.json")])
    amended = import_files(db, [_write(tmp_path, bundle(PATIENT, sr(note=[{"text": "Allergic to iodine"}])), "b.json")])
    assert amended.imported == 1
    with db.session() as s:
        assert "Allergic to iodine" in s.scalar(select(OrderRow.clinical_notes))
    import_files(db, [_write(tmp_path, bundle(sr(status="revoked")), "c.json")])
    with db.session() as s:
        assert s.scalar(select(OrderRow.status)) == "cancelled"


def test_not_json_or_wrong_resource_is_reported(db, tmp_path):
    report = import_files(db, [_write(tmp_path, "{oops", "bad.json"),
                               _write(tmp_path, {"resourceType": "Observation"}, "obs.json"),
                               _write(tmp_path, "[" * 100_000, "deep.json")])
    assert len(report.problems) == 3 and report.imported == 0
    assert "invalid JSON" in str(report.problems[0]) and "ServiceRequest or Bundle" in str(report.problems[1])
