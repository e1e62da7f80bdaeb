"""Order import from JSONL, CSV, HL7 v2 (.hl7) and FHIR R4 (.json) files: bad lines are reported, good lines land, no duplicates.

Whatever is wrong with a line (invalid JSON or UTF-8, a lone surrogate, 100,000 nested brackets, an
oversized field, an unterminated CSV quote, a look-alike accession), it is reported as
``file:line`` naming the field, never its value, and the rest of the file and the later files
still land. Orders are stored through the interface feed's rules (``interop.feed.apply_order``):
new, duplicate, amended (suggestion dropped so it is recomputed, flags re-checked, difference
stored) or amended after decision (back to To do); ``INSERT ... ON CONFLICT`` in short
transactions of :data:`BATCH_SIZE` orders, so that any number of importers, listeners and the app
share one database.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import sqlite3
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from radassist.domain import PRIORITIES, SEXES, Order
from radassist.store.models import DecisionRow, OrderAmendmentRow, OrderRow, utcnow

MAX_NOTE_CHARS = 20_000
MAX_FIELD_CHARS = 200
MAX_ACCESSION_CHARS = 64
REQUIRED = ("accession", "ordered_exam")
OPTIONAL_TEXT = ("mrn", "patient_name", "ordering_provider")
BATCH_SIZE = 300                     # orders per transaction: other writers wait at most one batch
CSV_FIELD_LIMIT = 16 * 1024 * 1024   # csv's own limit (128 KB) would abort the file; longer fields
                                     # than the contract allows are reported per field instead
UTF8_BOM = b"\xef\xbb\xbf"


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
    imported: int = 0        # orders whose content landed: new, amended, cancelled
    duplicates: int = 0      # already present with the same content
    amended: int = 0         # of ``imported``: re-sent with different content
    amended_after_decision: int = 0  # of ``amended``: had been decided, back to To do
    problems: list[ImportProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        amended = ""
        if self.amended:
            amended = f" ({self.amended} amended"
            amended += f", {self.amended_after_decision} after decision)" if self.amended_after_decision else ")"
        return (f"{self.imported} imported{amended}, {self.duplicates} already present, "
                f"{len(self.problems)} rejected of {self.read} read")


def _check_encodable(key: str, value: str) -> None:
    """A JSON-escaped lone surrogate ("\\ud800") parses into a str that cannot be stored."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise OrderFormatError(f"{key} contains an invalid character (lone surrogate) at position "
                               f"{exc.start + 1}") from None


# Bidi embedding/override/isolate controls (all also category Cf, listed for the reader).
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def normalize_accession(value: str) -> str:
    """NFKC (full-width letters and digits become ASCII), then refuse what would make two orders
    look identical on screen: control (Cc, NUL included), format (Cf: zero-width space, BOM, bidi
    overrides), surrogate, private-use and unassigned characters, line and paragraph separators."""
    value = unicodedata.normalize("NFKC", value).strip()
    for position, ch in enumerate(value, start=1):
        category = unicodedata.category(ch)
        if ch in BIDI_CONTROLS or category in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            kind = {"Cc": "control", "Cf": "invisible format", "Cs": "surrogate", "Co": "private-use",
                    "Cn": "unassigned", "Zl": "line separator", "Zp": "paragraph separator"}[category]
            if ch in BIDI_CONTROLS:
                kind = "bidirectional control"
            raise OrderFormatError(f"accession contains a {kind} character (U+{ord(ch):04X}) at position "
                                   f"{position}")
    return value


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
    _check_encodable(key, value)
    value = normalize_accession(value) if key == "accession" else value.strip()
    if required and not value:
        raise OrderFormatError(f"missing {key}")
    if len(value) > limit:
        raise OrderFormatError(f"{key} too long ({len(value)} characters, limit {limit})")
    return value


def order_from_record(record: dict) -> Order:
    """Validate one record (a parsed JSON object or CSV row) against the order contract."""
    if not isinstance(record, dict):
        raise OrderFormatError(f"expected a JSON object, got {type(record).__name__}")
    accession = _text(record, "accession", True, MAX_ACCESSION_CHARS)
    exam = _text(record, "ordered_exam", True)
    if accession is None or exam is None:  # _text raises for a missing required field
        raise OrderFormatError("missing accession or ordered_exam")
    notes = record.get("clinical_notes") or ""
    if not isinstance(notes, str):
        raise OrderFormatError(f"clinical_notes must be a string, got {type(notes).__name__}")
    _check_encodable("clinical_notes", notes)
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
        if not isinstance(ordered_at, str) or len(ordered_at) > 64:
            raise OrderFormatError("ordered_at must be an ISO 8601 string")
        try:
            ordered_at = datetime.fromisoformat(ordered_at.strip().replace("Z", "+00:00"))
        except (ValueError, UnicodeError):
            raise OrderFormatError("ordered_at is not ISO 8601") from None
        if ordered_at.tzinfo is not None:
            ordered_at = ordered_at.astimezone(timezone.utc).replace(tzinfo=None)
    extra = {k: _text(record, k, False) for k in OPTIONAL_TEXT}
    return Order(accession=accession, ordered_exam=exam, clinical_notes=notes.strip(), age=age,
                 sex=sex.strip().upper(), priority=priority.strip().upper(), ordered_at=ordered_at, **extra)


