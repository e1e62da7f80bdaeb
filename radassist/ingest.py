"""Order import from JSONL, CSV, HL7 v2 (.hl7) and FHIR R4 (.json) files: bad lines are reported, good lines land, no duplicates."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from radassist.domain import PRIORITIES, SEXES, Order
from radassist.store.models import OrderRow, utcnow

MAX_NOTE_CHARS = 20_000
MAX_FIELD_CHARS = 200
REQUIRED = ("accession", "ordered_exam")
OPTIONAL_TEXT = ("mrn", "patient_name", "ordering_provider")


class OrderFormatError(ValueError):
    """A record does not follow the order contract. Messages name fields, never their PHI content."""


@dataclass(frozen=True)
class ImportProblem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class ImportReport:
    read: int = 0
    imported: int = 0
    duplicates: int = 0
    problems: list[ImportProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (f"{self.imported} imported, {self.duplicates} already present, "
                f"{len(self.problems)} rejected of {self.read} read")


def _text(record: dict, key: str, required: bool, limit: int = MAX_FIELD_CHARS) -> str | None:
    value = record.get(key)
    if value is None or value == "":
        if required:
            raise OrderFormatError(f"missing {key}")
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key in ("accession", "mrn"):
        value = str(value)
    if not isinstance(value, str):
        raise OrderFormatError(f"{key} must be a string, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise OrderFormatError(f"missing {key}")
    if len(value) > limit:
        raise OrderFormatError(f"{key} too long ({len(value)} characters, limit {limit})")
    return value


def order_from_record(record: dict) -> Order:
    """Validate one record (a parsed JSON object or CSV row) against the order contract."""
    if not isinstance(record, dict):
        raise OrderFormatError(f"expected a JSON object, got {type(record).__name__}")
    accession = _text(record, "accession", True, 64)
    exam = _text(record, "ordered_exam", True)
    notes = record.get("clinical_notes") or ""
    if not isinstance(notes, str):
        raise OrderFormatError(f"clinical_notes must be a string, got {type(notes).__name__}")
    if len(notes) > MAX_NOTE_CHARS:
        raise OrderFormatError(f"clinical_notes too long ({len(notes)} characters, limit {MAX_NOTE_CHARS})")
    age = record.get("age")
    if age in (None, ""):
        age = None
    else:
        if isinstance(age, str) and age.strip().isdigit():
            age = int(age.strip())
        if isinstance(age, bool) or not isinstance(age, int):
            raise OrderFormatError(f"age must be an integer, got {type(age).__name__}")
        if not 0 <= age <= 130:
            raise OrderFormatError("age out of range 0-130")
    sex = (record.get("sex") or "U")
    if not isinstance(sex, str) or sex.strip().upper() not in SEXES:
        raise OrderFormatError(f"sex must be one of {'/'.join(SEXES)}")
    priority = record.get("priority") or "ROUTINE"
    if not isinstance(priority, str) or priority.strip().upper() not in PRIORITIES:
        raise OrderFormatError(f"priority must be one of {'/'.join(PRIORITIES)}")
    ordered_at = record.get("ordered_at")
    if ordered_at in (None, ""):
        ordered_at = None
    else:
        if not isinstance(ordered_at, str):
            raise OrderFormatError("ordered_at must be an ISO 8601 string")
        try:
            ordered_at = datetime.fromisoformat(ordered_at.strip().replace("Z", "+00:00"))
        except ValueError:
            raise OrderFormatError("ordered_at is not ISO 8601") from None
        if ordered_at.tzinfo is not None:
            ordered_at = ordered_at.astimezone(timezone.utc).replace(tzinfo=None)
    extra = {k: _text(record, k, False) for k in OPTIONAL_TEXT}
    return Order(accession=accession, ordered_exam=exam, clinical_notes=notes.strip(), age=age,
                 sex=sex.strip().upper(), priority=priority.strip().upper(), ordered_at=ordered_at, **extra)


def iter_jsonl_records(data: bytes) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, record or None, error or None) for each non-blank line."""
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, None, f"not valid UTF-8 (byte {exc.start})"
            continue
        try:
            yield number, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield number, None, f"invalid JSON ({exc.msg} at column {exc.colno})"


