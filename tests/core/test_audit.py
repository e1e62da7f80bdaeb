"""Audit trail: append-only triggers, tamper detection, queries, export in three formats, CLI."""
from __future__ import annotations

import csv
import json
import os
import sqlite3
import stat

import pytest

from radassist import audit
from radassist.access import ADMIN, AUDITOR, RADIOLOGIST, Actor, PermissionDenied

ADMIN_ACTOR = Actor("boss", ADMIN)
AUDITOR_ACTOR = Actor("aud", AUDITOR)
RAD = Actor("rad", RADIOLOGIST)


@pytest.fixture
def db(tmp_path):
    from radassist.store import open_database

    database = open_database(tmp_path / "t.db")
    yield database
    database.dispose()


@pytest.fixture
def filled(db):
    """Ten events of various kinds."""
    with db.session() as s:
        audit.record_event(s, RAD, "signin", entity="user:rad")
        for i in range(5):
            audit.record_event(s, RAD, "order.open", entity=f"order:A{i}")
        audit.record_event(s, RAD, "decision.accept", entity="order:A0", details={"final": "CT-HEAD-WO"})
        audit.record_event(s, ADMIN_ACTOR, "settings.change", entity="settings", details={"changed": {"x": 1}})
        audit.record_event(s, Actor("ghost", "unknown"), "signin", entity="user:ghost", outcome="failure",
                           details={"reason": "unknown user"})
        audit.record_event(s, RAD, "signout", entity="user:rad")
    return db


def raw(db) -> sqlite3.Connection:
    """A connection from outside the app, as someone tampering with the file would open it."""
    return sqlite3.connect(db.path, isolation_level=None)


def verify(db) -> audit.VerifyResult:
    with db.session() as s:
        return audit.verify_chain(s)


def drop_triggers(conn):
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("DROP TRIGGER audit_events_no_delete")


def test_intact_chain_verifies(filled):
    result = verify(filled)
    assert result.ok and result.count == 10 and result.first_bad_id is None


def test_empty_log_verifies(db):
    assert verify(db) == audit.VerifyResult(True, 0, None, "", audit.GENESIS_HASH)


def test_triggers_refuse_update_and_delete(filled):
    conn = raw(filled)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit_events SET username = ? WHERE id = ?", ("mallory", 3))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_events WHERE id = ?", (3,))
    conn.close()
    assert verify(filled).ok


def test_edited_row_is_detected(filled):
    conn = raw(filled)
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("UPDATE audit_events SET username = ? WHERE id = ?", ("mallory", 4))
    conn.close()
    result = verify(filled)
    assert not result.ok and result.first_bad_id == 4 and "altered" in result.reason


def test_edited_row_with_recomputed_hash_breaks_the_next_link(filled):
    conn = raw(filled)
    conn.execute("DROP TRIGGER audit_events_no_update")
    row = conn.execute("SELECT recorded_at, username, role, action, entity, outcome, details, prev_hash "
                       "FROM audit_events WHERE id = 4").fetchone()
    forged = audit.event_hash(row[7], row[0], "mallory", *row[2:7])
    conn.execute("UPDATE audit_events SET username = ?, hash = ? WHERE id = 4", ("mallory", forged))
    conn.close()
    result = verify(filled)
    # The HMAC catches the re-hashed event itself (without the key, the next link would break).
    assert not result.ok and result.first_bad_id == 4 and "site key" in result.reason


def test_deleted_row_is_detected_after_dropping_the_triggers(filled):
    conn = raw(filled)
    drop_triggers(conn)
    conn.execute("DELETE FROM audit_events WHERE id = ?", (6,))
    conn.close()
    result = verify(filled)
    assert not result.ok and result.first_bad_id == 7 and "event 6 missing" in result.reason


def test_deleted_first_row_is_detected(filled):
    conn = raw(filled)
    drop_triggers(conn)
    conn.execute("DELETE FROM audit_events WHERE id = 1")
    conn.close()
    result = verify(filled)
    assert not result.ok and result.first_bad_id == 2


def test_deleted_and_renumbered_rows_are_detected(filled):
    """Delete a row and shift later ids down to hide the gap: the chain link still breaks."""
    conn = raw(filled)
    drop_triggers(conn)
    conn.execute("DELETE FROM audit_events WHERE id = 5")
    conn.execute("UPDATE audit_events SET id = id - 1 WHERE id > 5")
    conn.close()
    result = verify(filled)
    assert not result.ok and result.first_bad_id == 5 and "chain" in result.reason