def _surrogate_field(record) -> str | None:
    """The top-level field whose name or text holds a lone surrogate (None if none)."""
    if not isinstance(record, dict):
        return None
    for key, value in record.items():
        for text in (key, value) if isinstance(value, str) else (key,):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return key.encode("utf-8", "replace").decode("utf-8")[:40]
    return None


def iter_jsonl_records(data: bytes) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, record or None, error or None) for each non-blank line."""
    if data.startswith(UTF8_BOM):  # a BOM before the first order is not part of it
        data = data[len(UTF8_BOM):]
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, None, f"not valid UTF-8 (byte {exc.start})"
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, None, f"invalid JSON ({exc.msg} at column {exc.colno})"
            continue
        except RecursionError:
            yield number, None, "invalid JSON (nested too deeply)"
            continue
        bad = _surrogate_field(record)
        if bad is not None:
            yield number, None, f"{bad} contains an invalid character (lone surrogate)"
            continue
        yield number, record, None


def _looks_like_row(line: str, columns: int) -> bool:
    """A physical line that parses on its own into a full row (the header's number of fields)."""
    try:
        fields = next(csv.reader([line]))
    except (csv.Error, StopIteration):
        return False
    return len(fields) == columns and bool(fields[0].strip())


def iter_csv_records(data: bytes) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, record or None, error or None) per CSV row.

    A field over csv's limit is reported and skipped; an unterminated quote that would swallow the
    next rows into one field is detected (a quoted field running into a line that is a full row by
    itself, or a multi-line row with fewer fields than columns) and reported, and reading goes on
    at the swallowed row.
    """
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    text = data.decode("utf-8-sig", errors="surrogateescape")
    lines = io.StringIO(text, newline="").readlines()  # physical lines, endings kept (\n, \r\n, \r)
    try:
        header = next(csv.reader(lines[:1])) if lines else []
    except csv.Error:
        header = []
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        yield 1, None, f"missing column(s): {', '.join(missing)}"
        return
    start = 1  # index of the next physical line to read
    while start < len(lines):
        reader = csv.reader(itertools.islice(lines, start, None))
        restart = None
        while True:
            first = start + reader.line_num  # 0-based index of the record's first line
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                reason = ("a field is longer than the import limit" if "field larger" in str(exc)
                          else "not a valid CSV row")
                yield first + 1, None, reason
                continue
            end = start + reader.line_num  # index after the record's last line
            if not row or not any(v.strip() for v in row):
                continue
            if end - first > 1:  # a quoted field spans lines: a real multi-line note, or a missing quote
                column = next((header[i] if i < len(header) else f"field {i + 1}"
                               for i, v in enumerate(row) if "\n" in v or "\r" in v), "a field")
                swallowed = next((j for j in range(first + 1, end) if _looks_like_row(lines[j], len(header))),
                                 None)
                if swallowed is not None:
                    yield first + 1, None, (f"unterminated quote in {column}: it runs into line "
                                            f"{swallowed + 1}, which is read as a row of its own")
                    restart = swallowed
                    break
                if len(row) < len(header):
                    yield first + 1, None, f"unterminated quote in {column} (the row ends at line {end})"
                    continue
            line = first + 1
            values = dict(zip(header, row))
            if any(any("\udc80" <= ch <= "\udcff" for ch in v) for v in row):
                yield line, None, "not valid UTF-8"
                continue
            if len(row) > len(header):
                yield line, None, "more fields than columns"
                continue
            yield line, {k: v for k, v in values.items() if k}, None
        if restart is None:
            break
        start = restart


def read_orders(path: str | Path) -> tuple[list[tuple[int, Order]], list[ImportProblem]]:
    """Parse a JSONL or CSV file into (line, Order) pairs and problems; touches no database."""
    path = Path(path)
    data = path.read_bytes()
    records = iter_csv_records(data) if path.suffix.lower() == ".csv" else iter_jsonl_records(data)
    good: list[tuple[int, Order]] = []
    problems: list[ImportProblem] = []
    for line, record, error in records:
        if error is None and record is not None:
            try:
                good.append((line, order_from_record(record)))
                continue
            except OrderFormatError as exc:
                error = str(exc)
        problems.append(ImportProblem(path.name, line, error or "not a JSON object"))
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


def _content(order: Order) -> tuple:
    from radassist.interop.feed import CONTENT_FIELDS

    return tuple(getattr(order, f) or None for f in CONTENT_FIELDS)


def repeated_in_file(name: str, good: list[tuple[int, Order]]) -> tuple[list[tuple[int, Order]],
                                                                        list[ImportProblem]]:
    """An accession twice in one file: the first line is kept, the later one is reported with both
    line numbers (whether or not its content differs) and skipped: one file does not amend itself."""
    first: dict[str, tuple[int, Order]] = {}
    kept: list[tuple[int, Order]] = []
    problems: list[ImportProblem] = []
    for line, order in good:
        seen = first.get(order.accession)
        if seen is None:
            first[order.accession] = (line, order)
            kept.append((line, order))
            continue
        same = _content(seen[1]) == _content(order)
        problems.append(ImportProblem(name, line, f"accession already on line {seen[0]} of this file"
                                      f"{' (same order)' if same else ' with different content'}; "
                                      f"line {line} skipped"))
    return kept, problems


def _db_problem(exc: BaseException) -> str:
    """A database error in one line, without SQL or parameters."""
    orig = getattr(exc, "orig", None) or exc
    return f"{type(orig).__name__}: {str(orig).splitlines()[0][:120] if str(orig) else ''}".rstrip(": ")


def _unchanged(session: Session, orders: list[Order]) -> set[str]:
    """Accessions of ``orders`` already stored with the same content (and not cancelled), read in
    one query in the batch's write transaction; the others go through ``apply_order``."""
    from radassist.interop.feed import CONTENT_FIELDS

    if not orders:
        return set()
    columns = [getattr(OrderRow, f) for f in CONTENT_FIELDS]
    stored = {row[0]: row for row in session.execute(
        select(OrderRow.accession, OrderRow.status, *columns)
        .where(OrderRow.accession.in_([o.accession for o in orders])))}
    same = set()
    for order in orders:
        row = stored.get(order.accession)
        if row is not None and row[1] != "cancelled" and tuple(v or None for v in row[2:]) == _content(order):
            same.add(order.accession)
    return same