def iter_csv_records(data: bytes) -> Iterator[tuple[int, dict | None, str | None]]:
    text = data.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        yield 1, None, f"missing column(s): {', '.join(missing)}"
        return
    for row in reader:
        line = reader.line_num
        if any(isinstance(v, str) and any("\udc80" <= ch <= "\udcff" for ch in v) for v in row.values()):
            yield line, None, "not valid UTF-8"
            continue
        if None in row:
            yield line, None, "more fields than columns"
            continue
        yield line, {k: v for k, v in row.items() if k}, None


def read_orders(path: str | Path) -> tuple[list[tuple[int, Order]], list[ImportProblem]]:
    """Parse a JSONL or CSV file into (line, Order) pairs and problems; touches no database."""
    path = Path(path)
    data = path.read_bytes()
    records = iter_csv_records(data) if path.suffix.lower() == ".csv" else iter_jsonl_records(data)
    good: list[tuple[int, Order]] = []
    problems: list[ImportProblem] = []
    for line, record, error in records:
        if error is None:
            try:
                good.append((line, order_from_record(record)))
                continue
            except OrderFormatError as exc:
                error = str(exc)
        problems.append(ImportProblem(path.name, line, error))
    return good, problems


def order_row(order: Order) -> OrderRow:
    now = utcnow()
    return OrderRow(
        accession=order.accession, ordered_exam=order.ordered_exam, clinical_notes=order.clinical_notes,
        age=order.age, sex=order.sex, priority=order.priority, mrn=order.mrn, patient_name=order.patient_name,
        ordering_provider=order.ordering_provider, ordered_at=order.ordered_at or now, received_at=now,
        status="todo",
    )


def order_from_row(row: OrderRow) -> Order:
    return Order(accession=row.accession, ordered_exam=row.ordered_exam, clinical_notes=row.clinical_notes,
                 age=row.age, sex=row.sex, priority=row.priority, mrn=row.mrn, patient_name=row.patient_name,
                 ordering_provider=row.ordering_provider, ordered_at=row.ordered_at)


def store_orders(session: Session, orders: Iterable[Order], report: ImportReport) -> None:
    """Insert orders whose accession is new; count the others as duplicates."""
    orders = list(orders)
    known = set()
    accessions = [o.accession for o in orders]
    for start in range(0, len(accessions), 500):
        chunk = accessions[start:start + 500]
        known.update(session.scalars(select(OrderRow.accession).where(OrderRow.accession.in_(chunk))))
    for order in orders:
        if order.accession in known:
            report.duplicates += 1
            continue
        known.add(order.accession)
        session.add(order_row(order))
        report.imported += 1
    session.flush()


def import_files(db, paths: Sequence[str | Path], actor=None) -> ImportReport:
    """Import order files into the database; one transaction per file."""
    from radassist.access import SYSTEM, require
    from radassist.audit import record_event

    actor = actor or SYSTEM
    require(actor, "order.import")
    report = ImportReport()
    for path in paths:
        if Path(path).suffix.lower() in (".hl7", ".json"):  # HL7 v2 and FHIR R4 (radassist.interop)
            from radassist.interop.file_import import import_interface_file

            import_interface_file(db, path, report, actor)
            continue
        try:
            good, problems = read_orders(path)
        except OSError as exc:
            report.problems.append(ImportProblem(str(path), 0, f"cannot read file ({exc.strerror})"))
            continue
        report.read += len(good) + len(problems)
        report.problems.extend(problems)
        with db.session() as session:
            before = report.imported
            dup_before = report.duplicates
            store_orders(session, (o for _, o in good), report)
            record_event(session, actor, "import", entity=f"file:{Path(path).name}",
                         outcome="success" if not problems else "partial",
                         details={"imported": report.imported - before,
                                  "duplicates": report.duplicates - dup_before, "rejected": len(problems)})
    return report
