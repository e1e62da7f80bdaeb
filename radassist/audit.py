"""Tamper-evident audit trail: append-only rows, each hash-chained to the previous one."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy.orm import Session

from radassist.access import Actor, require
from radassist.store.models import AuditEventRow

GENESIS_HASH = "0" * 64


def event_hash(prev_hash: str, recorded_at: str, username: str, role: str, action: str, entity: str,
               outcome: str, details: str) -> str:
    payload = json.dumps(
        [prev_hash, recorded_at, username, role, action, entity, outcome, details],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_event(session: Session, actor: Actor, action: str, entity: str = "", outcome: str = "success",
                 details: dict | None = None) -> AuditEventRow:
    """Append one event in the caller's transaction (it commits with the change it describes).

    Returns a detached AuditEventRow holding the stored values (id included).

    ``details`` must never carry note text or other free-text PHI: codes, counts, ids only.
    """
    # Raw, parameterized SQL on the session's own connection and transaction: the ORM unit of
    # work costs more than the event itself (see bench/bench_audit.py).
    cur = session.connection().connection.driver_connection.cursor()
    try:
        # Take SQLite's write lock before reading the chain head, so that two processes never
        # chain two events to the same predecessor.
        cur.execute("UPDATE settings SET key = key WHERE 0")
        prev = cur.execute("SELECT hash, recorded_at FROM audit_events ORDER BY id DESC LIMIT 1").fetchone()
        prev_hash = prev[0] if prev else GENESIS_HASH
        recorded_at = _now_iso()
        if prev and recorded_at < prev[1]:
            # The wall clock went back (NTP): keep times monotonic, so that verify_chain can
            # treat a time going backwards as an out-of-order insert.
            recorded_at = prev[1]
        details_text = json.dumps(details or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = event_hash(prev_hash, recorded_at, actor.username, actor.role, action, entity, outcome,
                            details_text)
        values = (recorded_at, actor.username, actor.role, action, entity, outcome, details_text, prev_hash,
                  digest)
        cur.execute("INSERT INTO audit_events (recorded_at, username, role, action, entity, outcome, details, "
                    "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
        new_id = cur.lastrowid
    finally:
        cur.close()
    # A detached copy for the caller to read (the row itself is in the transaction already).
    return AuditEventRow(id=new_id, recorded_at=recorded_at, username=actor.username, role=actor.role,
                         action=action, entity=entity, outcome=outcome, details=details_text,
                         prev_hash=prev_hash, hash=digest)


# --- reading the trail ------------------------------------------------------------------------


COLUMNS = ("id", "recorded_at", "username", "role", "action", "entity", "outcome", "details",
           "prev_hash", "hash")
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM audit_events"
_BATCH = 5000


@dataclass(frozen=True)
class AuditEvent:
    """One audit event as read back (``details`` is the exact JSON text that was hashed)."""

    id: int
    recorded_at: str
    username: str
    role: str
    action: str
    entity: str
    outcome: str
    details: str
    prev_hash: str
    hash: str

    @property
    def details_dict(self) -> dict:
        try:
            return json.loads(self.details)
        except ValueError:
            return {}


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int                      # events checked (up to and including the first bad one)
    first_bad_id: int | None = None
    reason: str = ""
    head_hash: str = GENESIS_HASH   # hash of the last event: compare with an earlier export to
                                    # detect a truncated tail, which no chain alone can show


def _raw(session: Session):
    """The DB-API connection under the session's transaction (no ORM overhead for bulk reads)."""
    return session.connection().connection.driver_connection


