"""Retraining from decisions, core only (no Qt): decisions -> candidate -> promoted engine; cancel;
crash; busy; roles; de-identified export. The GUI side is in test_gui_retraining.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from radassist import registry
from radassist.access import ADMIN, RADIOLOGIST, Actor, PermissionDenied
from support.retraining import (ADMIN_ACTOR, PATIENT, PROTOCOLS, RAD_ACTOR, REPO, cli, register_run,  # noqa: F401
                                seed_decisions, train_args)

@pytest.mark.slow
def test_decisions_to_promoted_engine_end_to_end(db, tmp_path, capsys, monkeypatch):
    from radassist.engine_factory import create_site_engine

    seed_decisions(db, tmp_path, per_protocol=10, override={"CT-LSPINE-WO": "MR-LSPINE-WO"})
    before, _ = create_site_engine(db, "embedding")
    version = register_run(db, monkeypatch=monkeypatch)
    assert cli(*train_args(db, tmp_path / "out", version)) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any("step" in m for m in lines) and lines[-1]["event"] == "done"
    with db.session() as session:
        run = registry.get_version(session, version)
    assert run.status == registry.CANDIDATE and Path(run.path).is_dir()
    cmp = run.metrics["comparison"]
    assert cmp["heldout"] > 0 and {"top1", "top3", "ece"} <= set(cmp["candidate"]) and "better" in cmp
    assert run.metrics["data"]["overrides"] == 10
    with db.session() as session:
        with pytest.raises(PermissionDenied):
            registry.promote(session, RAD_ACTOR, version)
        registry.promote(session, ADMIN_ACTOR, version, force=True)  # a small test site: too few held-out
    after, _ = create_site_engine(db, "embedding")
    assert after.model_id != before.model_id
    assert after.version == json.loads((Path(run.path) / "head.json").read_text())["version"]
    # the site's override is learned: lumbar-spine orders now get the MR protocol
    from radassist.catalog import catalog_from_db
    from radassist.synthetic import generate

    with db.session() as session:
        lspine = [p for p in catalog_from_db(session) if p.code == "CT-LSPINE-WO"]
    preds = after.predict_batch([e.order for e in generate(lspine, per_protocol=30, seed=99)], top_k=1)
    steered = [any(after.policy.steers(f) for f in p.flags) for p in preds]
    free = [p for p, s in zip(preds, steered) if not s]
    learned = sum(p.suggestions[0].code == "MR-LSPINE-WO" for p in free)
    orders = [e.order for e in generate(lspine, per_protocol=30, seed=99)]
    was = sum(p.suggestions[0].code == "MR-LSPINE-WO" and not s
              for p, s in zip(before.predict_batch(orders, top_k=1), steered))
    assert free and learned >= 0.6 * len(free) and learned >= was + 0.4 * len(free), (learned, was, len(free))
    # ... but a stated MRI-unsafe implant or severe claustrophobia still beats the learned preference
    unsafe = [p for p, s in zip(preds, steered) if s]
    for p in unsafe:
        if p.suggestions[0].code == "MR-LSPINE-WO":  # only where no flag steers (e.g. a handled one) ...
            assert not p.suggestions[0].conflicts, p
    assert unsafe and sum(p.suggestions[0].code != "MR-LSPINE-WO" for p in unsafe) >= 0.8 * len(unsafe)
    with db.session() as session:
        assert registry.rollback(session, ADMIN_ACTOR, "embedding") is None
    rolled, _ = create_site_engine(db, "embedding")
    assert rolled.model_id == before.model_id


@pytest.mark.slow
def test_command_line_models_list_promote_and_audit(db, tmp_path, capsys, monkeypatch):
    from radassist.store.models import AuditEventRow

    seed_decisions(db, tmp_path, per_protocol=4)
    version = register_run(db, monkeypatch=monkeypatch)
    assert cli(*train_args(db, tmp_path / "out", version)) == 0
    assert cli("models", "list", "--db", str(db.path)) == 0
    assert version in capsys.readouterr().out
    with db.session() as session:
        registry.promote(session, ADMIN_ACTOR, version, force=True)
        actions = [a for (a,) in session.query(AuditEventRow.action)]
    assert {"training.start", "training.claim", "training.end", "model.promote"} <= set(actions)


def test_second_run_is_refused_while_one_is_running(db):
    register_run(db, version="first")
    with db.session() as session:
        registry.attach_process(session, "first", os.getpid())  # alive
    with pytest.raises(registry.TrainingBusy):
        register_run(db, version="second")
    # another app instance: its own connection to the same database file
    from radassist.store import open_database

    other = open_database(db.path)
    try:
        with pytest.raises(registry.TrainingBusy):
            register_run(other, version="third")
    finally:
        other.dispose()


def test_radiologist_cannot_start_training_promote_or_roll_back(db, tmp_path):
    with pytest.raises(PermissionDenied):
        register_run(db, actor=RAD_ACTOR)
    with db.session() as session:
        assert registry.list_versions(session) == []
        with pytest.raises(PermissionDenied):
            registry.rollback(session, RAD_ACTOR, "embedding")
    from radassist.settings import SiteSettings, save_settings

    with db.session() as session, pytest.raises(PermissionDenied):
        save_settings(session, RAD_ACTOR, SiteSettings(confidence_threshold=0.1))


def _spawn(db, tmp_path, version, engine, *extra) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "radassist.cli", *train_args(db, tmp_path / "out", version, engine),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


def _wait_for_step(proc: subprocess.Popen, timeout: float = 240) -> list[str]:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("{") and '"step"' in line:
            return seen
    raise AssertionError(f"no progress line: {seen} {proc.stderr.read() if proc.poll() is not None else ''}")


@pytest.mark.slow
def test_sigterm_cancels_a_running_llm_training(db, tmp_path, tiny_model_dir, monkeypatch):
    seed_decisions(db, tmp_path, per_protocol=6)
    version = register_run(db, "llm", monkeypatch=monkeypatch)
    proc = _spawn(db, tmp_path, version, "llm", "--base-model", str(tiny_model_dir), "--device", "cpu",
                  "--epochs", "50", "--batch-size", "2")
    _wait_for_step(proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert '"stopped"' in out
    with db.session() as session:
        run = registry.get_version(session, version)
        assert run.status == registry.CANCELLED and run.path is None
        assert registry.active_version(session, "llm") is None
    assert not any((tmp_path / "out").glob("llm-*")), "a cancelled run writes no adapter"


@pytest.mark.slow
def test_killed_training_process_is_marked_failed(db, tmp_path, monkeypatch):
    seed_decisions(db, tmp_path, per_protocol=4)
    version = register_run(db, monkeypatch=monkeypatch)
    log = tmp_path / "run.log"
    with db.session() as session:
        row = session.query(registry.ModelVersionRow).filter_by(version=version).one()
        row.log_path = str(log)
    proc = _spawn(db, tmp_path, version, "embedding")
    time.sleep(1.0)  # it attaches its pid to the run first thing
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with db.session() as session:
            if session.query(registry.ModelVersionRow).filter_by(version=version).one().pid == proc.pid:
                break
        time.sleep(0.2)
    proc.kill()  # SIGKILL: like the OOM killer
    proc.communicate(timeout=30)
    log.write_text("killed\n")
    with db.session() as session:
        assert registry.get_version(session, version).status == registry.RUNNING
        assert registry.reap_dead_runs(session) == 1
    with db.session() as session:
        run = registry.get_version(session, version)
        assert run.status == registry.FAILED and "crash or killed" in run.metrics["error"]
        assert run.log_path == str(log) and registry.active_version(session, "embedding") is None
        registry.start_run(session, ADMIN_ACTOR, "embedding", "after-crash", data={}, hyperparams={})


@pytest.mark.slow
def test_disk_full_is_reported_in_metrics(db, tmp_path, monkeypatch, capsys):
    import radassist.training.run_service as run_service

    seed_decisions(db, tmp_path, per_protocol=4)

    def no_space(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_service, "train_embedding", no_space)
    version = register_run(db, monkeypatch=monkeypatch)
    assert cli(*train_args(db, tmp_path / "out", version)) == 1
    with db.session() as session:
        run = registry.get_version(session, version)
    assert run.status == registry.FAILED and "No space left on device" in run.metrics["error"]
    assert "No space left" in capsys.readouterr().out


@pytest.mark.slow
def test_export_data_has_no_names_mrns_or_accessions(db, tmp_path, capsys, monkeypatch):
    import io

    from radassist import users

    accessions = seed_decisions(db, tmp_path, per_protocol=3)
    with db.session() as session:
        users.bootstrap_admin(session, "boss", "Correct-Horse-42!")
    out = tmp_path / "export.jsonl"
    monkeypatch.setattr(sys, "stdin", io.StringIO("Correct-Horse-42!\n"))
    assert cli("train", "export-data", "--out", str(out), "--db", str(db.path), "--user", "boss",
               "--password-stdin", "--replay", "1") == 0
    text = out.read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    assert sum(r["accession"].startswith("case-") for r in rows) == len(accessions)
    for needle in ("Quixworth", "Zebulon", "MRN0", "ACC0"):
        assert needle.lower() not in text.lower(), needle
    assert {r["split"] for r in rows} == {"train", "heldout"}
    monkeypatch.setattr(sys, "stdin", io.StringIO("x\n"))
    assert cli("train", "export-data", "--out", str(tmp_path / "x.jsonl"), "--db", str(db.path), "--user", "nobody",
               "--password-stdin") == 3


def test_replay_does_not_reteach_a_protocol_the_site_overrides(db, tmp_path):
    from radassist.catalog import catalog_from_db
    from radassist.training.dataset import build_dataset, superseded_codes

    seed_decisions(db, tmp_path, per_protocol=3, override={"CT-LSPINE-WO": "MR-LSPINE-WO"})
    with db.session() as session:
        assert superseded_codes(session) == {"CT-LSPINE-WO"}
        ds = build_dataset(session, catalog_from_db(session), replay_per_protocol=2, corpus_per_protocol=0)
    replayed = {e.code for e in ds.train[-ds.replay:]}
    assert "CT-LSPINE-WO" not in replayed and "MR-LSPINE-WO" in replayed