def _insert(conn, id_, recorded_at, prev_hash, username="mallory", action="order.open"):
    vals = [recorded_at, username, RADIOLOGIST, action, "order:X", "success", "{}"]
    h = audit.event_hash(prev_hash, *vals)
    conn.execute("INSERT INTO audit_events (id, recorded_at, username, role, action, entity, outcome, details, "
                 "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (id_, *vals, prev_hash, h))


def test_insert_chained_to_an_old_event_is_detected(filled):
    """A correctly hashed row appended but chained to event 3 (inserted out of order)."""
    conn = raw(filled)
    prev, t = conn.execute("SELECT hash, recorded_at FROM audit_events WHERE id = 3").fetchone()
    _insert(conn, 11, t, prev)
    conn.close()
    result = verify(filled)
    assert not result.ok and result.first_bad_id == 11 and "out of order" in result.reason


def test_insert_with_an_earlier_time_is_detected(filled):
    """Backdating: chained correctly to the head, but recorded before its predecessor."""
    conn = raw(filled)
    head = conn.execute("SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1").fetchone()[0]
    _insert(conn, 11, "2020-01-01T00:00:00.000000Z", head)
    conn.close()
    result = verify(filled)
    assert not result.ok and result.first_bad_id == 11 and "before" in result.reason


def test_insert_into_a_gap_is_detected(filled):
    conn = raw(filled)
    drop_triggers(conn)
    prev, t = conn.execute("SELECT hash, recorded_at FROM audit_events WHERE id = 4").fetchone()
    conn.execute("DELETE FROM audit_events WHERE id = 5")
    _insert(conn, 5, t, prev)  # a forged row, correctly hashed and chained to event 4
    conn.close()
    result = verify(filled)
    # Without the site key the forger cannot sign it: the forged row itself is named.
    assert not result.ok and result.first_bad_id == 5 and "no HMAC" in result.reason


def test_insert_with_id_gap_is_detected(filled):
    conn = raw(filled)
    head, t = conn.execute("SELECT hash, recorded_at FROM audit_events ORDER BY id DESC LIMIT 1").fetchone()
    _insert(conn, 50, t, head)
    conn.close()
    result = verify(filled)
    assert not result.ok and result.first_bad_id == 50 and "missing" in result.reason


def test_times_are_utc_iso_and_monotonic(filled):
    with filled.session() as s:
        evs = audit.query_events(s)
    times = [e.recorded_at for e in evs]
    assert times == sorted(times)
    assert all(t.endswith("Z") and "T" in t for t in times)


def test_query_filters(filled):
    with filled.session() as s:
        assert len(audit.query_events(s)) == 10
        assert {e.username for e in audit.query_events(s, username="rad")} == {"rad"}
        assert len(audit.query_events(s, action="order.open")) == 5
        assert len(audit.query_events(s, action="order.*")) == 5
        assert len(audit.query_events(s, action="order.open", limit=2)) == 2
        assert audit.query_events(s, newest_first=True)[0].action == "signout"
        first = audit.query_events(s)[0].recorded_at
        assert audit.query_events(s, until="2000-01-01") == []
        assert len(audit.query_events(s, since=first[:10])) == 10
        assert len(audit.query_events(s, since=first[:10], until=first[:10])) == 10  # whole day included
        assert audit.count_events(s, action="signin") == 2
        assert "ghost" in audit.distinct_values(s, "username")
    with pytest.raises(ValueError):
        audit.to_iso("yesterday")


# --- export -----------------------------------------------------------------------------------

def _export(db, actor, fmt, path, **kw):
    with db.session() as s:
        return audit.export_events(s, actor, fmt, path, **kw)


def test_export_requires_permission_and_is_audited(filled, tmp_path):
    with pytest.raises(PermissionDenied):
        _export(filled, RAD, "csv", tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()
    result = _export(filled, AUDITOR_ACTOR, "csv", tmp_path / "a.csv")
    # 10 events and the refusal of the radiologist's export; the export itself is audited once
    # the file is complete, so its own event comes after
    assert result.count == 11
    with filled.session() as s:
        last = audit.query_events(s, newest_first=True, limit=1)[0]
    assert (last.action, last.username, last.entity) == ("audit.export", "aud", "file:a.csv")
    assert json.loads(last.details)["format"] == "csv" and json.loads(last.details)["count"] == 11
    assert stat.S_IMODE(os.stat(tmp_path / "a.csv").st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_csv_round_trip(filled, tmp_path):
    _export(filled, AUDITOR_ACTOR, "csv", tmp_path / "a.csv")
    with filled.session() as s:
        expected = audit.query_events(s)[:-1]  # all but the export's own event
    with open(tmp_path / "a.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    back = [audit.AuditEvent(**{**r, "id": int(r["id"])}) for r in rows]
    assert back == expected


def test_json_round_trip(filled, tmp_path):
    _export(filled, ADMIN_ACTOR, "json", tmp_path / "a.json")
    with filled.session() as s:
        expected = audit.query_events(s)[:-1]  # all but the export's own event
    doc = json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))
    assert doc["count"] == len(doc["events"]) == len(expected)
    back = [audit.AuditEvent(**{**e, "details": json.dumps(e["details"], sort_keys=True, separators=(",", ":"),
                                                           ensure_ascii=False)}) for e in doc["events"]]
    assert back == expected
    # The hashes in the export can be checked without the database.
    for e in back:
        assert audit.event_hash(e.prev_hash, e.recorded_at, e.username, e.role, e.action, e.entity,
                                e.outcome, e.details) == e.hash


def test_fhir_bundle_validates_and_has_one_entry_per_event(filled, tmp_path):
    from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
    from fhir.resources.R4B.bundle import Bundle

    _export(filled, AUDITOR_ACTOR, "fhir", tmp_path / "a.json")  # a first export, to see its kind
    _export(filled, AUDITOR_ACTOR, "fhir", tmp_path / "a.json")
    with filled.session() as s:
        expected = audit.query_events(s)[:-1]  # all but the last export's own event
    doc = json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))
    bundle = Bundle.model_validate(doc)
    assert bundle.type == "collection"
    assert len(bundle.entry) == len(expected) == 11
    by_id = {e.id: e for e in expected}
    for entry in doc["entry"]:
        res = FhirAuditEvent.model_validate(entry["resource"])
        event = by_id[int(res.id.split("-")[1])]
        assert res.agent[0].who.display == event.username
        assert res.agent[0].role[0].coding[0].code == event.role
        assert res.source.observer.display == "RadAssist"
        assert res.subtype[-1].code == event.action
        assert res.action in {"C", "R", "U", "D", "E"}
        assert res.outcome == ("0" if event.outcome == "success" else "4")
        assert res.recorded is not None
        if event.entity:
            assert res.entity[0].what.identifier.value == event.entity
    kinds = {(e["resource"]["subtype"][-1]["code"], e["resource"]["type"]["code"], e["resource"]["action"])
             for e in doc["entry"]}
    assert ("signin", "110114", "E") in kinds
    assert ("order.open", "110110", "R") in kinds
    assert ("decision.accept", "110110", "C") in kinds
    assert ("audit.export", "110106", "R") in kinds
    assert ("settings.change", "110100", "U") in kinds