def verify_chain(session: Session) -> VerifyResult:
    """Check every event: its hash, its link to the previous event, ids without gaps, times in order.

    Detects an edited row (hash mismatch), a deleted row (id gap / broken link) and a row inserted
    out of order (broken link or time going backwards).
    """
    cur = _raw(session).cursor()
    try:
        cur.execute(_SELECT + " ORDER BY id")
        prev_hash, prev_id, prev_time, count = GENESIS_HASH, 0, "", 0
        sha = hashlib.sha256
        dumps = json.dumps
        while True:
            rows = cur.fetchmany(_BATCH)
            if not rows:
                break
            for (id_, recorded_at, username, role, action, entity, outcome, details, p_hash, h) in rows:
                count += 1

                def bad(reason: str) -> VerifyResult:
                    return VerifyResult(False, count, id_, reason, prev_hash)

                if id_ != prev_id + 1:
                    if id_ > prev_id + 1:
                        missing = (f"event {prev_id + 1}" if id_ == prev_id + 2
                                   else f"events {prev_id + 1}-{id_ - 1}")
                        return bad(f"{missing} missing before event {id_} (deleted?)")
                    return bad(f"event id {id_} out of sequence after {prev_id}")
                payload = dumps([p_hash, recorded_at, username, role, action, entity, outcome, details],
                                separators=(",", ":"), ensure_ascii=False)
                if sha(payload.encode("utf-8")).hexdigest() != h:
                    return bad(f"event {id_} was altered (its hash does not match its content)")
                if p_hash != prev_hash:
                    what = "the start of the log" if prev_id == 0 else f"event {prev_id}"
                    return bad(f"event {id_} does not chain to {what} (deleted or inserted out of order)")
                if recorded_at < prev_time:
                    return bad(f"event {id_} is recorded before event {prev_id} (inserted out of order)")
                prev_hash, prev_id, prev_time = h, id_, recorded_at
        return VerifyResult(True, count, None, "", prev_hash)
    finally:
        cur.close()


