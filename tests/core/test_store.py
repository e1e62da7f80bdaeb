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
