import os
import sqlite3
import stat

import pytest
from sqlalchemy import select, text

from radassist.store import DecisionRow, OrderRow, head_revision, open_database


def test_new_database_is_migrated_wal_and_private(tmp_path):
    path = tmp_path / "sub" / "r.db"
    db = open_database(path)
    assert db.revision() == head_revision()
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_head_revision_read_from_the_scripts_is_alembics_head():
    """The at-head check at every start reads the scripts without Alembic; it must agree with Alembic."""
    from alembic.script import ScriptDirectory

    from radassist.store.database import _alembic_config, _script_heads

    scripts = ScriptDirectory.from_config(_alembic_config())
    assert _script_heads() == frozenset(scripts.get_heads())
    assert head_revision() == scripts.get_current_head()


def test_opening_a_database_at_the_head_does_not_import_alembic(tmp_path):
    """Every start after the first: one query, no Alembic (its import alone costs ~0.25 s)."""
    import subprocess
    import sys

    path = tmp_path / "r.db"
    open_database(path).dispose()
    code = ("import sys; from radassist.store import open_database; db = open_database(sys.argv[1]); "
            "print(db.revision(), 'alembic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [head_revision(), "False"]


def test_older_database_is_migrated_and_keeps_its_data(tmp_path):
    path = tmp_path / "old.db"
    old = open_database(path, revision="0001")
    assert old.revision() == "0001"
    with old.session() as s:
        s.add(OrderRow(accession="A1", ordered_exam="CT HEAD", clinical_notes="fall", sex="F", priority="STAT"))
    old.dispose()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    assert "users" not in tables

    db = open_database(path)
    assert db.revision() == head_revision()
    with db.session() as s:
        assert s.scalar(select(OrderRow.accession)) == "A1"
        s.execute(text("select count(*) from users")).scalar()


def test_committed_row_is_visible_to_a_second_connection(db):
    with db.session() as s:
        order = OrderRow(accession="X", ordered_exam="US RUQ", clinical_notes="", sex="M", priority="ROUTINE")
        s.add(order)
        s.flush()
        s.add(DecisionRow(order_id=order.id, username="rad", final_code="US-RUQ", action="accepted", comment=""))
    other = open_database(db.path)
    with other.session() as s:
        assert s.scalar(select(DecisionRow.final_code)) == "US-RUQ"


def test_failed_transaction_rolls_back(db):
    with pytest.raises(RuntimeError):
        with db.session() as s:
            s.add(OrderRow(accession="Y", ordered_exam="CT", clinical_notes="", sex="M", priority="STAT"))
            s.flush()
            raise RuntimeError("boom")
    with db.session() as s:
        assert s.scalar(select(OrderRow).where(OrderRow.accession == "Y")) is None


def test_database_errors_never_show_sql_parameters(db, caplog):
    """Issue 11: an IntegrityError used to print the statement's parameters (clinical notes) to stderr."""
    import logging

    from sqlalchemy.exc import IntegrityError

    notes = "Jane Roe, HIV positive, anaphylaxis to iodinated contrast"
    with db.session() as s:
        s.add(OrderRow(accession="H1", ordered_exam="CT", clinical_notes="fall", sex="F", priority="STAT"))
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    db.engine.echo = True  # even with SQL logging on, parameters stay hidden
    try:
        with pytest.raises(IntegrityError) as info:
            with db.session() as s:
                s.add(OrderRow(accession="H1", ordered_exam="CT", clinical_notes=notes, sex="F", priority="STAT"))
    finally:
        db.engine.echo = False
    assert "UNIQUE constraint failed" in str(info.value)
    assert notes not in str(info.value) and "Jane Roe" not in repr(info.value)
    assert "hidden due to hide_parameters" in str(info.value)
    assert caplog.records and "Jane Roe" not in caplog.text


def test_audit_event_row_maps_the_hmac_column(db):
    from radassist import audit
    from radassist.access import SYSTEM
    from radassist.store.models import AuditEventRow

    with db.session() as s:
        audit.record_event(s, SYSTEM, "test.event")
    with db.session() as s:
        row = s.scalar(select(AuditEventRow))
        assert row.hmac is not None and len(row.hmac) == 64
        assert row.hmac == audit.site_key(s).mac(row.id, row.hash)


def test_busy_timeout_and_wal_on_every_connection(db):
    from radassist.store.database import BUSY_TIMEOUT_S

    for _ in range(2):
        with db.engine.connect() as conn:
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == int(BUSY_TIMEOUT_S * 1000)
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_immediate_session_holds_the_write_lock_from_the_start(db):
    """BEGIN IMMEDIATE: a second writer waits (here: gives up after its short timeout) even though
    the first transaction has only read so far."""
    with db.session(immediate=True) as s:
        s.execute(text("SELECT count(*) FROM orders")).scalar()
        other = sqlite3.connect(db.path, timeout=0.2)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("INSERT INTO settings (key, value_json, updated_at, updated_by) "
                          "VALUES ('k', '1', '2026-01-01', 'x')")
        other.close()
    with db.session() as s:
        assert s.execute(text("SELECT count(*) FROM settings WHERE key = 'k'")).scalar() == 0
