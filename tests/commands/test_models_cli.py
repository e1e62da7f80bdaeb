"""`radassist models list|promote|rollback` and `predict` against the registry (issue 11 item 9):
promote verifies the model's files and applies the gate, list reaps dead runs, predict runs the
promoted version by default."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys

import pytest
from support.retraining import cli

from radassist import registry

ADMIN_PW = "Correct-Horse-42!"


@pytest.fixture
def admin_db(db):
    from radassist import users

    with db.session() as session:
        users.bootstrap_admin(session, "boss", ADMIN_PW)
    return db


def as_boss(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(ADMIN_PW + "\n"))
    return ["--user", "boss", "--password-stdin"]


def comparison(n: int, cand=(0.9, 1.0), act=(0.9, 1.0)) -> dict:
    return {"heldout": n, "candidate": {"model": "c", "top1": cand[0], "top3": cand[1], "ece": 0.1},
            "active": {"model": "a", "top1": act[0], "top3": act[1], "ece": 0.1}}


def candidate(db, folder, name: str, cmp: dict) -> str:
    from radassist.access import ADMIN, Actor

    admin = Actor("boss", ADMIN)
    with db.session() as session:
        registry.start_run(session, admin, "embedding", name, data={}, hyperparams={})
        registry.finish_run(session, admin, name, registry.CANDIDATE, path=str(folder), metrics={"comparison": cmp})
    return name


def small_model(tmp_path, name: str):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "head.pt").write_bytes(os.urandom(8192))
    (folder / "head.json").write_text(json.dumps({"version": name}))
    return folder


def test_promote_refuses_a_truncated_model_file(admin_db, tmp_path, monkeypatch, capsys):
    name = candidate(admin_db, small_model(tmp_path, "v1"), "v1", comparison(40))
    weights = tmp_path / "v1" / "head.pt"
    weights.write_bytes(weights.read_bytes()[:100])  # the copy stopped half-way
    assert cli("models", "promote", name, "--db", str(admin_db.path), *as_boss(monkeypatch)) == 3
    err = capsys.readouterr().err
    assert "integrity check" in err and "head.pt is 100 bytes" in err
    with admin_db.session() as session:
        assert registry.active_version(session, "embedding") is None


def test_promote_applies_the_gate_force_only_for_a_small_heldout_set(admin_db, tmp_path, monkeypatch, capsys):
    fell = candidate(admin_db, small_model(tmp_path, "fell"), "fell", comparison(30, cand=(0.95, 0.83)))
    assert cli("models", "promote", fell, "--force", "--db", str(admin_db.path), *as_boss(monkeypatch)) == 3
    assert "top-3 fell from 100.0% to 83.0%" in capsys.readouterr().err
    small = candidate(admin_db, small_model(tmp_path, "small"), "small", comparison(6))
    assert cli("models", "promote", small, "--db", str(admin_db.path), *as_boss(monkeypatch)) == 3
    assert "only 6 held-out decisions" in capsys.readouterr().err
    assert cli("models", "promote", small, "--force", "--db", str(admin_db.path), *as_boss(monkeypatch)) == 0
    assert "small is now the active embedding model" in capsys.readouterr().out
    assert cli("models", "list", "--db", str(admin_db.path)) == 0
    out = capsys.readouterr().out
    assert next(x for x in out.splitlines() if x.startswith("small")).split()[2] == "active"
    assert "83.0%/100.0%" in next(x for x in out.splitlines() if x.startswith("fell"))


def test_models_list_reaps_a_sigkilled_run(db, capsys):
    from radassist.access import ADMIN, Actor

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with db.session() as session:
        registry.start_run(session, Actor("boss", ADMIN), "embedding", "killed-run", data={}, hyperparams={},
                           pid=proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert cli("models", "list", "--db", str(db.path)) == 0
    out = capsys.readouterr()
    line = next(x for x in out.out.splitlines() if x.startswith("killed-run"))
    assert line.split()[2] == "failed" and "marked failed" in out.err
    with db.session() as session:
        assert "crash or killed" in registry.get_version(session, "killed-run").metrics["error"]


@pytest.mark.slow
def test_predict_uses_the_promoted_version_unless_told_otherwise(admin_db, tmp_path, monkeypatch):
    """Issue 11: `radassist predict` ignored the registry and used the shipped model after a promotion."""
    import shutil

    from radassist.engines.embedding import default_head_dir

    shipped = default_head_dir()
    if shipped is None:
        pytest.skip("no shipped embedding head")
    folder = tmp_path / "site-v2"
    shutil.copytree(shipped, folder)
    meta = json.loads((folder / "head.json").read_text())
    (folder / "head.json").write_text(json.dumps({**meta, "version": "site-v2"}))
    candidate(admin_db, folder, "site-v2", comparison(40))
    assert cli("models", "promote", "site-v2", "--db", str(admin_db.path), *as_boss(monkeypatch)) == 0
    orders = tmp_path / "in.jsonl"
    orders.write_text(json.dumps({"accession": "A1", "ordered_exam": "MRI KNEE", "clinical_notes": "locking",
                                  "age": 30, "sex": "M", "priority": "ROUTINE"}) + "\n")
    out = tmp_path / "out.jsonl"
    assert cli("predict", "--input", str(orders), "--output", str(out), "--db", str(admin_db.path)) == 0
    assert json.loads(out.read_text())["model"] == "embedding/site-v2"
    assert cli("predict", "--input", str(orders), "--output", str(out), "--db", str(admin_db.path),
               "--model-version", "shipped") == 0
    assert json.loads(out.read_text())["model"] == f"embedding/{meta['version']}"
