"""Tamper-evident audit trail: append-only rows, each hash-chained to the previous one."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from radassist.access import Actor
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

    ``details`` must never carry note text or other free-text PHI: codes, counts, ids only.
    """
    # Take SQLite's write lock before reading the chain head, so that two processes never
    # chain two events to the same predecessor.
    session.execute(text("UPDATE settings SET key = key WHERE 0"))
    prev = session.execute(select(AuditEventRow.hash).order_by(AuditEventRow.id.desc()).limit(1)).scalar()
    prev_hash = prev or GENESIS_HASH
    recorded_at = _now_iso()
    details_text = json.dumps(details or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    row = AuditEventRow(
        recorded_at=recorded_at,
        username=actor.username,
        role=actor.role,
        action=action,
        entity=entity,
        outcome=outcome,
        details=details_text,
        prev_hash=prev_hash,
        hash=event_hash(prev_hash, recorded_at, actor.username, actor.role, action, entity, outcome, details_text),
    )
    session.add(row)
    session.flush()
    return row