def to_iso(value: datetime | date | str | None, *, end: bool = False) -> str | None:
    """A bound for ``recorded_at`` comparisons (UTC ISO text).

    A date (or "YYYY-MM-DD") as ``since`` means the start of that day; as ``until`` (end=True) it
    means the whole day is included. Naive datetimes are taken as UTC.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text_value = value.strip()
        try:
            value = date.fromisoformat(text_value) if len(text_value) == 10 else \
                datetime.fromisoformat(text_value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not a date or ISO 8601 time: {value!r}") from None
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day) + (timedelta(days=1) if end else timedelta())
    elif value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _where(since, until, username=None, action=None, outcome=None) -> tuple[str, list]:
    clauses, params = [], []
    lo, hi = to_iso(since), to_iso(until, end=True)
    if lo:
        clauses.append("recorded_at >= ?")
        params.append(lo)
    if hi:
        clauses.append("recorded_at < ?")
        params.append(hi)
    if username:
        clauses.append("username = ?")
        params.append(username)
    if action:
        if action.endswith("*"):
            clauses.append("action LIKE ? ESCAPE '\\'")
            params.append(action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        else:
            clauses.append("action = ?")
            params.append(action)
    if outcome:
        clauses.append("outcome = ?")
        params.append(outcome)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def iter_events(session: Session, since=None, until=None, username: str | None = None,
                action: str | None = None, outcome: str | None = None, limit: int | None = None,
                newest_first: bool = False) -> Iterator[AuditEvent]:
    """Stream events in id order (parameterized SQL, fetched in batches)."""
    where, params = _where(since, until, username, action, outcome)
    sql = _SELECT + where + (" ORDER BY id DESC" if newest_first else " ORDER BY id")
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    cur = _raw(session).cursor()
    try:
        cur.execute(sql, params)
        while True:
            rows = cur.fetchmany(_BATCH)
            if not rows:
                break
            for row in rows:
                yield AuditEvent(*row)
    finally:
        cur.close()


def query_events(session: Session, since=None, until=None, username: str | None = None,
                 action: str | None = None, limit: int | None = None, *, outcome: str | None = None,
                 newest_first: bool = False) -> list[AuditEvent]:
    """Events matching the filters. ``action`` is exact, or a prefix when it ends with "*"."""
    return list(iter_events(session, since, until, username, action, outcome, limit, newest_first))


def count_events(session: Session, since=None, until=None, username: str | None = None,
                 action: str | None = None, outcome: str | None = None) -> int:
    where, params = _where(since, until, username, action, outcome)
    cur = _raw(session).cursor()
    try:
        return cur.execute("SELECT COUNT(*) FROM audit_events" + where, params).fetchone()[0]
    finally:
        cur.close()


def distinct_values(session: Session, column: str) -> list[str]:
    """Distinct usernames or actions, for filter pick-lists."""
    if column not in ("username", "action", "role", "outcome"):
        raise ValueError(column)
    cur = _raw(session).cursor()
    try:
        return [r[0] for r in cur.execute(f"SELECT DISTINCT {column} FROM audit_events ORDER BY {column}")]
    finally:
        cur.close()


# --- FHIR R4 AuditEvent -----------------------------------------------------------------------

DCM = "http://dicom.nema.org/resources/ontology/DCM"
RADASSIST_ACTION_SYSTEM = "urn:radassist:audit-action"
RADASSIST_ROLE_SYSTEM = "urn:radassist:role"
_DCM_NAMES = {
    "110100": "Application Activity", "110101": "Audit Log Used", "110106": "Export",
    "110107": "Import", "110110": "Patient Record", "110114": "User Authentication",
    "110137": "User Security Attributes Changed", "110122": "Login", "110123": "Logout",
}


def _fhir_type(action: str) -> str:
    if action in ("signin", "signout", "session.lock", "session.unlock", "user.lockout"):
        return "110114"
    if action.startswith(("order.", "decision.")):
        return "110110"
    if action == "import" or action.startswith("import."):
        return "110107"
    if action == "audit.export" or action.endswith(".export") or action == "export":
        return "110106"
    if action.startswith("audit."):
        return "110101"
    if action.startswith("user."):
        return "110137"
    return "110100"


def _fhir_action(action: str) -> str:
    if action in ("order.open", "audit.export", "audit.view") or action.endswith((".view", ".export")):
        return "R"
    if action.startswith("decision.") or action in ("import", "user.add") or action.endswith((".add", ".create")):
        return "C"
    if action.startswith(("user.", "settings.", "catalog.", "model.")):
        return "U"
    if action.endswith((".delete", ".remove")):
        return "D"
    return "E"


_OUTCOMES = {"success": "0", "partial": "4", "failure": "4", "refused": "4", "error": "8"}


def fhir_audit_event(e: AuditEvent) -> dict:
    """One event as a FHIR R4 AuditEvent resource (plain dict, validated in the tests)."""
    type_code = _fhir_type(e.action)
    subtype = [{"system": RADASSIST_ACTION_SYSTEM, "code": e.action, "display": e.action}]
    if e.action in ("signin", "session.unlock"):
        subtype.insert(0, {"system": DCM, "code": "110122", "display": "Login"})
    elif e.action in ("signout", "session.lock"):
        subtype.insert(0, {"system": DCM, "code": "110123", "display": "Logout"})
    resource = {
        "resourceType": "AuditEvent",
        "id": f"radassist-{e.id}",
        "type": {"system": DCM, "code": type_code, "display": _DCM_NAMES[type_code]},
        "subtype": subtype,
        "action": _fhir_action(e.action),
        "recorded": e.recorded_at,
        "outcome": _OUTCOMES.get(e.outcome, "4"),
        "agent": [{
            "role": [{"coding": [{"system": RADASSIST_ROLE_SYSTEM, "code": e.role or "unknown",
                                  "display": e.role or "unknown"}]}],
            "who": {"display": e.username or "unknown"},
            "altId": e.username or "unknown",
            "requestor": True,
        }],
        "source": {
            "site": "RadAssist",
            "observer": {"display": "RadAssist"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                      "code": "4", "display": "Application Server"}],
        },
    }
    if e.outcome != "success":
        resource["outcomeDesc"] = e.outcome
    entity: dict = {
        "detail": [
            {"type": "details", "valueString": e.details},
            {"type": "prev_hash", "valueString": e.prev_hash},
            {"type": "hash", "valueString": e.hash},
        ],
    }
    if e.entity:
        entity["what"] = {"identifier": {"system": "urn:radassist:entity", "value": e.entity},
                          "display": e.entity}
        entity["type"] = {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                          "code": "1" if e.entity.startswith("user:") else "2",
                          "display": "Person" if e.entity.startswith("user:") else "System Object"}
    resource["entity"] = [entity]
    return resource


# --- export -----------------------------------------------------------------------------------

FORMATS = ("csv", "json", "fhir")


class ExportCancelled(Exception):
    pass


@dataclass(frozen=True)
class ExportResult:
    path: Path
    fmt: str
    count: int


ProgressFn = Callable[[int, int], "bool | None"]


def export_events(session: Session, actor: Actor, fmt: str, out_path: str | Path, since=None, until=None,
                  progress: ProgressFn | None = None) -> ExportResult:
    """Export the events recorded in [since, until] to CSV, JSON or a FHIR R4 Bundle.

    Auditors and admins only. The export is audited first, and that event is *committed* before
    any data is written (an export that is not in the log must never exist). The file is written
    to a temporary file beside ``out_path`` with 0600 permissions, then renamed into place.
    ``progress(done, total)`` is called every few thousand events; returning False cancels
    (ExportCancelled; nothing is left behind).
    """
    require(actor, "audit.export")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    out = Path(out_path).expanduser().resolve()
    if not out.parent.is_dir():
        raise FileNotFoundError(f"folder {out.parent} does not exist")
    lo, hi = to_iso(since), to_iso(until, end=True)
    record_event(session, actor, "audit.export", entity=f"file:{out.name}",
                 details={"format": fmt, "since": lo, "until": hi})
    session.commit()

    total = count_events(session, since, until)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            events = iter_events(session, since, until)
            count = _WRITERS[fmt](fh, _progress(events, total, progress), actor, lo, hi)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.chmod(out, 0o600)
    return ExportResult(out, fmt, count)


def _progress(events: Iterator[AuditEvent], total: int, progress: ProgressFn | None) -> Iterator[AuditEvent]:
    if progress is None:
        yield from events
        return
    if progress(0, total) is False:
        raise ExportCancelled("export cancelled")
    done = 0
    for e in events:
        yield e
        done += 1
        if done % 2000 == 0 and progress(done, total) is False:
            raise ExportCancelled("export cancelled")
    progress(done, total)


def _write_csv(fh, events, actor, lo, hi) -> int:
    writer = csv.writer(fh)
    writer.writerow(COLUMNS)
    n = 0
    for e in events:
        writer.writerow((e.id, e.recorded_at, e.username, e.role, e.action, e.entity, e.outcome, e.details,
                         e.prev_hash, e.hash))
        n += 1
    return n


def _write_json(fh, events, actor, lo, hi) -> int:
    header = {"format": "radassist-audit/1", "exported_at": _now_iso(), "exported_by": actor.username,
              "since": lo, "until": hi,
              "hash": "sha256 of JSON [prev_hash, recorded_at, username, role, action, entity, outcome, "
                      "details-as-text], compact separators"}
    head = json.dumps(header, ensure_ascii=False)
    fh.write(head[:-1] + ', "events": [')
    n = 0
    dumps = json.dumps
    for e in events:
        d = asdict(e)
        d["details"] = e.details_dict
        fh.write(("\n" if n == 0 else ",\n") + dumps(d, ensure_ascii=False))
        n += 1
    fh.write(f'\n], "count": {n}}}\n')
    return n


def _write_fhir(fh, events, actor, lo, hi) -> int:
    bundle_head = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "collection",
                   "timestamp": _now_iso(),
                   "meta": {"tag": [{"system": "urn:radassist:export", "code": "audit-export",
                                     "display": f"exported by {actor.username}"}]}}
    head = json.dumps(bundle_head, ensure_ascii=False)
    fh.write(head[:-1])
    n = 0
    dumps = json.dumps
    for e in events:
        entry = {"fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'radassist-audit:' + e.hash)}",
                 "resource": fhir_audit_event(e)}
        fh.write((', "entry": [\n' if n == 0 else ",\n") + dumps(entry, ensure_ascii=False))
        n += 1
    fh.write("\n]}\n" if n else "}\n")  # FHIR forbids an empty array: no entries, no "entry"
    return n


_WRITERS = {"csv": _write_csv, "json": _write_json, "fhir": _write_fhir}
