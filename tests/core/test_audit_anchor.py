"""Issue 11, item 5: the audit chain is anchored (site-key HMAC + checkpoints).

Each test reproduces a tampering that `audit verify` missed before: deleting the last events,
a consistent rewrite of the whole chain, a forged append (even with the triggers in place), a
forged insert with the chain recomputed; plus refused actions leaving no trace and exports
logged as done when they were not.
"""
from __future__ import annotations

import io
import json
import os
import sqlite3
import stat
import sys

import pytest

from radassist import audit
from radassist.access import ADMIN, AUDITOR, RADIOLOGIST, Actor, PermissionDenied

RAD = Actor("rad", RADIOLOGIST)
AUD = Actor("aud", AUDITOR)
BOSS = Actor("boss", ADMIN)


@pytest.fixture
def adb(tmp_path):
    from radassist.store import open_database

    database = open_database(tmp_path / "a.db")
    with database.session() as s:
        audit.record_event(s, RAD, "signin", entity="user:rad")
        audit.record_event(s, Actor("unknown", "unknown"), "signin", entity="user:unknown", outcome="failure",
                           details={"reason": "unknown user"})
        for i in range(6):
            audit.record_event(s, RAD, "order.open", entity=f"order:A{i}")
        audit.record_event(s, RAD, "import", entity="file:x.jsonl", details={"imported": 30})
        audit.record_event(s, RAD, "signout", entity="user:rad")
    yield database
    database.dispose()


def raw(db) -> sqlite3.Connection:
    return sqlite3.connect(db.path, isolation_level=None)


def drop_triggers(conn):
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("DROP TRIGGER audit_events_no_delete")


def verify(db, against=None) -> audit.VerifyResult:
    with db.session() as s:
        return audit.verify_against(s, against) if against else audit.verify_chain(s)


def checkpoint(db, path):
    with db.session() as s:
        return audit.write_checkpoint(s, path)


