"""Tamper-evident audit trail: append-only rows, each hash-chained to the previous one.

Anchoring: every event also carries ``hmac`` = HMAC-SHA256(site key, "<id>|<hash>"). The site key
lives outside the database (:func:`radassist.paths.audit_key_path`: ``RADASSIST_AUDIT_KEY_FILE``
or ``<database>.audit-key``, mode 0600, created on first use), so someone who can edit the
database can neither re-hash a rewritten chain nor append or insert a well-formed event. A
checkpoint (:func:`write_checkpoint`, ``radassist audit checkpoint``) records the head (id, hash,
HMAC) in a file kept elsewhere; :func:`verify_against` then also detects a truncated tail.
Events recorded before anchoring existed (NULL ``hmac``) keep verifying by their hash chain and
are reported as unanchored; once one event is anchored, every later one must be.
"""
from __future__ import annotations

import csv
import hashlib
import hmac as _hmac
import json
import logging
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy.orm import Session

from radassist.access import Actor, PermissionDenied, require
from radassist.paths import audit_key_path
from radassist.store.models import AuditEventRow

GENESIS_HASH = "0" * 64
KEY_FORMAT = "radassist-audit-key/1"
CHECKPOINT_FORMAT = "radassist-audit-checkpoint/1"
log = logging.getLogger(__name__)


class AuditKeyError(RuntimeError):
    """The site key is missing or unreadable while the log already holds anchored events."""


@dataclass(frozen=True)
class SiteKey:
    path: Path
    key: bytes
    database: str = ""           # the database the key was created for
    anchored_from: int = 0       # first event id anchored in that database (0: unknown)

    def mac(self, event_id: int, event_hash_hex: str) -> str:
        return _hmac.new(self.key, f"{event_id}|{event_hash_hex}".encode("ascii"), hashlib.sha256).hexdigest()


_KEYS: dict[str, SiteKey] = {}


def _db_file(session: Session) -> Path | None:
    database = session.get_bind().engine.url.database
    return Path(database) if database and database != ":memory:" else None


def _read_key(path: Path) -> SiteKey:
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, 0o600)  # a loosened key file is tightened again
        data = json.loads(path.read_text(encoding="utf-8"))
        key = bytes.fromhex(data["key"])
        if len(key) < 32:
            raise ValueError("key too short")
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuditKeyError(f"audit key file {path} is unreadable ({type(exc).__name__})") from None
    return SiteKey(path, key, str(data.get("database") or ""), int(data.get("anchored_from") or 0))


