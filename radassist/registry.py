"""Model registry: every training run, its outcome, and which version each engine uses.

Statuses: running -> candidate | failed | cancelled; candidate -> active -> retired.
Exactly one active version per engine; promotion and rollback are admin actions, audited,
and take effect in a running app (the app polls `active_version`).

- One version name per run: the registry's ``version`` is the model folder's name and the
  engine's own version (``model_id`` = ``engine/version``), chosen once by `new_version_name`.
- A run registered by the app carries the sha256 of a one-time token (`register_app_run`);
  the training process it starts claims it with that token (`claim_run`), once.
- Every file of a trained model is hashed when the run finishes (`finish_run`); `promote` and
  `rollback` verify the files and refuse a truncated or altered model.
- `promote` applies the promotion gate (`training.gate`) whoever calls it.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from radassist.access import SYSTEM, Actor, require
from radassist.audit import record_event
from radassist.store.models import ModelVersionRow, utcnow
from radassist.training.gate import GateResult, evaluate_gate

RUNNING, FAILED, CANCELLED, CANDIDATE, ACTIVE, RETIRED = (
    "running", "failed", "cancelled", "candidate", "active", "retired")
FINISHED = (FAILED, CANCELLED, CANDIDATE)


class RegistryError(RuntimeError):
    pass


class TrainingBusy(RegistryError):
    """Another training run is in progress (possibly started from another app instance)."""


class RunClaimRefused(RegistryError):
    """A training process tried to claim a run it was not given (no/used/wrong token, ended run)."""


class ModelIntegrityError(RegistryError):
    """A model's files differ from the hashes recorded at training time (truncated, altered, missing)."""


class PromotionRefused(RegistryError):
    """The promotion gate refused the candidate (``gate`` says why)."""

    def __init__(self, message: str, gate: GateResult):
        super().__init__(message)
        self.gate = gate


RUN_TOKEN_ENV = "RADASSIST_RUN_TOKEN"


def new_version_name(engine: str) -> str:
    """The one version-name scheme: ``<engine>-YYYYMMDD-HHMMSS-<6 hex>`` (registry, folder, engine)."""
    return f"{engine}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


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
    files: dict = field(default_factory=dict)  # {relative path: {"sha256", "size"}} at training time
    created_role: str | None = None

    @classmethod
    def of(cls, row: ModelVersionRow) -> "ModelVersion":
        return cls(row.id, row.engine, row.version, row.status, row.created_by,
                   row.created_at.isoformat(timespec="seconds"),
                   row.finished_at.isoformat(timespec="seconds") if row.finished_at else None,
                   row.path, row.base_model, json.loads(row.data_json), json.loads(row.hyperparams_json),
                   json.loads(row.metrics_json), row.log_path, json.loads(row.files_json or "{}"),
                   row.created_role)


# --- model files ----------------------------------------------------------------------------