def rewrite_chain(conn, rows):
    """What a forger with the database (but not the key) does: re-hash every row, keep the links."""
    conn.execute("DELETE FROM audit_events")
    prev = audit.GENESIS_HASH
    for i, r in enumerate(rows, 1):
        h = audit.event_hash(prev, *r)
        conn.execute("INSERT INTO audit_events (id, recorded_at, username, role, action, entity, outcome, "
                     "details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (i, *r, prev, h))
        prev = h


def content(conn):
    return [list(r) for r in conn.execute(
        "SELECT recorded_at, username, role, action, entity, outcome, details FROM audit_events ORDER BY id")]


# --- the key -----------------------------------------------------------------------------------

def test_key_file_is_created_on_first_use_0600_next_to_the_database(adb):
    key_path = adb.path.with_name(adb.path.name + ".audit-key")
    assert key_path.exists() and stat.S_IMODE(key_path.stat().st_mode) == 0o600
    data = json.loads(key_path.read_text())
    assert len(bytes.fromhex(data["key"])) == 32 and data["anchored_from"] == 1
    result = verify(adb)
    assert result.ok and result.anchored == result.count == 10 and result.unanchored is None
    with raw(adb) as conn:
        assert conn.execute("SELECT COUNT(*) FROM audit_events WHERE hmac IS NULL").fetchone()[0] == 0
    assert data["key"] not in adb.path.read_bytes().hex()  # the key is not in the database


def test_key_path_is_configurable(tmp_path, monkeypatch):
    from radassist.store import open_database

    monkeypatch.setenv("RADASSIST_AUDIT_KEY_FILE", str(tmp_path / "keys" / "site.key"))
    db = open_database(tmp_path / "b.db")
    with db.session() as s:
        audit.record_event(s, RAD, "signin")
    assert (tmp_path / "keys" / "site.key").exists() and not (tmp_path / "b.db.audit-key").exists()
    assert verify(db).ok
    db.dispose()


def test_a_lost_key_is_reported_and_not_silently_replaced(adb):
    key_path = adb.path.with_name(adb.path.name + ".audit-key")
    saved = key_path.read_bytes()
    key_path.unlink()
    audit._KEYS.clear()  # a new process
    result = verify(adb)
    assert not result.ok and "missing" in result.reason
    with pytest.raises(audit.AuditKeyError, match="missing"), adb.session() as s:
        audit.record_event(s, RAD, "signin")
    assert not key_path.exists()
    key_path.write_bytes(saved)
    audit._KEYS.clear()
    assert verify(adb).ok


# --- tampering that verify missed before ------------------------------------------------------

@pytest.mark.parametrize("n", [1, 3])
def test_deleting_the_last_events_is_detected_against_a_checkpoint(adb, tmp_path, n):
    cp = tmp_path / "cp.json"
    checkpoint(adb, cp)
    assert stat.S_IMODE(cp.stat().st_mode) == 0o600
    with raw(adb) as conn:
        drop_triggers(conn)
        conn.execute("DELETE FROM audit_events WHERE id > ?", (10 - n,))
    assert verify(adb).ok  # the chain alone cannot show a truncated tail ...
    result = verify(adb, cp)  # ... the checkpoint does
    assert not result.ok and "truncated" in result.reason and result.first_bad_id == 11 - n


def test_events_after_the_checkpoint_are_fine(adb, tmp_path):
    cp = tmp_path / "cp.json"
    checkpoint(adb, cp)
    with adb.session() as s:
        audit.record_event(s, RAD, "signin")
    result = verify(adb, cp)
    assert result.ok and result.count == 11


def test_a_consistent_rewrite_of_the_chain_is_detected(adb, tmp_path):
    """A failed sign-in removed and the import count changed, every hash recomputed."""
    cp = tmp_path / "cp.json"
    checkpoint(adb, cp)
    with raw(adb) as conn:
        drop_triggers(conn)
        rows = [r for r in content(conn) if r[5] != "failure"]
        for r in rows:
            if r[3] == "import":
                r[6] = json.dumps({"imported": 3}, separators=(",", ":"))
        rewrite_chain(conn, rows)
    result = verify(adb)
    assert not result.ok and result.first_bad_id == 1 and "HMAC" in result.reason
    assert not verify(adb, cp).ok


def test_a_forged_append_is_detected_even_with_the_triggers_in_place(adb):
    with raw(adb) as conn:
        head_id, head, t = conn.execute(
            "SELECT id, hash, recorded_at FROM audit_events ORDER BY id DESC LIMIT 1").fetchone()
        vals = [t, "rad", RADIOLOGIST, "decision.accept", "order:A1", "success", "{}"]
        conn.execute("INSERT INTO audit_events (id, recorded_at, username, role, action, entity, outcome, "
                     "details, prev_hash, hash, hmac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (head_id + 1, *vals, head, audit.event_hash(head, *vals), "ab" * 32))
    result = verify(adb)
    assert not result.ok and result.first_bad_id == 11 and "site key" in result.reason


def test_a_forged_append_without_hmac_is_detected(adb):
    with raw(adb) as conn:
        head, t = conn.execute("SELECT hash, recorded_at FROM audit_events ORDER BY id DESC LIMIT 1").fetchone()
        vals = [t, "rad", RADIOLOGIST, "decision.accept", "order:A1", "success", "{}"]
        conn.execute("INSERT INTO audit_events (id, recorded_at, username, role, action, entity, outcome, "
                     "details, prev_hash, hash) VALUES (11, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (*vals, head, audit.event_hash(head, *vals)))
    result = verify(adb)
    assert not result.ok and result.first_bad_id == 11 and "no HMAC" in result.reason


def test_a_forged_insert_in_the_middle_with_the_chain_recomputed_is_detected(adb):
    with raw(adb) as conn:
        drop_triggers(conn)
        rows = content(conn)
        rows.insert(4, [rows[3][0], "rad", RADIOLOGIST, "decision.accept", "order:A2", "success", "{}"])
        rewrite_chain(conn, rows)
    result = verify(adb)
    assert not result.ok and result.first_bad_id == 1


def test_keeping_the_old_hmacs_after_a_rewrite_does_not_help(adb):
    with raw(adb) as conn:
        drop_triggers(conn)
        macs = [r[0] for r in conn.execute("SELECT hmac FROM audit_events ORDER BY id")]
        rows = content(conn)
        rows[5][1] = "mallory"
        rewrite_chain(conn, rows)
        for i, mac in enumerate(macs, 1):
            conn.execute("UPDATE audit_events SET hmac = ? WHERE id = ?", (mac, i))
    result = verify(adb)
    assert not result.ok and result.first_bad_id == 6 and "site key" in result.reason


def test_an_altered_checkpoint_is_detected(adb, tmp_path):
    cp = tmp_path / "cp.json"
    data = checkpoint(adb, cp)
    data["head_id"], data["count"] = 5, 5
    cp.write_text(json.dumps(data))
    result = verify(adb, cp)
    assert not result.ok and "checkpoint" in result.reason and "altered" in result.reason


def test_no_checkpoint_of_a_broken_log(adb, tmp_path):
    with raw(adb) as conn:
        conn.execute("DROP TRIGGER audit_events_no_update")
        conn.execute("UPDATE audit_events SET username = 'x' WHERE id = 3")
    with pytest.raises(audit.CheckpointError, match="broken at event 3"):
        checkpoint(adb, tmp_path / "cp.json")
    assert not (tmp_path / "cp.json").exists()


# --- old databases ---------------------------------------------------------------------------

def test_an_old_database_keeps_verifying_and_names_its_unanchored_events(tmp_path):
    from radassist.store import open_database

    path = tmp_path / "old.db"
    old = open_database(path, revision="0005")
    with raw(old) as conn:  # events as the previous version wrote them (no hmac column)
        prev = audit.GENESIS_HASH
        for i in range(1, 5):
            vals = [f"2026-01-0{i}T00:00:00.000000Z", "rad", RADIOLOGIST, "order.open", f"order:{i}", "success",
                    "{}"]
            h = audit.event_hash(prev, *vals)
            conn.execute("INSERT INTO audit_events (id, recorded_at, username, role, action, entity, outcome, "
                         "details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (i, *vals, prev, h))
            prev = h
    old.dispose()
    db = open_database(path)  # migrated to 0006
    result = verify(db)
    assert result.ok and result.count == 4 and result.anchored == 0 and result.unanchored == (1, 4)
    assert "events 1-4" in result.note
    with db.session() as s:
        audit.record_event(s, RAD, "signin")
    result = verify(db)
    assert result.ok and result.count == 5 and result.anchored == 1 and result.unanchored == (1, 4)
    # once anchoring began, stripping the HMACs (a rewrite that looks "old") is detected
    with raw(db) as conn:
        drop_triggers(conn)
        rows = content(conn)
        rows[4][1] = "mallory"
        rewrite_chain(conn, rows)
    result = verify(db)
    assert not result.ok and result.first_bad_id == 5 and "no HMAC" in result.reason
    db.dispose()


def test_a_rewrite_of_an_old_unanchored_log_is_caught_by_a_checkpoint(tmp_path):
    from radassist.store import open_database

    path = tmp_path / "old.db"
    db = open_database(path, revision="0005")
    with raw(db) as conn:
        rewrite_chain(conn, [[f"2026-01-0{i}T00:00:00.000000Z", "rad", RADIOLOGIST, "order.open", f"o:{i}",
                              "success", "{}"] for i in range(1, 4)])
    db.dispose()
    db = open_database(path)
    cp = tmp_path / "cp.json"
    checkpoint(db, cp)
    with raw(db) as conn:
        rows = content(conn)
        drop_triggers(conn)
        rows[1][1] = "mallory"
        rewrite_chain(conn, rows)
    assert verify(db).ok  # hash chain only: consistent
    result = verify(db, cp)
    assert not result.ok and "rewritten" in result.reason
    db.dispose()


# --- refusals and exports ----------------------------------------------------------------------

def test_refused_actions_are_audited_in_their_own_transaction(adb, tmp_path):
    from radassist import users

    with pytest.raises(PermissionDenied), adb.session() as s:
        audit.record_event(s, RAD, "order.open", entity="order:Z")  # rolled back with the refusal
        users.create_user(s, RAD, "eve", "Tulip-Harbor-93", ADMIN)
    with pytest.raises(PermissionDenied), adb.session() as s:
        audit.export_events(s, RAD, "json", tmp_path / "x.json")
    with adb.session() as s:
        events = audit.query_events(s)
    assert [e.entity for e in events if e.entity == "order:Z"] == []
    refused = [e for e in events if e.action == "access.refused"]
    assert [(e.username, e.role, e.outcome, e.entity) for e in refused] == [
        ("rad", RADIOLOGIST, "refused", "permission:users.manage"),
        ("rad", RADIOLOGIST, "refused", "permission:audit.export")]
    assert verify(adb).ok


def test_refused_cli_actions_are_audited(tmp_path, monkeypatch, capsys):
    from radassist import users
    from radassist.cli import main
    from radassist.store import open_database

    db_path = tmp_path / "c.db"
    db = open_database(db_path)
    with db.session() as s:
        users.seed_demo_users(s)
    bad = tmp_path / "cat.csv"
    bad.write_text("code,name,modality,body_region,contrast,indications\nX,Y,CT,Head,none,z\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("rad-demo-1\n"))
    assert main(["catalog", "import", str(bad), "--db", str(db_path), "--user", "rad", "--password-stdin"]) == 3
    capsys.readouterr()
    with db.session() as s:
        refused = audit.query_events(s, action="access.refused")
    assert [(e.username, e.entity) for e in refused] == [("rad", "permission:catalog.edit")]
    db.dispose()


def test_export_to_a_directory_fails_and_is_not_logged(adb, tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError), adb.session() as s:
        audit.export_events(s, AUD, "csv", tmp_path / "dir")
    with adb.session() as s:
        assert audit.count_events(s, action="audit.export") == 0
    assert list((tmp_path / "dir").iterdir()) == [] and not list(tmp_path.glob(".*.tmp"))


def test_a_failing_export_leaves_no_file_and_no_success_event(adb, tmp_path, monkeypatch):
    def broken_writer(fh, events, actor, lo, hi):
        fh.write("partial")
        raise OSError("disk full")

    monkeypatch.setitem(audit._WRITERS, "csv", broken_writer)
    with pytest.raises(OSError, match="disk full"), adb.session() as s:
        audit.export_events(s, AUD, "csv", tmp_path / "out.csv")
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name) == []
    with adb.session() as s:
        assert audit.count_events(s, action="audit.export") == 0


def test_a_killed_exports_temporary_file_is_removed_by_the_next_export(adb, tmp_path):
    stale = tmp_path / ".out.csv.abc123.tmp"
    stale.write_text("x" * 1000)
    os.utime(stale, (0, 0))
    with adb.session() as s:
        audit.export_events(s, AUD, "csv", tmp_path / "out.csv")
    assert not stale.exists() and (tmp_path / "out.csv").exists()


def test_csv_export_escapes_formula_cells(adb, tmp_path):
    import csv

    with adb.session() as s:
        audit.record_event(s, Actor("=HYPERLINK(1)", RADIOLOGIST), "signin", entity="@SUM(A1)")
        audit.export_events(s, AUD, "csv", tmp_path / "out.csv")
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as fh:
        last = list(csv.DictReader(fh))[-1]
    assert last["username"] == "'=HYPERLINK(1)" and last["entity"] == "'@SUM(A1)"


# --- the command line ---------------------------------------------------------------------------

def test_cli_checkpoint_and_verify_against(adb, tmp_path, capsys):
    from radassist.cli import main

    cp = tmp_path / "head.json"
    assert main(["audit", "checkpoint", "--db", str(adb.path), "--out", str(cp)]) == 0
    assert "signed with the site key" in capsys.readouterr().out
    assert main(["audit", "verify", "--db", str(adb.path), "--against", str(cp)]) == 0
    assert "matches the checkpoint" in capsys.readouterr().out
    with raw(adb) as conn:
        drop_triggers(conn)
        conn.execute("DELETE FROM audit_events WHERE id = 10")
    assert main(["audit", "verify", "--db", str(adb.path)]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", "--db", str(adb.path), "--against", str(cp)]) == 1
    assert "truncated" in capsys.readouterr().out
    assert main(["audit", "verify", "--db", str(adb.path), "--against", str(tmp_path / "nope.json")]) == 2
    assert "cannot read the checkpoint" in capsys.readouterr().err


# --- speed ------------------------------------------------------------------------------------

def test_events_appended_one_transaction_each_and_in_bulk_all_anchor_and_verify(db):
    """Each event in its own transaction (as the app records them) and many in one (an import): every
    one is anchored and the chain verifies. Speed is bench/bench_audit.py's job, not a test's."""
    for i in range(50):
        with db.session() as s:
            audit.record_event(s, RAD, "order.open", entity=f"order:{i}")
    with db.session() as s:
        for i in range(50, 2000):
            audit.record_event(s, RAD, "order.open", entity=f"order:{i}")
    result = verify(db)
    assert result.ok and result.anchored == 2000
