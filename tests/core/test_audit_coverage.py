"""Every action the audit requirement lists leaves an event, through the core services on a real
database, and the chain verifies afterwards (no note text, no password in any event)."""
from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys

import pytest

from radassist import audit, registry, users
from radassist.access import ADMIN, AUDITOR, RADIOLOGIST, Actor, PermissionDenied
from radassist.catalog import ensure_catalog
from radassist.ingest import import_files
from radassist.settings import load_settings, save_settings
from radassist.worklist import DecisionInput, open_order, record_decision

RAD = Actor("rad", RADIOLOGIST)
ADM = Actor("admin", ADMIN)
AUD = Actor("auditor", AUDITOR)
NOTE = "Secret note text: fall on anticoagulation, Jane Doe"
ORDERS = [
    {"accession": "C1", "ordered_exam": "CT HEAD", "priority": "ROUTINE", "age": 70, "sex": "F",
     "clinical_notes": NOTE, "patient_name": "Doe, Jane", "mrn": "MRN-991", "ordered_at": "2024-01-01T08:00:00Z"},
    {"accession": "C2", "ordered_exam": "CT CHEST", "priority": "STAT", "age": 50, "sex": "M",
     "clinical_notes": "Pulmonary embolism suspected", "patient_name": "Roe, Rick", "mrn": "MRN-992",
     "ordered_at": "2024-01-01T09:00:00Z"},
]
PASSWORDS = ("rad-demo-1", "admin-demo-1", "audit-demo-1", "wrong-password-1", "new-password-42", "Ward-Key-84")

# issue 6: the actions that must be audited, and the action names that record them
REQUIRED = {
    "sign-in success": ("signin", "success"),
    "sign-in failure": ("signin", "failure"),
    "lockout": ("user.lockout", "failure"),
    "sign-out": ("signout", "success"),
    "lock": ("session.lock", "success"),
    "unlock": ("session.unlock", "success"),
    "order opened": ("order.open", "success"),
    "decision accept": ("decision.accept", "success"),
    "decision override": ("decision.override", "success"),
    "import": ("import", "success"),
    "export (audit log)": ("audit.export", "success"),
    "export (training data)": ("training.export_data", "success"),
    "settings change": ("settings.change", "success"),
    "training start": ("training.start", "success"),
    "training end": ("training.end", "candidate"),
    "training end (crashed run)": ("training.end", "failed"),
    "promotion": ("model.promote", "success"),
    "rollback": ("model.rollback", "success"),
    "user add": ("user.add", "success"),
    "user disable": ("user.disable", "success"),
    "user enable": ("user.enable", "success"),
    "user password": ("user.passwd", "success"),
    "user unlock": ("user.unlock", "success"),
    "catalog import": ("catalog.import", "success"),
}




