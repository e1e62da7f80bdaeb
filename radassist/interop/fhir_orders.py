"""FHIR R4 orders in: a ServiceRequest, or a Bundle of them (with Patient resources), as JSON.

Resources are checked with ``fhir.resources.R4B`` (the top-level package is R5 and rejects R4
JSON), then mapped to the order contract like HL7 v2: accession = the identifier typed ACSN, else
the first identifier, else the resource id; exam = code text / coding display / code (LOINC,
SNOMED CT or text); notes = reasonCode (text or codings' display), reasonReference display, note;
age and sex from the subject Patient when the bundle (or ``contained``) has it, else unknown.
Problems name the entry index and the field path, never a value.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

PRIORITIES = {"stat": "STAT", "asap": "URGENT", "urgent": "URGENT", "routine": "ROUTINE"}
GENDERS = {"female": "F", "male": "M", "other": "O", "unknown": "U"}
UPSERT_STATUSES = {"active", "draft", "on-hold", "completed", "unknown"}
CANCEL_STATUSES = {"revoked", "entered-in-error"}


class FHIRFormatError(ValueError):
    pass


@dataclass
class FHIROrder:
    index: int            # entry index in the bundle (0 for a lone resource)
    record: dict
    meta: dict
    cancel: bool


@dataclass
class FHIRProblem:
    index: int
    message: str


def _validate(resource: dict) -> None:
    import pydantic

    from fhir.resources.R4B.patient import Patient
    from fhir.resources.R4B.servicerequest import ServiceRequest

    kind = resource.get("resourceType")
    models: dict[str, type[Patient] | type[ServiceRequest]] = {"ServiceRequest": ServiceRequest, "Patient": Patient}
    model = models.get(kind or "")
    if model is None:
        return
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if not str(p).startswith("function"))
        raise FHIRFormatError(f"{kind} is not valid R4 ({where or 'structure'}: {first.get('type', 'invalid')})") \
            from None


def _concept_text(concept: dict | None) -> str:
    if not isinstance(concept, dict):
        return ""
    if (concept.get("text") or "").strip():
        return concept["text"].strip()
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and (coding.get("display") or "").strip():
            return coding["display"].strip()
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and (coding.get("code") or "").strip():
            return coding["code"].strip()
    return ""


def _human_name(names) -> str:
    for name in names or []:
        if not isinstance(name, dict):
            continue
        if name.get("text"):
            return name["text"].strip()
        family = (name.get("family") or "").strip()
        given = " ".join(g for g in name.get("given") or [] if isinstance(g, str)).strip()
        text = ", ".join(p for p in (family, given) if p)
        if text:
            return text
    return ""


def _accession(resource: dict) -> str:
    identifiers = [i for i in resource.get("identifier") or [] if isinstance(i, dict) and i.get("value")]
    for ident in identifiers:
        codes = {c.get("code") for c in (ident.get("type") or {}).get("coding") or [] if isinstance(c, dict)}
        if "ACSN" in codes:
            return str(ident["value"]).strip()
    if identifiers:
        return str(identifiers[0]["value"]).strip()
    return str(resource.get("id") or "").strip()


def _mrn(patient: dict) -> str | None:
    identifiers = [i for i in patient.get("identifier") or [] if isinstance(i, dict) and i.get("value")]
    for ident in identifiers:
        codes = {c.get("code") for c in (ident.get("type") or {}).get("coding") or [] if isinstance(c, dict)}
        if "MR" in codes:
            return str(ident["value"])
    return str(identifiers[0]["value"]) if identifiers else None


def _parse_when(text: str | None) -> datetime | None:
    if not text or not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _age(birth: str | None, at: datetime) -> int | None:
    if not birth or not isinstance(birth, str):
        return None
    parts = birth[:10].split("-")
    try:
        born = date(int(parts[0]), int(parts[1]) if len(parts) > 1 else 1, int(parts[2]) if len(parts) > 2 else 1)
    except (ValueError, IndexError):
        raise FHIRFormatError("Patient.birthDate is not a date") from None
    age = at.year - born.year - ((at.month, at.day) < (born.month, born.day))
    if not 0 <= age <= 130:
        raise FHIRFormatError("Patient.birthDate gives an age out of range")
    return age


def _resolve(reference: dict | None, index: dict[str, dict], container: dict) -> dict | None:
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference") or ""
    if ref.startswith("#"):
        return next((c for c in container.get("contained") or [] if isinstance(c, dict)
                     and c.get("id") == ref[1:]), None)
    if ref in index:
        return index[ref]
    tail = "/".join(ref.rstrip("/").split("/")[-2:])  # absolute URL -> ResourceType/id
    return index.get(tail)


def map_service_request(resource: dict, index: dict[str, dict], position: int,
                        now: datetime | None = None) -> FHIROrder:
    _validate(resource)
    status = (resource.get("status") or "").strip()
    if status not in UPSERT_STATUSES | CANCEL_STATUSES:
        raise FHIRFormatError("ServiceRequest.status is not an R4 request status")
    accession = _accession(resource)
    if not accession:
        raise FHIRFormatError("ServiceRequest has no identifier and no id (accession)")
    authored = _parse_when(resource.get("authoredOn"))
    if resource.get("authoredOn") not in (None, "") and authored is None:
        raise FHIRFormatError("ServiceRequest.authoredOn is not an R4 dateTime")
    at = authored or now or datetime.now(timezone.utc).replace(tzinfo=None)
    exam = _concept_text(resource.get("code"))
    if not exam:
        exam = "; ".join(t for t in (_concept_text(c) for c in resource.get("orderDetail") or []) if t)
    cancel = status in CANCEL_STATUSES
    if not exam and not cancel:
        raise FHIRFormatError("ServiceRequest.code has no text, display or code (ordered exam)")
    notes = [_concept_text(c) for c in resource.get("reasonCode") or []]
    notes += [(r.get("display") or "").strip() for r in resource.get("reasonReference") or [] if isinstance(r, dict)]
    notes += [(n.get("text") or "").strip() for n in resource.get("note") or [] if isinstance(n, dict)]
    notes += [(r.get("display") or "").strip() for r in resource.get("supportingInfo") or [] if isinstance(r, dict)]
    patient = _resolve(resource.get("subject"), index, resource)
    record: dict[str, Any] = {"accession": accession, "ordered_exam": exam or "(cancelled)",
              "clinical_notes": "\n".join(n for n in notes if n),
              "priority": PRIORITIES.get((resource.get("priority") or "routine").lower(), "ROUTINE"),
              "ordered_at": at.isoformat(), "sex": "U", "age": None}
    if patient is not None and patient.get("resourceType") == "Patient":
        _validate(patient)
        record["sex"] = GENDERS.get(patient.get("gender") or "unknown", "U")
        record["age"] = _age(patient.get("birthDate"), at)
        record["mrn"] = _mrn(patient)
        record["patient_name"] = _human_name(patient.get("name")) or None
    requester = resource.get("requester")
    if isinstance(requester, dict):
        practitioner = _resolve(requester, index, resource)
        name = _human_name(practitioner.get("name")) if practitioner else ""
        record["ordering_provider"] = name or (requester.get("display") or "").strip() or None
    subject = resource.get("subject")
    subject_ref = subject.get("reference", "") if isinstance(subject, dict) else ""
    meta = {"message_type": "ServiceRequest", "version": "R4", "resource_id": str(resource.get("id") or ""),
            "placer_number": accession, "service_code": json.dumps(resource.get("code") or {})[:400],
            "patient": {"reference": subject_ref}}
    return FHIROrder(position, record, meta, cancel)


def read_fhir(data: bytes, now: datetime | None = None) -> tuple[list[FHIROrder], list[FHIRProblem]]:
    """Orders and problems from a ServiceRequest or Bundle JSON document."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return [], [FHIRProblem(0, f"not valid UTF-8 (byte {exc.start})")]
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        return [], [FHIRProblem(0, f"invalid JSON{where}")]
    if not isinstance(doc, dict):
        return [], [FHIRProblem(0, "expected a FHIR resource (JSON object)")]
    kind = doc.get("resourceType")
    entries: list[tuple[int, dict | None]]
    index: dict[str, dict]
    if kind == "ServiceRequest":
        entries = [(0, doc)]
        index = {}
    elif kind == "Bundle":
        raw = doc.get("entry") or []
        if not isinstance(raw, list):
            return [], [FHIRProblem(0, "Bundle.entry must be a list")]
        entries, index = [], {}
        for i, entry in enumerate(raw):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                entries.append((i, None))
                continue
            entries.append((i, resource))
            if resource.get("id"):
                index[f"{resource.get('resourceType')}/{resource['id']}"] = resource
            if isinstance(entry.get("fullUrl"), str):
                index[entry["fullUrl"]] = resource
    else:
        return [], [FHIRProblem(0, f"resourceType must be ServiceRequest or Bundle, got {str(kind)[:40]!r}")]
    orders, problems = [], []
    for i, resource in entries:
        if resource is None:
            problems.append(FHIRProblem(i, "entry has no resource"))
            continue
        if resource.get("resourceType") != "ServiceRequest":
            continue
        try:
            orders.append(map_service_request(resource, index, i, now))
        except FHIRFormatError as exc:
            problems.append(FHIRProblem(i, str(exc)))
    if not orders and not problems:
        problems.append(FHIRProblem(0, "no ServiceRequest in the document"))
    return orders, problems
