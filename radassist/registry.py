"""Model registry: every training run, its outcome, and which version each engine uses.

Statuses: running -> candidate | failed | cancelled; candidate -> active -> retired.
Exactly one active version per engine; promotion and rollback are admin actions, audited,
and take effect in a running app (the app polls `active_version`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from radassist.access import SYSTEM, Actor, require
from radassist.audit import record_event
from radassist.store.models import ModelVersionRow, utcnow

RUNNING, FAILED, CANCELLED, CANDIDATE, ACTIVE, RETIRED = (
    "running", "failed", "cancelled", "candidate", "active", "retired")
FINISHED = (FAILED, CANCELLED, CANDIDATE)


class RegistryError(RuntimeError):
    pass


class TrainingBusy(RegistryError):
    """Another training run is in progress (possibly started from another app instance)."""


@dataclass(frozen=True)
class ModelVersion:
    id: int
    engine: str
    version: str
    status: str
    created_by: str
    created_at: str
    finished_at: str | None
    path: str | None
    base_model: str | None
    data: dict
    hyperparams: dict
    metrics: dict
    log_path: str | None

    @classmethod
    def of(cls, row: ModelVersionRow) -> "ModelVersion":
        return cls(row.id, row.engine, row.version, row.status, row.created_by,
                   row.created_at.isoformat(timespec="seconds"),
                   row.finished_at.isoformat(timespec="seconds") if row.finished_at else None,
                   row.path, row.base_model, json.loads(row.data_json), json.loads(row.hyperparams_json),
                   json.loads(row.metrics_json), row.log_path)


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_lock(session: Session) -> None:
    """Take SQLite's write lock now, so check-then-insert is atomic across processes."""
    session.execute(text("UPDATE settings SET key = key WHERE 0"))


def reap_dead_runs(session: Session) -> int:
    """Runs marked running whose process is gone (crash, OOM kill, power loss) become failed."""
    n = 0
    for row in list(session.scalars(select(ModelVersionRow).where(ModelVersionRow.status == RUNNING))):
        if row.pid is not None and not _pid_alive(row.pid):
            row.status, row.finished_at = FAILED, utcnow()
            metrics = json.loads(row.metrics_json)
            metrics.setdefault("error", "training process ended without reporting (crash or killed)")
            row.metrics_json = json.dumps(metrics)
            # the run's end must be in the audit trail even though its process never reported
            record_event(session, SYSTEM, "training.end", entity=f"model:{row.version}", outcome=FAILED,
                         details={"engine": row.engine, "status": FAILED, "reason": "process gone"})
            n += 1
    return n


def start_run(session: Session, actor: Actor, engine: str, version: str, *, data: dict, hyperparams: dict,
              base_model: str | None = None, log_path: str | None = None, pid: int | None = None) -> ModelVersion:
    """Register a training run; refuses while another run is in progress. Admins only."""
    require(actor, "training.start")
    _write_lock(session)
    reap_dead_runs(session)
    busy = session.scalar(select(ModelVersionRow).where(ModelVersionRow.status == RUNNING))
    if busy is not None:
        raise TrainingBusy(f"training run {busy.version} ({busy.engine}) by {busy.created_by} is still running")
    row = ModelVersionRow(engine=engine, version=version, status=RUNNING, created_by=actor.username,
                          base_model=base_model, data_json=json.dumps(data), hyperparams_json=json.dumps(hyperparams),
                          metrics_json="{}", log_path=log_path, pid=pid)
    session.add(row)
    session.flush()
    record_event(session, actor, "training.start", entity=f"model:{version}",
                 details={"engine": engine, "data": data})
    return ModelVersion.of(row)


def attach_process(session: Session, version: str, pid: int) -> None:
    row = _row(session, version)
    row.pid = pid


def finish_run(session: Session, actor: Actor, version: str, status: str, *, path: str | None = None,
               metrics: dict | None = None) -> ModelVersion:
    if status not in FINISHED:
        raise ValueError(f"a run finishes as one of {FINISHED}")
    row = _row(session, version)
    if row.status != RUNNING:
        raise RegistryError(f"run {version} is {row.status}, not running")
    row.status, row.finished_at, row.path = status, utcnow(), path
    row.metrics_json = json.dumps(metrics or {})
    record_event(session, actor, "training.end", entity=f"model:{version}", outcome=status,
                 details={"engine": row.engine, "status": status})
    return ModelVersion.of(row)


def _row(session: Session, version: str) -> ModelVersionRow:
    row = session.scalar(select(ModelVersionRow).where(ModelVersionRow.version == version))
    if row is None:
        raise RegistryError(f"no model version {version!r}")
    return row


def list_versions(session: Session, engine: str | None = None) -> list[ModelVersion]:
    query = select(ModelVersionRow).order_by(ModelVersionRow.id)
    if engine:
        query = query.where(ModelVersionRow.engine == engine)
    return [ModelVersion.of(r) for r in session.scalars(query)]


def get_version(session: Session, version: str) -> ModelVersion:
    return ModelVersion.of(_row(session, version))


def active_version(session: Session, engine: str) -> ModelVersion | None:
    row = session.scalar(select(ModelVersionRow).where(
        ModelVersionRow.engine == engine, ModelVersionRow.status == ACTIVE))
    return ModelVersion.of(row) if row else None


def promote(session: Session, actor: Actor, version: str) -> ModelVersion:
    """Make a candidate (or a retired version) the active one of its engine. Admins only."""
    require(actor, "model.promote")
    _write_lock(session)
    row = _row(session, version)
    if row.status not in (CANDIDATE, RETIRED):
        raise RegistryError(f"only a candidate or retired version can be promoted ({version} is {row.status})")
    if not row.path or not Path(row.path).exists():
        raise RegistryError(f"the files of {version} are missing ({row.path})")
    previous = session.scalar(select(ModelVersionRow).where(
        ModelVersionRow.engine == row.engine, ModelVersionRow.status == ACTIVE))
    if previous is not None:
        previous.status = RETIRED
    row.status = ACTIVE
    session.flush()
    record_event(session, actor, "model.promote", entity=f"model:{version}",
                 details={"engine": row.engine, "previous": previous.version if previous else None})
    return ModelVersion.of(row)


def rollback(session: Session, actor: Actor, engine: str) -> ModelVersion | None:
    """Retire the active version and re-activate the one active before it (None: back to shipped)."""
    require(actor, "model.promote")
    _write_lock(session)
    current = session.scalar(select(ModelVersionRow).where(
        ModelVersionRow.engine == engine, ModelVersionRow.status == ACTIVE))
    if current is None:
        raise RegistryError(f"no active {engine} version to roll back")
    current.status = RETIRED
    earlier = session.scalars(select(ModelVersionRow).where(
        ModelVersionRow.engine == engine, ModelVersionRow.status == RETIRED, ModelVersionRow.id < current.id,
    ).order_by(ModelVersionRow.id.desc())).first()
    if earlier is not None and earlier.path and Path(earlier.path).exists():
        earlier.status = ACTIVE
    else:
        earlier = None
    session.flush()
    record_event(session, actor, "model.rollback", entity=f"model:{current.version}",
                 details={"engine": engine, "now_active": earlier.version if earlier else "shipped"})
    return ModelVersion.of(earlier) if earlier else None
