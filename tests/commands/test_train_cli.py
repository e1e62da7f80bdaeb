"""`radassist train` as the issue reproduced it: the acting user is the signed-in one (never a
hard-coded admin), and `--run-id` claims only a run the app registered for this process tree
(one-time token in the environment); refusals are audited and train nothing."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from support.retraining import cli, register_run, seed_decisions, train_args

from radassist import registry
from radassist.store.models import AuditEventRow

ADMIN_PW, RAD_PW = "Correct-Horse-42!", "Battery-Staple-77!"


@pytest.fixture
def users_db(db):
    from radassist import users

    with db.session() as session:
        users.bootstrap_admin(session, "boss", ADMIN_PW)
        users.create_user(session, users.Actor("boss", "admin"), "dr.rad", RAD_PW, "radiologist")
    return db


def audit(db) -> list[tuple[str, str, str]]:
    with db.session() as session:
        return [tuple(r) for r in session.query(AuditEventRow.username, AuditEventRow.action, AuditEventRow.outcome)]


def test_a_radiologist_cannot_launch_training(users_db, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(RAD_PW + "\n"))
    assert cli("train", "--from-db", "--db", str(users_db.path), "--user", "dr.rad", "--password-stdin",
               "--out", str(tmp_path / "out")) == 3
    assert "may not training.start" in capsys.readouterr().err
    with users_db.session() as session:
        assert registry.list_versions(session) == []
    assert ("dr.rad", "access.refused", "refused") in audit(users_db)
    assert not (tmp_path / "out").exists()


def test_run_id_without_the_apps_token_is_refused_and_audited(db, tmp_path, monkeypatch, capsys):
    """Issue 11: `train --from-db --run-id X` with no password trained and registered a candidate."""
    monkeypatch.delenv(registry.RUN_TOKEN_ENV, raising=False)
    version = register_run(db)  # registered by "the app", token not handed over
    assert cli(*train_args(db, tmp_path / "out", version)) == 3
    assert "no run token" in capsys.readouterr().err
    assert ("training-process", "training.claim", "refused") in audit(db)
    with db.session() as session:
        assert registry.get_version(session, version).status == registry.RUNNING  # the app ends its own run
    assert not (tmp_path / "out").exists()


def test_a_crashed_runs_id_is_refused_even_with_its_token(db, tmp_path, monkeypatch, capsys):
    version = register_run(db, monkeypatch=monkeypatch)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with db.session() as session:
        registry.attach_process(session, version, gone.pid)  # its training process crashed
    assert cli(*train_args(db, tmp_path / "out", version)) == 3
    assert "is failed" in capsys.readouterr().err
    with db.session() as session:
        assert registry.get_version(session, version).status == registry.FAILED
    assert ("training-process", "training.claim", "refused") in audit(db)


def test_the_token_never_travels_on_the_command_line(db, tmp_path, monkeypatch):
    version = register_run(db, monkeypatch=monkeypatch)
    import os

    token = os.environ[registry.RUN_TOKEN_ENV]
    assert token not in " ".join(train_args(db, tmp_path / "out", version))
    with db.session() as session:
        row = session.query(registry.ModelVersionRow).filter_by(version=version).one()
        assert row.run_token_hash == registry.token_hash(token) != token


@pytest.mark.slow
def test_training_from_the_database_acts_as_the_signed_in_admin(users_db, tmp_path, monkeypatch, capsys):
    seed_decisions(users_db, tmp_path, per_protocol=4)
    monkeypatch.setattr(sys, "stdin", io.StringIO(ADMIN_PW + "\n"))
    assert cli("train", "--from-db", "--db", str(users_db.path), "--user", "boss", "--password-stdin",
               "--replay", "2", "--corpus-replay", "0", "--out", str(tmp_path / "out"), "--json-progress") == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    steps = [e for e in events if "step" in e and "event" not in e]
    assert len(steps) > 5 and steps[-1]["loss"] < steps[0]["loss"]  # per-step losses for the chart
    done = events[-1]
    assert done["event"] == "done" and done["gate"]["too_small"]
    with users_db.session() as session:
        (run,) = registry.list_versions(session)
    assert run.created_by == "boss" and run.status == registry.CANDIDATE
    assert run.version == done["version"] and (tmp_path / "out" / run.version).is_dir()
    assert set(run.files) >= {"head.json", "head.pt"}
    assert ("boss", "training.start", "success") in audit(users_db)
    assert {u for u, a, _ in audit(users_db) if a.startswith("training")} == {"boss"}  # no hard-coded admin