def test_fhir_export_of_an_empty_range_is_a_valid_bundle(filled, tmp_path):
    from fhir.resources.R4B.bundle import Bundle

    result = _export(filled, AUDITOR_ACTOR, "fhir", tmp_path / "empty.json", since="2001-01-01",
                     until="2001-01-02")
    assert result.count == 0
    Bundle.model_validate(json.loads((tmp_path / "empty.json").read_text()))


def test_export_date_range_and_progress(filled, tmp_path):
    calls = []
    with filled.session() as s:
        day = audit.query_events(s)[0].recorded_at[:10]
    result = _export(filled, AUDITOR_ACTOR, "json", tmp_path / "r.json", since=day, until=day,
                     progress=lambda done, total: calls.append((done, total)))
    assert result.count == 10
    assert calls[0] == (0, 10) and calls[-1] == (10, 10)


def test_export_cancel_leaves_nothing(filled, tmp_path):
    with pytest.raises(audit.ExportCancelled):
        _export(filled, AUDITOR_ACTOR, "csv", tmp_path / "c.csv", progress=lambda d, t: False)
    assert list(tmp_path.glob("*c.csv*")) == []


def test_export_to_a_missing_folder_fails_before_anything_happens(filled, tmp_path):
    with pytest.raises(FileNotFoundError):
        _export(filled, AUDITOR_ACTOR, "csv", tmp_path / "missing-dir" / "x.csv")
    # nothing written, nothing to audit: the folder check happens before the event
    result = verify(filled)
    assert result.ok and result.count == 10


# --- CLI ----------------------------------------------------------------------------------------

def test_cli_verify_exit_codes(filled, capsys):
    from radassist.cli import main

    assert main(["audit", "verify", "--db", str(filled.path)]) == 0
    assert "10 events" in capsys.readouterr().out
    conn = raw(filled)
    drop_triggers(conn)
    conn.execute("DELETE FROM audit_events WHERE id = 6")
    conn.close()
    assert main(["audit", "verify", "--db", str(filled.path)]) == 1
    out = capsys.readouterr().out
    assert "event 7" in out and "missing" in out


def test_cli_export_needs_auditor_or_admin(db, tmp_path, monkeypatch, capsys):
    import io

    from radassist import users
    from radassist.cli import main

    with db.session() as s:
        users.bootstrap_admin(s, "boss", "Chief-Key-81")
        users.create_user(s, ADMIN_ACTOR, "aud", "Checker-Key-83", AUDITOR)
        users.create_user(s, ADMIN_ACTOR, "rad", "Reader-Key-82", RADIOLOGIST)
    dbp = str(db.path)

    def run(user, password, *extra):
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        return main(["audit", "export", "--format", "fhir", "--out", str(tmp_path / f"{user}.json"),
                     "--user", user, "--password-stdin", "--db", dbp, *extra])

    assert run("rad", "Reader-Key-82") == 3
    assert run("aud", "wrong-pass") == 3
    assert run("aud", "Checker-Key-83", "--since", "2000-01-01") == 0
    assert "exported" in capsys.readouterr().out
    assert run("aud", "Checker-Key-83", "--since", "not-a-date") == 2
    assert main(["audit", "verify", "--db", dbp]) == 0