def model_files(folder: str | Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under a model folder (relative paths, sorted)."""
    folder = Path(folder)
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        out[path.relative_to(folder).as_posix()] = {"sha256": digest.hexdigest(), "size": path.stat().st_size}
    return out


def verify_model_files(folder: str | Path | None, recorded: dict[str, dict[str, Any]]) -> list[str]:
    """Problems found comparing a model folder with its recorded hashes ([] = intact)."""
    if not folder or not Path(folder).is_dir():
        return [f"the model folder is missing ({folder})"]
    if not recorded:
        return ["no file hashes were recorded for this model at training time"]
    folder = Path(folder)
    problems = []
    for name, want in recorded.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        size = path.stat().st_size
        if size != want.get("size"):
            problems.append(f"{name} is {size} bytes, {want.get('size')} when trained (truncated or altered)")
            continue
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != want.get("sha256"):
            problems.append(f"{name} differs from the file written at training time (sha256 mismatch)")
    return problems


def _check_files(row: ModelVersionRow) -> None:
    problems = verify_model_files(row.path, json.loads(row.files_json or "{}"))
    if problems:
        raise ModelIntegrityError(f"model {row.version} failed its integrity check: " + "; ".join(problems))


def _observers(session: Session):
    from radassist.settings import load_settings
    from radassist.training.run_events import observers_for

    return observers_for(load_settings(session))


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
            from radassist.training.run_events import RunInfo

            _observers(session).run_failed(RunInfo(row.engine, row.version, row.base_model, row.created_by),
                                           FAILED, "training process ended without reporting")
            n += 1
    return n


def start_run(session: Session, actor: Actor, engine: str, version: str, *, data: dict, hyperparams: dict,
              base_model: str | None = None, log_path: str | None = None, pid: int | None = None,
              run_token_hash: str | None = None, owner_pid: int | None = None) -> ModelVersion:
    """Register a training run; refuses while another run is in progress. Admins only.

    ``run_token_hash``/``owner_pid``: a run the app registers for a training process it starts
    (see `register_app_run` and `claim_run`)."""
    require(actor, "training.start")
    _write_lock(session)
    reap_dead_runs(session)
    busy = session.scalar(select(ModelVersionRow).where(ModelVersionRow.status == RUNNING))
    if busy is not None:
        raise TrainingBusy(f"training run {busy.version} ({busy.engine}) by {busy.created_by} is still running")
    row = ModelVersionRow(engine=engine, version=version, status=RUNNING, created_by=actor.username,
                          base_model=base_model, data_json=json.dumps(data), hyperparams_json=json.dumps(hyperparams),
                          metrics_json="{}", log_path=log_path, pid=pid, created_role=actor.role,
                          owner_pid=owner_pid, run_token_hash=run_token_hash, files_json="{}")
    session.add(row)
    session.flush()
    record_event(session, actor, "training.start", entity=f"model:{version}",
                 details={"engine": engine, "data": data})
    return ModelVersion.of(row)


def register_app_run(session: Session, actor: Actor, engine: str, *, data: dict, hyperparams: dict,
                     version: str | None = None, base_model: str | None = None, log_path: str | None = None,
                     owner_pid: int | None = None) -> tuple[ModelVersion, str]:
    """Register a run for a training process this process will start; returns (run, one-time token).

    Only the token's sha256 is stored. Hand the token to the child in the environment
    (``RUN_TOKEN_ENV``), never on its command line."""
    token = secrets.token_urlsafe(32)
    owner = owner_pid if owner_pid is not None else os.getpid()
    run = start_run(session, actor, engine, version or new_version_name(engine), data=data,
                    hyperparams=hyperparams, base_model=base_model, log_path=log_path, pid=owner,
                    run_token_hash=token_hash(token), owner_pid=owner)
    return run, token


def claim_run(session: Session, version: str, token: str | None, *, pid: int | None = None,
              parent_pid: int | None = None) -> tuple[ModelVersion, Actor]:
    """The training process takes over a run the app registered for it; returns (run, acting user).

    Refused (RunClaimRefused) without the run's one-time token, with a used or wrong one, for a
    run that is not running (a crashed run's id), or from outside the registering process tree.
    The claim consumes the token. Audit the refusal with `record_claim_refusal` (own transaction)."""
    pid = os.getpid() if pid is None else pid
    parent_pid = os.getppid() if parent_pid is None else parent_pid
    _write_lock(session)
    reap_dead_runs(session)
    row = session.scalar(select(ModelVersionRow).where(ModelVersionRow.version == version))
    if row is None:
        raise RunClaimRefused(f"no training run {version!r}")
    if row.status != RUNNING:
        raise RunClaimRefused(f"run {version} is {row.status}: only a run registered for this process can be claimed")
    if not token:
        raise RunClaimRefused(f"run {version}: no run token given ({RUN_TOKEN_ENV}); sign in with --user instead")
    if row.run_token_hash is None:
        raise RunClaimRefused(f"run {version} was already claimed or was not registered for a training process")
    if not hmac.compare_digest(row.run_token_hash, token_hash(token)):
        raise RunClaimRefused(f"run {version}: the run token does not match")
    if row.owner_pid is not None and row.owner_pid not in (pid, parent_pid):
        raise RunClaimRefused(f"run {version} was registered by another process tree")
    actor = Actor(row.created_by, row.created_role or "")
    require(actor, "training.start")
    row.run_token_hash = None  # one time
    row.pid = pid
    record_event(session, actor, "training.claim", entity=f"model:{version}", details={"engine": row.engine})
    return ModelVersion.of(row), actor


def record_claim_refusal(session: Session, version: str, reason: str) -> None:
    """Audit a refused claim (who: the unauthenticated training process)."""
    record_event(session, Actor("training-process", "none"), "training.claim", entity=f"model:{version}",
                 outcome="refused", details={"reason": reason[:200]})


def attach_process(session: Session, version: str, pid: int) -> None:
    row = _row(session, version)
    row.pid = pid


def finish_run(session: Session, actor: Actor, version: str, status: str, *, path: str | None = None,
               metrics: dict | None = None, files: dict | None = None) -> ModelVersion:
    """End a run. A candidate's files are hashed now (``files``: hashes taken when it was written)."""
    if status not in FINISHED:
        raise ValueError(f"a run finishes as one of {FINISHED}")
    row = _row(session, version)
    if row.status != RUNNING:
        raise RegistryError(f"run {version} is {row.status}, not running")
    if status == CANDIDATE and path and files is None and Path(path).is_dir():
        files = model_files(path)
    row.status, row.finished_at, row.path = status, utcnow(), path
    row.metrics_json = json.dumps(metrics or {})
    row.files_json = json.dumps(files or {})
    row.run_token_hash = None
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


def gate_for(session: Session, version: str) -> GateResult:
    """The promotion gate's verdict on a version's held-out comparison, with the site's gate setting."""
    from radassist.settings import load_settings

    row = _row(session, version)
    return evaluate_gate(json.loads(row.metrics_json).get("comparison"), load_settings(session).promotion_gate)


def promote(session: Session, actor: Actor, version: str, *, force: bool = False) -> ModelVersion:
    """Make a candidate (or a retired version) the active one of its engine. Admins only.

    Refuses a model whose files differ from those recorded at training time
    (ModelIntegrityError) and a candidate the promotion gate refuses (PromotionRefused);
    ``force`` overrides only a held-out set too small to tell, and is audited as such."""
    require(actor, "model.promote")
    _write_lock(session)
    row = _row(session, version)
    if row.status not in (CANDIDATE, RETIRED):
        raise RegistryError(f"only a candidate or retired version can be promoted ({version} is {row.status})")
    if not row.path or not Path(row.path).exists():
        raise RegistryError(f"the files of {version} are missing ({row.path})")
    _check_files(row)
    gate = gate_for(session, version)
    if not gate.passed and not (force and gate.overridable):
        hint = " (an admin may force it)" if gate.overridable else ""
        raise PromotionRefused(f"promotion of {version} refused: {gate.summary}{hint}", gate)
    previous = session.scalar(select(ModelVersionRow).where(
        ModelVersionRow.engine == row.engine, ModelVersionRow.status == ACTIVE))
    if previous is not None:
        previous.status = RETIRED
    row.status = ACTIVE
    session.flush()
    details: dict[str, Any] = {"engine": row.engine, "previous": previous.version if previous else None,
                               "gate": "passed" if gate.passed else "overridden"}
    if not gate.passed:
        details["gate_reasons"] = gate.reasons
    record_event(session, actor, "model.promote", entity=f"model:{version}", details=details)
    _observers(session).model_promoted(row.engine, version, Path(row.path))
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
    skipped = None
    if earlier is not None and earlier.path and Path(earlier.path).exists():
        problems = verify_model_files(earlier.path, json.loads(earlier.files_json or "{}"))
        if problems:  # an altered earlier model is not re-activated: back to the shipped one
            skipped, earlier = earlier.version, None
        else:
            earlier.status = ACTIVE
    else:
        earlier = None
    session.flush()
    details: dict[str, Any] = {"engine": engine, "now_active": earlier.version if earlier else "shipped"}
    if skipped:
        details["skipped"] = {"version": skipped, "reason": "failed its integrity check"}
    record_event(session, actor, "model.rollback", entity=f"model:{current.version}", details=details)
    _observers(session).model_rolled_back(engine, current.version, earlier.version if earlier else "shipped")
    return ModelVersion.of(earlier) if earlier else None