def store_orders(db, name: str, good: list[tuple[int, Order]], report: ImportReport, actor,
                 rejected: int, batch_size: int = BATCH_SIZE) -> None:
    """Apply orders with the interface feed's rules in transactions of ``batch_size``; the file's
    ``import`` event goes with the last batch. A batch the database refuses is reported by its
    line range and the next batch is still tried."""
    from radassist.audit import record_event
    from radassist.interop.feed import AMENDED, CANCELLED, DUPLICATE, FILE_SOURCE, NEW, REOPENED, FeedResult, \
        apply_order

    totals = FeedResult()
    failed = 0
    batches = [good[i:i + batch_size] for i in range(0, len(good), batch_size)] or [[]]
    for number, batch in enumerate(batches, start=1):
        result = FeedResult()
        try:
            with db.session(immediate=True) as session:
                unchanged = _unchanged(session, [order for _line, order in batch])
                for _line, order in batch:
                    if order.accession in unchanged:  # the common re-send: no ORM load per order
                        result.add(DUPLICATE)
                        continue
                    apply_order(session, order, "NW", {}, FILE_SOURCE, result, actor, audit_new=False)
                if number == len(batches):
                    counts = {k: totals.counts.get(k, 0) + result.counts.get(k, 0)
                              for k in (NEW, DUPLICATE, AMENDED, REOPENED)}
                    record_event(session, actor, "import", entity=f"file:{name}",
                                 outcome="success" if not (rejected or failed) else "partial",
                                 details={"imported": counts[NEW], "duplicates": counts[DUPLICATE],
                                          "amended": counts[AMENDED], "amended_after_decision": counts[REOPENED],
                                          "rejected": rejected + failed})
        except (SQLAlchemyError, sqlite3.Error) as exc:  # messages carry no parameters (hide_parameters)
            failed += len(batch)
            lines = f"lines {batch[0][0]}-{batch[-1][0]}" if batch else "the import event"
            report.problems.append(ImportProblem(name, batch[0][0] if batch else 0,
                                                 f"{lines} not stored ({_db_problem(exc)})"))
            continue
        for key, value in result.counts.items():
            totals.counts[key] = totals.counts.get(key, 0) + value
    report.imported += sum(totals.counts.get(k, 0) for k in (NEW, AMENDED, REOPENED, CANCELLED))
    report.amended += totals.counts.get(AMENDED, 0) + totals.counts.get(REOPENED, 0)
    report.amended_after_decision += totals.counts.get(REOPENED, 0)
    report.duplicates += totals.counts.get(DUPLICATE, 0)