def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_every_listed_action_is_audited_and_the_chain_verifies(tmp_path, monkeypatch, capsys):
    from radassist.cli import main
    from radassist.store import open_database

    db_path = tmp_path / "cov.db"
    db = open_database(db_path)
    with db.session() as s:
        ensure_catalog(s)
        users.seed_demo_users(s)

    # sign-in: success, failure, lockout, admin unlock; sign-out; idle lock and unlock
    with db.session() as s:
        assert users.authenticate(s, "rad", "rad-demo-1") == RAD
    with db.session() as s:
        users.create_user(s, ADM, "nurse", "Ward-Key-84", RADIOLOGIST, "N. Urse")
    for _ in range(users.MAX_FAILED_ATTEMPTS):
        with pytest.raises(users.AuthenticationError), db.session() as s:
            users.authenticate(s, "nurse", "wrong-password-1")
    with db.session() as s:
        users.unlock_user(s, ADM, "nurse")
        users.set_password(s, ADM, "nurse", "new-password-42")
        users.disable_user(s, ADM, "nurse")
        users.enable_user(s, ADM, "nurse")
        users.lock_session(s, RAD)
        users.unlock_session(s, RAD, "rad-demo-1")
        users.sign_out(s, RAD)

    # import, open, accept, override (with a comment: only its presence is audited)
    orders = tmp_path / "orders.jsonl"
    orders.write_text("".join(json.dumps(o) + "\n" for o in ORDERS))
    assert import_files(db, [orders], actor=RAD).imported == 2
    from radassist.store.models import OrderRow
    from sqlalchemy import select

    with db.session() as s:
        ids = dict(s.execute(select(OrderRow.accession, OrderRow.id)).all())
        codes = [p.code for p in ensure_catalog(s)][:2]
    from radassist.domain import Suggestion

    with db.session() as s:
        open_order(s, RAD, ids["C1"])
        record_decision(s, RAD, DecisionInput(ids["C1"], codes[0], Suggestion(codes[0], "x", 0.9), "m-1"))
        open_order(s, RAD, ids["C2"])
        record_decision(s, RAD, DecisionInput(ids["C2"], codes[1], Suggestion(codes[0], "x", 0.4), "m-1",
                                              comment=NOTE))

    # settings, training start/end, promotion, rollback, a crashed run
    with db.session() as s:
        assert save_settings(s, ADM, dataclasses.replace(load_settings(s), idle_lock_minutes=5)) == {
            "idle_lock_minutes": 5}
    model_dir = tmp_path / "model-a"
    model_dir.mkdir()
    (model_dir / "head.pt").write_bytes(b"weights")  # hashed at finish, verified at promote
    with db.session() as s:
        registry.start_run(s, ADM, "embedding", "v-a", data={"n": 2}, hyperparams={})
        registry.finish_run(s, ADM, "v-a", registry.CANDIDATE, path=str(model_dir), metrics={"acc": 0.9})
        registry.promote(s, ADM, "v-a", force=True)  # no held-out comparison: the audited override
        registry.rollback(s, ADM, "embedding")
    with db.session() as s:
        registry.start_run(s, ADM, "embedding", "v-crash", data={}, hyperparams={}, pid=_dead_pid())
    with db.session() as s:
        assert registry.reap_dead_runs(s) == 1

    # exports: the audit log (core) and the training data (CLI), catalog import (CLI)
    with db.session() as s:
        audit.export_events(s, AUD, "json", tmp_path / "audit.json")
    monkeypatch.setattr(sys, "stdin", io.StringIO("admin-demo-1\n"))
    assert main(["train", "export-data", "--db", str(db_path), "--user", "admin", "--password-stdin",
                 "--replay", "0", "--out", str(tmp_path / "train.jsonl")]) == 0
    from radassist.paths import RESOURCES_DIR

    monkeypatch.setattr(sys, "stdin", io.StringIO("admin-demo-1\n"))
    assert main(["catalog", "import", str(RESOURCES_DIR / "protocols.csv"), "--db", str(db_path),
                 "--user", "admin", "--password-stdin"]) == 0
    capsys.readouterr()

    with db.session() as s:
        trail = audit.query_events(s)
        result = audit.verify_chain(s)
    assert result.ok, result.reason
    assert result.count == len(trail)
    seen = {(e.action, e.outcome) for e in trail}
    missing = [what for what, key in REQUIRED.items() if key not in seen]
    assert missing == [], f"not audited: {missing}"

    # the decision events carry the codes
    accept = next(e for e in trail if e.action == "decision.accept")
    override = next(e for e in trail if e.action == "decision.override")
    assert accept.details_dict["final"] == codes[0] and accept.details_dict["suggested"] == codes[0]
    assert override.details_dict["final"] == codes[1] and override.details_dict["suggested"] == codes[0]
    assert override.details_dict["has_comment"] is True
    assert {e.entity for e in trail if e.action == "order.open"} == {"order:C1", "order:C2"}
    # every event has UTC time, user, role, action, outcome and a chained hash
    for prev, e in zip([None] + trail[:-1], trail):
        assert e.recorded_at.endswith("Z") and e.username and e.role and e.action and e.outcome
        assert e.prev_hash == (prev.hash if prev else audit.GENESIS_HASH)
    # never note text, patient identifiers or passwords
    text = json.dumps([(e.username, e.entity, e.details) for e in trail])
    for secret in (NOTE, "Pulmonary embolism", "Doe, Jane", "MRN-991", *PASSWORDS):
        assert secret not in text, secret
    db.dispose()


def test_refused_actions_leave_the_trail_intact(tmp_path):
    """Role checks happen in the core: a radiologist's admin calls are refused and change nothing
    but the log, which records each refusal (issue 11: 11 refused attempts left no trace)."""
    from radassist.store import open_database

    db = open_database(tmp_path / "r.db")
    with db.session() as s:
        ensure_catalog(s)
        users.seed_demo_users(s)
        before = audit.count_events(s)
    for call in (lambda s: users.create_user(s, RAD, "x1", "password-x1", RADIOLOGIST),
                 lambda s: users.disable_user(s, RAD, "admin"),
                 lambda s: save_settings(s, RAD, load_settings(s)),
                 lambda s: registry.start_run(s, RAD, "embedding", "v-r", data={}, hyperparams={}),
                 lambda s: registry.rollback(s, AUD, "embedding"),
                 lambda s: audit.export_events(s, RAD, "csv", tmp_path / "x.csv")):
        with pytest.raises(PermissionDenied), db.session() as s:
            call(s)
    with db.session() as s:
        assert audit.count_events(s) == before + 6
        refused = audit.query_events(s, action="access.refused")
        assert audit.verify_chain(s).ok
    assert [(e.username, e.outcome, e.details_dict["permission"]) for e in refused] == [
        ("rad", "refused", "users.manage"), ("rad", "refused", "users.manage"),
        ("rad", "refused", "settings.change"), ("rad", "refused", "training.start"),
        ("auditor", "refused", "model.promote"), ("rad", "refused", "audit.export")]
    assert not (tmp_path / "x.csv").exists()
    db.dispose()
