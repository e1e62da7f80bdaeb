"""The model registry (no training here: model folders are written by hand): run claims with the
app's one-time token, model file hashes checked at promotion, the promotion gate, reaping, observers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.retraining import ADMIN_ACTOR, RAD_ACTOR

from radassist import registry
from radassist.access import PermissionDenied
from radassist.store.models import AuditEventRow
from radassist.training.gate import MIN_HELDOUT, evaluate_gate


def comparison(n: int, cand=(0.9, 1.0), act=(0.9, 1.0)) -> dict:
    return {"heldout": n, "candidate": {"model": "c", "top1": cand[0], "top3": cand[1], "ece": 0.1},
            "active": {"model": "a", "top1": act[0], "top3": act[1], "ece": 0.1}}


def candidate(db, tmp_path: Path, name: str = "cand", cmp: dict | None = None, engine: str = "embedding") -> str:
    """A finished candidate whose folder holds two files (hashed by finish_run)."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "head.pt").write_bytes(os.urandom(4096))
    (folder / "head.json").write_text(json.dumps({"version": name}))
    with db.session() as session:
        run = registry.start_run(session, ADMIN_ACTOR, engine, name, data={}, hyperparams={})
        registry.finish_run(session, ADMIN_ACTOR, run.version, registry.CANDIDATE, path=str(folder),
                            metrics={"comparison": cmp if cmp is not None else comparison(40)})
    return name


def actions(db) -> list[tuple[str, str]]:
    with db.session() as session:
        return [(a, o) for a, o in session.query(AuditEventRow.action, AuditEventRow.outcome)]


# --- one-time run tokens ------------------------------------------------------------------------

def test_app_run_is_claimed_once_with_its_token_as_its_creator(db):
    with db.session() as session:
        run, token = registry.register_app_run(session, ADMIN_ACTOR, "embedding", data={}, hyperparams={})
        row = session.query(registry.ModelVersionRow).filter_by(version=run.version).one()
        assert row.run_token_hash == registry.token_hash(token) and token not in row.run_token_hash
    with db.session() as session:
        claimed, actor = registry.claim_run(session, run.version, token)
    assert actor == ADMIN_ACTOR and claimed.status == registry.RUNNING
    with db.session() as session, pytest.raises(registry.RunClaimRefused, match="already claimed"):
        registry.claim_run(session, run.version, token)  # a reused token
    assert ("training.claim", "success") in actions(db)


@pytest.mark.parametrize("token", [None, "", "not-the-token"])
def test_claim_without_the_right_token_is_refused_and_audited(db, token):
    from radassist.training.run_service import TrainingRun, TrainingRunConfig

    with db.session() as session:
        run, _ = registry.register_app_run(session, ADMIN_ACTOR, "embedding", data={}, hyperparams={})
    with pytest.raises(registry.RunClaimRefused):
        TrainingRun(db, TrainingRunConfig()).claim_registered(run.version, token)
    assert ("training.claim", "refused") in actions(db)
    with db.session() as session:
        assert registry.get_version(session, run.version).status == registry.RUNNING  # the app's run stays


def test_a_crashed_runs_id_is_refused(db):
    """Issue 11: `train --from-db --run-id <a crashed run>` trained and registered a candidate."""
    with db.session() as session:
        run, token = registry.register_app_run(session, ADMIN_ACTOR, "embedding", data={}, hyperparams={})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with db.session() as session:
        registry.attach_process(session, run.version, dead.pid)  # its training process died
    with db.session() as session, pytest.raises(registry.RunClaimRefused, match="is failed"):
        registry.claim_run(session, run.version, token)
    with db.session() as session:
        assert registry.get_version(session, run.version).status == registry.FAILED


def test_claim_from_another_process_tree_is_refused(db):
    with db.session() as session:
        run, token = registry.register_app_run(session, ADMIN_ACTOR, "embedding", data={}, hyperparams={},
                                               owner_pid=os.getpid())
    with db.session() as session, pytest.raises(registry.RunClaimRefused, match="another process tree"):
        registry.claim_run(session, run.version, token, pid=999_999, parent_pid=999_998)


def test_a_radiologist_cannot_register_claim_or_promote(db, tmp_path):
    with pytest.raises(PermissionDenied), db.session() as session:
        registry.register_app_run(session, RAD_ACTOR, "embedding", data={}, hyperparams={})
    name = candidate(db, tmp_path)
    with pytest.raises(PermissionDenied), db.session() as session:
        registry.promote(session, RAD_ACTOR, name)
    assert ("access.refused", "refused") in actions(db)