def import_files(db, paths: Sequence[str | Path], actor=None) -> ImportReport:
    """Import order files into the database as ``actor`` (who must hold ``order.import``)."""
    from radassist.access import SYSTEM, PermissionDenied, require

    actor = actor or SYSTEM
    try:
        require(actor, "order.import")
    except PermissionDenied as exc:
        db.record_refusal(exc)
        raise
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
        name = Path(path).name
        report.read += len(good) + len(problems)
        good, repeated = repeated_in_file(name, good)
        problems = sorted(problems + repeated, key=lambda p: p.line)
        report.problems.extend(problems)
        store_orders(db, name, good, report, actor, rejected=len(problems))
    return report


# --- amendments, for the order view -------------------------------------------------------------


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: object
    after: object


@dataclass(frozen=True)
class Amendment:
    """An order re-sent with different content (file import or interface feed)."""

    order_id: int
    amended_at: datetime
    source: str
    username: str
    previous_status: str
    after_decision: bool          # it had been decided and went back to To do
    changes: tuple[FieldChange, ...]
    flags_before: tuple[str, ...]
    flags_after: tuple[str, ...]

    @property
    def changed_fields(self) -> list[str]:
        return [c.field for c in self.changes]

    @property
    def flags_added(self) -> tuple[str, ...]:
        return tuple(f for f in self.flags_after if f not in self.flags_before)

    @property
    def flags_removed(self) -> tuple[str, ...]:
        return tuple(f for f in self.flags_before if f not in self.flags_after)


def amendment_from_row(row: OrderAmendmentRow) -> Amendment:
    """Decode a stored amendment (the one decoder: the order view's queries use it too). A damaged row
    reads as an amendment with nothing listed rather than an error."""
    try:
        changes = json.loads(row.changes_json or "{}")
        flags_before = tuple(json.loads(row.flags_before_json or "[]"))
        flags_after = tuple(json.loads(row.flags_after_json or "[]"))
    except (TypeError, ValueError):
        changes, flags_before, flags_after = {}, (), ()
    return Amendment(order_id=row.order_id, amended_at=row.amended_at, source=row.source or "",
                     username=row.username, previous_status=row.previous_status,
                     after_decision=bool(row.after_decision),
                     changes=tuple(FieldChange(k, v[0], v[1]) for k, v in sorted(changes.items())
                                   if isinstance(v, (list, tuple)) and len(v) == 2),
                     flags_before=flags_before, flags_after=flags_after)


def pending_amendments(session: Session, order_ids: Sequence[int] | None = None, *,
                       after_decision_only: bool = False) -> dict[int, OrderAmendmentRow]:
    """Order id -> its latest amendment, for orders still to do and not decided since it arrived: the
    one query behind the worklist's marker, the order view's banner and ``radassist import``'s report.
    ``after_decision_only``: only amendments that brought a decided order back to To do."""
    query = (select(OrderAmendmentRow).join(OrderRow, OrderRow.id == OrderAmendmentRow.order_id)
             .where(OrderRow.status == "todo").order_by(OrderAmendmentRow.id))
    if order_ids is not None:
        query = query.where(OrderAmendmentRow.order_id.in_(list(order_ids)))
    latest: dict[int, OrderAmendmentRow] = {}
    for row in session.scalars(query):
        latest[row.order_id] = row  # ascending ids: the last one wins
    if after_decision_only:
        latest = {oid: row for oid, row in latest.items() if row.after_decision}
    if not latest:
        return {}
    last_decided = dict(session.execute(
        select(DecisionRow.order_id, func.max(DecisionRow.decided_at))
        .where(DecisionRow.order_id.in_(list(latest))).group_by(DecisionRow.order_id)).all())
    return {oid: row for oid, row in latest.items()
            if last_decided.get(oid) is None or row.amended_at >= last_decided[oid]}


def amendment_for(session: Session, order_id: int, *, pending_only: bool = True,
                  after_decision_only: bool = False) -> Amendment | None:
    """The order's latest amendment: which fields changed, before and after, and the safety-flag
    types before and after. ``pending_only``: only while the order is to do and has not been
    decided since; ``after_decision_only``: only one that brought a decided order back to To do
    (what the order view shows as "amended after decision")."""
    if pending_only:
        row = pending_amendments(session, [order_id], after_decision_only=after_decision_only).get(order_id)
    else:
        query = select(OrderAmendmentRow).where(OrderAmendmentRow.order_id == order_id)
        if after_decision_only:
            query = query.where(OrderAmendmentRow.after_decision.is_(True))
        row = session.scalar(query.order_by(OrderAmendmentRow.id.desc()).limit(1))
    return None if row is None else amendment_from_row(row)


def amended_order_ids(session: Session, *, after_decision_only: bool = True) -> set[int]:
    """Orders to do whose latest amendment is still pending (the worklist's "amended" marker)."""
    return set(pending_amendments(session, after_decision_only=after_decision_only))