def _create_key(path: Path, database: Path | None, anchored_from: int) -> SiteKey:
    """Create the key file atomically (0600); if another process won the race, use its key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": KEY_FORMAT, "key": secrets.token_hex(32), "created_at": _now_iso(),
            "database": str(database or ""), "anchored_from": anchored_from,
            "note": "RadAssist audit anchor. Keep it secret and back it up apart from the database."}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if the key exists: never overwrite a key
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return _read_key(path)


def site_key(session: Session, *, create: bool = False) -> SiteKey | None:
    """The site key for this session's database (cached per process); None if absent."""
    db_file = _db_file(session)
    path = audit_key_path(db_file)
    cache_key = str(path)
    cached = _KEYS.get(cache_key)
    if cached is not None:
        if path.exists():
            return cached
        del _KEYS[cache_key]
    try:
        key = _read_key(path)
    except FileNotFoundError:
        if not create:
            return None
        cur = _raw(session).cursor()
        try:
            anchored = cur.execute("SELECT 1 FROM audit_events WHERE hmac IS NOT NULL LIMIT 1").fetchone()
            last = cur.execute("SELECT COALESCE(MAX(id), 0) FROM audit_events").fetchone()[0]
        finally:
            cur.close()
        if anchored:
            raise AuditKeyError(
                f"audit key file {path} is missing but the audit log holds anchored events: restore the "
                "key from its backup (or set RADASSIST_AUDIT_KEY_FILE); no event is recorded without it"
            ) from None
        key = _create_key(path, db_file, last + 1)
        log.info("created the audit key %s", path)
    _KEYS[cache_key] = key
    return key


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
    driver = session.connection().connection.driver_connection
    assert driver is not None  # a live DBAPI connection inside the session's transaction
    cur = driver.cursor()
    try:
        # Take SQLite's write lock before reading the chain head, so that two processes never
        # chain two events to the same predecessor.
        cur.execute("UPDATE settings SET key = key WHERE 0")
        prev = cur.execute("SELECT hash, recorded_at, id FROM audit_events ORDER BY id DESC LIMIT 1").fetchone()
        prev_hash = prev[0] if prev else GENESIS_HASH
        recorded_at = _now_iso()
        if prev and recorded_at < prev[1]:
            # The wall clock went back (NTP): keep times monotonic, so that verify_chain can
            # treat a time going backwards as an out-of-order insert.
            recorded_at = prev[1]
        details_text = json.dumps(details or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = event_hash(prev_hash, recorded_at, actor.username, actor.role, action, entity, outcome,
                            details_text)
        key = site_key(session, create=True)
        assert key is not None  # create=True makes one
        # The id is chosen here, under the write lock, so that the HMAC can bind it.
        new_id = (prev[2] if prev else 0) + 1
        mac = key.mac(new_id, digest)
        values = (new_id, recorded_at, actor.username, actor.role, action, entity, outcome, details_text,
                  prev_hash, digest, mac)
        cur.execute("INSERT INTO audit_events (id, recorded_at, username, role, action, entity, outcome, "
                    "details, prev_hash, hash, hmac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
    finally:
        cur.close()
    # A detached copy for the caller to read (the row itself is in the transaction already).
    return AuditEventRow(id=new_id, recorded_at=recorded_at, username=actor.username, role=actor.role,
                         action=action, entity=entity, outcome=outcome, details=details_text,
                         prev_hash=prev_hash, hash=digest)


def record_refusal(session: Session, exc: PermissionDenied, details: dict | None = None) -> AuditEventRow:
    """Audit a refused action ("access.refused", outcome "refused"); marks ``exc`` as audited.

    Call it in a short transaction of its own: the refused caller's transaction usually rolls
    back (:meth:`radassist.store.database.Database.session` does this by itself).
    """
    row = record_event(session, exc.actor, "access.refused", entity=f"permission:{exc.permission}",
                       outcome="refused", details={"permission": exc.permission, **(details or {})})
    exc.audited = True
    return row


# --- reading the trail ------------------------------------------------------------------------


COLUMNS = ("id", "recorded_at", "username", "role", "action", "entity", "outcome", "details",
           "prev_hash", "hash", "hmac")
_SELECT = ("SELECT id, recorded_at, username, role, action, entity, outcome, details, prev_hash, hash, "
           "COALESCE(hmac, '') FROM audit_events")
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
    hmac: str = ""                  # "" for an event recorded before anchoring

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
    anchored: int = 0               # events whose HMAC was checked against the site key
    unanchored: tuple[int, int] | None = None  # ids of the events recorded before anchoring
    head_id: int = 0
    key_path: str = field(default="", compare=False)

    @property
    def note(self) -> str:
        """What an "ok" result does not prove (said next to it by the CLI and the GUI)."""
        if self.unanchored is None:
            return ""
        first, last = self.unanchored
        ids = f"event {first}" if first == last else f"events {first}-{last}"
        return (f"{ids} predate anchoring: checked by the hash chain only (keep a checkpoint to protect "
                "them)")


def _raw(session: Session):
    """The DB-API connection under the session's transaction (no ORM overhead for bulk reads)."""
    return session.connection().connection.driver_connection


def verify_chain(session: Session, *, key: SiteKey | None | bool = True) -> VerifyResult:
    """Check every event: its hash, its link to the previous event, ids without gaps, times in order,
    and its HMAC with the site key.

    Detects an edited row (hash mismatch), a deleted row (id gap / broken link), a row inserted
    out of order (broken link or time going backwards), and, thanks to the key, a consistent
    rewrite of the chain or a forged append/insert (HMAC missing or wrong). A truncated tail
    needs a checkpoint: see :func:`verify_against`. ``key``: True finds the site key, None checks
    without one (anchored events then fail: they cannot be checked).
    """
    if key is True:
        key = site_key(session)
    key_path = str(key.path if key else audit_key_path(_db_file(session)))
    db_file = _db_file(session)
    # Events from this id on must be anchored (the key file says when anchoring began here).
    must_anchor_from = (key.anchored_from if key and key.anchored_from and db_file
                        and key.database == str(db_file) else 0)
    cur = _raw(session).cursor()
    try:
        cur.execute(_SELECT + " ORDER BY id")
        prev_hash, prev_id, prev_time, count = GENESIS_HASH, 0, "", 0
        anchored, unanchored_last = 0, 0
        sha = hashlib.sha256
        dumps = json.dumps
        hnew, digest_eq = _hmac.new, _hmac.compare_digest
        secret = key.key if key else b""
        while True:
            rows = cur.fetchmany(_BATCH)
            if not rows:
                break
            for (id_, recorded_at, username, role, action, entity, outcome, details, p_hash, h, mac) in rows:
                count += 1

                def bad(reason: str) -> VerifyResult:
                    return VerifyResult(False, count, id_, reason, prev_hash, anchored,
                                        (1, unanchored_last) if unanchored_last else None, prev_id, key_path)

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
                if mac:
                    if not key:
                        return bad(f"event {id_} is anchored but the audit key {key_path} is missing: "
                                   "restore it to verify the log")
                    expected = hnew(secret, f"{id_}|{h}".encode("ascii"), sha).hexdigest()
                    if not digest_eq(expected, mac):
                        return bad(f"event {id_} is not signed with the site key (forged, or the chain was "
                                   "rewritten)")
                    anchored += 1
                elif anchored or (must_anchor_from and id_ >= must_anchor_from):
                    return bad(f"event {id_} has no HMAC although anchoring was in force (forged append or "
                               "insert, or a rewritten chain)")
                else:
                    unanchored_last = id_
                prev_hash, prev_id, prev_time = h, id_, recorded_at
        return VerifyResult(True, count, None, "", prev_hash, anchored,
                            (1, unanchored_last) if unanchored_last else None, prev_id, key_path)
    finally:
        cur.close()


# --- checkpoints: the head of the log, kept outside the database -----------------------------


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or was altered."""


def _checkpoint_mac(key: SiteKey, data: dict) -> str:
    body = json.dumps({k: v for k, v in data.items() if k != "mac"}, sort_keys=True, separators=(",", ":"))
    return _hmac.new(key.key, body.encode("utf-8"), hashlib.sha256).hexdigest()


def write_checkpoint(session: Session, out_path: str | Path) -> dict:
    """Verify the log and write its head to ``out_path`` (JSON, 0600, written atomically).

    Keep the file away from the database (another machine, write-once media): a later
    :func:`verify_against` detects deleted last events and any rewrite of the events it covers.
    Raises CheckpointError (and writes nothing) when the log does not verify.
    """
    result = verify_chain(session)
    if not result.ok:
        raise CheckpointError(f"the audit log is broken at event {result.first_bad_id} ({result.reason}): "
                              "no checkpoint written")
    key = site_key(session)
    data = {"format": CHECKPOINT_FORMAT, "created_at": _now_iso(), "database": str(_db_file(session) or ""),
            "count": result.count, "head_id": result.head_id, "head_hash": result.head_hash,
            "head_hmac": "", "anchored": result.anchored}
    if result.head_id:
        cur = _raw(session).cursor()
        try:
            data["head_hmac"] = cur.execute("SELECT COALESCE(hmac, '') FROM audit_events WHERE id = ?",
                                            (result.head_id,)).fetchone()[0]
        finally:
            cur.close()
    if key:
        data["mac"] = _checkpoint_mac(key, data)
    out = Path(out_path).expanduser().resolve()
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder: give a file name for the checkpoint")
    _write_atomically(out, json.dumps(data, indent=1) + "\n")
    return data


def _write_atomically(out: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    os.chmod(out, 0o600)


def _unlink_quietly(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def read_checkpoint(path: str | Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the checkpoint {path}: {type(exc).__name__}") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a RadAssist audit checkpoint")
    for name, kind in (("count", int), ("head_id", int), ("head_hash", str), ("head_hmac", str)):
        if not isinstance(data.get(name), kind):
            raise CheckpointError(f"{path}: field {name!r} missing or of the wrong type")
    return data


def verify_against(session: Session, checkpoint_path: str | Path) -> VerifyResult:
    """:func:`verify_chain`, and the log must still hold the checkpoint's head unchanged.

    Detects truncation (the head event or later ones deleted) and a rewrite of the covered
    events, even of a log recorded before anchoring. A checkpoint signed with the site key is
    checked too, so that the file itself cannot be forged.
    """
    cp = read_checkpoint(checkpoint_path)
    key = site_key(session)
    result = verify_chain(session, key=key)

    def bad(first_bad: int | None, reason: str) -> VerifyResult:
        return VerifyResult(False, result.count, first_bad, reason, result.head_hash, result.anchored,
                            result.unanchored, result.head_id, result.key_path)

    if cp.get("mac"):
        if key is None:
            return bad(None, f"the checkpoint is signed but the audit key {result.key_path} is missing")
        if not _hmac.compare_digest(_checkpoint_mac(key, cp), str(cp["mac"])):
            return bad(None, f"the checkpoint {checkpoint_path} was altered or made with another key")
    if not result.ok:
        return result
    head_id = cp["head_id"]
    if head_id == 0:
        return result
    if result.head_id < head_id:
        missing = (f"event {head_id}" if result.head_id + 1 == head_id
                   else f"events {result.head_id + 1}-{head_id}")
        return bad(result.head_id + 1, f"the log was truncated: {missing} (in the checkpoint of "
                                       f"{cp.get('created_at', '?')}) missing; the log ends at event "
                                       f"{result.head_id}")
    cur = _raw(session).cursor()
    try:
        row = cur.execute("SELECT hash, COALESCE(hmac, '') FROM audit_events WHERE id = ?", (head_id,)).fetchone()
    finally:
        cur.close()
    if row is None or row[0] != cp["head_hash"] or row[1] != cp["head_hmac"]:
        return bad(head_id, f"event {head_id} differs from the checkpoint: the events up to it were rewritten")
    # The head matches: every event up to it is covered by the chain, hence unchanged.
    return VerifyResult(True, result.count, None, "", result.head_hash, result.anchored,
                        result.unanchored if result.unanchored and result.unanchored[1] > head_id else None,
                        result.head_id, result.key_path)


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
        ] + ([{"type": "hmac", "valueString": e.hmac}] if e.hmac else []),
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

    Auditors and admins only. The file is written to a temporary file beside ``out_path`` with
    0600 permissions, synced, and renamed into place; the export is audited ("audit.export", with
    the count) only then, committed with the rename, so an incomplete or failed export is never
    logged as done and leaves no file (the temporary file is removed on any failure; ones left by
    a killed export are removed by the next export to that name). ``progress(done, total)`` is
    called every few thousand events; returning False cancels (ExportCancelled).
    CSV cells starting with =, +, -, @, tab or CR get a leading "'" (spreadsheet formulas).
    """
    require(actor, "audit.export")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    out = Path(out_path).expanduser().resolve()
    if not out.parent.is_dir():
        raise FileNotFoundError(f"folder {out.parent} does not exist")
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder: give a file name for the export")
    lo, hi = to_iso(since), to_iso(until, end=True)
    _remove_stale_temporaries(out)

    total = count_events(session, since, until)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    replaced = False
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            events = iter_events(session, since, until)
            count = _WRITERS[fmt](fh, _progress(events, total, progress), actor, lo, hi)
            fh.flush()
            os.fsync(fh.fileno())
        record_event(session, actor, "audit.export", entity=f"file:{out.name}",
                     details={"format": fmt, "since": lo, "until": hi, "count": count})
        os.replace(tmp, out)
        replaced = True
        os.chmod(out, 0o600)
        session.commit()  # the file is complete and in place: now it is in the log
    except BaseException:
        _unlink_quietly(out if replaced else tmp)
        raise
    return ExportResult(out, fmt, count)


def _remove_stale_temporaries(out: Path, older_than_s: float = 600) -> None:
    """Temporary files of a killed export to the same name (a running export keeps its fresh)."""
    now = time.time()
    for stale in out.parent.glob(f".{out.name}.*.tmp"):
        try:
            if now - stale.stat().st_mtime > older_than_s:
                stale.unlink()
        except OSError:
            pass


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """A CSV cell that a spreadsheet will not run as a formula: text starting with =, +, -, @, tab
    or CR gets a leading "'" (OWASP's advice for CSV injection). Other values are unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


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
        writer.writerow((e.id, e.recorded_at, spreadsheet_safe(e.username), spreadsheet_safe(e.role),
                         spreadsheet_safe(e.action), spreadsheet_safe(e.entity), spreadsheet_safe(e.outcome),
                         e.details, e.prev_hash, e.hash, e.hmac))
        n += 1
    return n


def _write_json(fh, events, actor, lo, hi) -> int:
    header = {"format": "radassist-audit/1", "exported_at": _now_iso(), "exported_by": actor.username,
              "since": lo, "until": hi,
              "hash": "sha256 of JSON [prev_hash, recorded_at, username, role, action, entity, outcome, "
                      "details-as-text], compact separators",
              "hmac": "HMAC-SHA256 with the site key of '<id>|<hash>' (empty: recorded before anchoring)"}
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