# --- model files --------------------------------------------------------------------------------

def test_promote_refuses_a_truncated_or_altered_model(db, tmp_path):
    name = candidate(db, tmp_path)
    with db.session() as session:
        files = registry.get_version(session, name).files
    assert set(files) == {"head.pt", "head.json"} and all(len(f["sha256"]) == 64 for f in files.values())
    weights = tmp_path / name / "head.pt"
    data = weights.read_bytes()
    weights.write_bytes(data[:1000])  # truncated (a copy that stopped half-way)
    with db.session() as session, pytest.raises(registry.ModelIntegrityError, match="head.pt is 1000 bytes"):
        registry.promote(session, ADMIN_ACTOR, name)
    weights.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # same size, one bit flipped
    with db.session() as session, pytest.raises(registry.ModelIntegrityError, match="sha256 mismatch"):
        registry.promote(session, ADMIN_ACTOR, name, force=True)  # force never skips the integrity check
    weights.write_bytes(data)
    with db.session() as session:
        assert registry.promote(session, ADMIN_ACTOR, name).status == registry.ACTIVE


def test_rollback_does_not_reactivate_an_altered_model(db, tmp_path):
    first = candidate(db, tmp_path, "first")
    second = candidate(db, tmp_path, "second")
    with db.session() as session:
        registry.promote(session, ADMIN_ACTOR, first)
        registry.promote(session, ADMIN_ACTOR, second)
    (tmp_path / first / "head.json").write_text("{}")
    with db.session() as session:
        assert registry.rollback(session, ADMIN_ACTOR, "embedding") is None  # back to the shipped model
        assert registry.active_version(session, "embedding") is None


# --- the gate -----------------------------------------------------------------------------------

def test_gate_considers_top3_and_the_size_of_the_heldout_set():
    assert evaluate_gate(comparison(40)).passed
    # issue 10: a tick while top-3 fell from 100% to 83%
    fell = evaluate_gate(comparison(40, cand=(0.9, 0.83), act=(0.9, 1.0)))
    assert not fell.passed and fell.top3_fell and not fell.top1_fell and not fell.overridable
    assert "top-3 fell from 100.0% to 83.0%" in fell.summary
    small = evaluate_gate(comparison(6, cand=(1.0, 1.0), act=(0.5, 0.5)))
    assert not small.passed and small.too_small and small.overridable
    assert not evaluate_gate({"heldout": 0}).passed and not evaluate_gate(None).passed
    assert evaluate_gate(comparison(MIN_HELDOUT, cand=(0.88, 1.0)), gate=0.02).passed
    assert not evaluate_gate(comparison(MIN_HELDOUT, cand=(0.88, 1.0)), gate=0.0).passed


def test_promote_applies_the_gate_and_force_only_overrides_a_small_heldout_set(db, tmp_path):
    fell = candidate(db, tmp_path, "fell", comparison(50, cand=(0.95, 0.83), act=(0.9, 1.0)))
    with db.session() as session, pytest.raises(registry.PromotionRefused, match="top-3 fell"):
        registry.promote(session, ADMIN_ACTOR, fell, force=True)
    small = candidate(db, tmp_path, "small", comparison(6))
    with db.session() as session, pytest.raises(registry.PromotionRefused, match="only 6 held-out"):
        registry.promote(session, ADMIN_ACTOR, small)
    with db.session() as session:
        assert registry.promote(session, ADMIN_ACTOR, small, force=True).status == registry.ACTIVE
        event = session.query(AuditEventRow).filter_by(action="model.promote").one()
    details = json.loads(event.details)
    assert details["gate"] == "overridden" and "only 6 held-out" in details["gate_reasons"][0]


# --- observers --------------------------------------------------------------------

def test_promote_and_rollback_tell_the_observers(db, tmp_path, monkeypatch):
    from radassist.training import run_events

    seen = []

    class Recorder(run_events.NullObserver):
        def model_promoted(self, engine, version, model_dir):
            seen.append(("promoted", engine, version, model_dir.name))

        def model_rolled_back(self, engine, from_version, to_version):
            seen.append(("rolled_back", engine, from_version, to_version))

    monkeypatch.setattr(run_events, "observers_for", lambda settings: run_events.ObserverGroup([Recorder()]))
    name = candidate(db, tmp_path)
    with db.session() as session:
        registry.promote(session, ADMIN_ACTOR, name)
        registry.rollback(session, ADMIN_ACTOR, "embedding")
    assert seen == [("promoted", "embedding", name, name), ("rolled_back", "embedding", name, "shipped")]
