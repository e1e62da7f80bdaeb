"""Files that hold patient data are owner-only (0600), whatever the umask; SQL stays parameterized."""
from __future__ import annotations

from support import DATA_DIR, REPO, TESTS_DIR  # noqa: F401
import io
import os
import re
import sys
from pathlib import Path

import pytest

from radassist import audit, users
from radassist.access import AUDITOR, Actor

ROOT = REPO




@pytest.fixture
def loose_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_database_wal_and_exports_are_0600(tmp_path, loose_umask, monkeypatch, capsys):
    from radassist.catalog import ensure_catalog
    from radassist.cli import main
    from radassist.store import open_database

    db_path = tmp_path / "sec.db"
    db = open_database(db_path)
    with db.session() as s:
        ensure_catalog(s)
        users.seed_demo_users(s)
    auditor = Actor("auditor", AUDITOR)
    for fmt in audit.FORMATS:
        out = tmp_path / f"audit.{fmt}"
        out.write_text("old")
        out.chmod(0o644)  # an existing, world-readable file is replaced by an owner-only one
        with db.session() as s:
            audit.export_events(s, auditor, fmt, out)
        assert mode(out) == 0o600, fmt
    monkeypatch.setattr(sys, "stdin", io.StringIO("admin-demo-1\n"))
    assert main(["train", "export-data", "--db", str(db_path), "--user", "admin", "--password-stdin",
                 "--replay", "0", "--out", str(tmp_path / "train.jsonl")]) == 0
    capsys.readouterr()
    assert mode(tmp_path / "train.jsonl") == 0o600
    for name in ("sec.db", "sec.db-wal", "sec.db-shm"):
        if (tmp_path / name).exists():
            assert mode(tmp_path / name) == 0o600, name
    db.dispose()
    # reopening tightens a database whose permissions were loosened
    db_path.chmod(0o644)
    open_database(db_path).dispose()
    assert mode(db_path) == 0o600


def test_predict_output_is_0600(tmp_path, loose_umask):
    """`radassist predict --output` quotes safety-flag evidence from the notes."""
    from radassist.commands.predict import _open

    fresh, existing = tmp_path / "p.jsonl", tmp_path / "q.jsonl"
    existing.write_text("old")
    existing.chmod(0o644)
    for path in (fresh, existing):
        with _open(str(path), "w") as fh:
            fh.write("{}\n")
        assert mode(path) == 0o600 and path.read_text() == "{}\n"


_SQL_FSTRING = re.compile(r"""(execute|text|exec_driver_sql)\(\s*f["']""")


def test_no_sql_built_from_f_strings_outside_the_allow_list():
    """SQL takes values as parameters. The two f-strings allowed: audit.distinct_values (column
    checked against a fixed list) and the migrations (constant trigger names)."""
    allowed = {("radassist/audit.py", "SELECT DISTINCT {column} FROM audit_events"),
               ("radassist/store/migrations", "TRIGGER")}
    hits = []
    for path in (ROOT / "radassist").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _SQL_FSTRING.search(line):
                if not any(rel.startswith(prefix) and marker in line for prefix, marker in allowed):
                    hits.append(f"{rel}:{lineno}: {line.strip()}")
    assert hits == []


def test_failed_sign_in_never_records_the_password(tmp_path):
    from radassist.store import open_database

    db = open_database(tmp_path / "pw.db")
    with db.session() as s:
        users.seed_demo_users(s)
    for username, password in (("rad", "Wrong-Secret-77"), ("nobody", "Other-Secret-88"), ("rad", "")):
        with pytest.raises(users.AuthenticationError) as info, db.session() as s:
            users.authenticate(s, username, password)
        if password:
            assert password not in str(info.value)
    with db.session() as s:
        text = repr(audit.query_events(s))
    assert "Wrong-Secret-77" not in text and "Other-Secret-88" not in text
    assert "argon2" not in text  # no hash either
    db.dispose()


# --- issue 11, item 8: SQL parameters never reach logs or stderr -----------------------------

NOTE = "Pt with anaphylaxis to iodinated contrast, MRN-55501 Doe Jane"


def test_database_errors_and_logs_never_show_sql_parameters(tmp_path, caplog):
    """Issue 11: database errors printed the SQL parameters (clinical notes) to stderr."""
    import logging

    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from radassist.store import open_database

    db = open_database(tmp_path / "p.db")
    insert = text("INSERT INTO settings (key, value_json, updated_at, updated_by) VALUES (:k, :v, :t, :u)")
    params = {"k": "dup", "v": NOTE, "t": "2026-01-01 00:00:00", "u": "x"}
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    with db.session() as s:
        s.execute(insert, params)
    with pytest.raises(IntegrityError) as info, db.session() as s:
        s.execute(insert, params)
    assert "UNIQUE constraint failed" in str(info.value)
    assert NOTE not in str(info.value) and "MRN-55501" not in repr(info.value)
    assert "INSERT INTO settings" in caplog.text  # the statements are logged ...
    assert NOTE not in caplog.text and "MRN-55501" not in caplog.text  # ... never their values
    db.dispose()


def test_cli_error_on_a_database_failure_names_no_value(tmp_path, monkeypatch, capsys):
    """The command line's catch-all prints the exception: with hidden parameters, no note text."""
    from sqlalchemy import text

    from radassist.cli import main
    from radassist.commands import catalog as catalog_cmd
    from radassist.store import open_database

    db = open_database(tmp_path / "q.db")

    def failing(args):
        with db.session() as s:
            insert = text("INSERT INTO settings (key, value_json, updated_at, updated_by) VALUES (:k, :v, :t, :u)")
            for _ in range(2):
                s.execute(insert, {"k": "dup", "v": NOTE, "t": "2026-01-01 00:00:00", "u": "x"})

    monkeypatch.setattr(catalog_cmd, "run_catalog_list", failing)
    assert main(["catalog", "list", "--db", str(tmp_path / "q.db")]) == 1
    err = capsys.readouterr().err
    assert "IntegrityError" in err and NOTE not in err and "MRN-55501" not in err
    db.dispose()


def test_integrity_error_in_a_real_process_prints_no_clinical_text(tmp_path):
    """An uncaught IntegrityError on an order with clinical notes, SQL logging on: stderr holds the
    statement and the constraint, never the notes."""
    import subprocess
    import sys

    from radassist.store import open_database

    db_path = tmp_path / "i.db"
    open_database(db_path).dispose()
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "logging.getLogger('sqlalchemy.engine').setLevel(logging.INFO)\n"
        "from radassist.store import open_database\n"
        "from radassist.store.models import OrderRow\n"
        "db = open_database(sys.argv[1])\n"
        "for _ in range(2):\n"
        "    with db.session() as s:\n"
        "        s.add(OrderRow(accession='DUP1', ordered_exam='CT HEAD', clinical_notes=sys.argv[2],"
        " sex='F', priority='STAT'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(db_path), NOTE], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert "IntegrityError" in proc.stderr and "UNIQUE constraint failed: orders.accession" in proc.stderr
    assert "INSERT INTO orders" in proc.stderr
    assert "anaphylaxis" not in proc.stderr and "MRN-55501" not in proc.stderr


def test_import_batch_refused_by_the_database_is_reported_without_values(tmp_path, capsys):
    """A batch the database refuses (here a trigger) is reported by file and lines, naming no value;
    the next file still lands."""
    import json

    from sqlalchemy import text

    from radassist.ingest import import_files
    from radassist.store import open_database

    db = open_database(tmp_path / "t.db")
    with db.session() as s:
        s.execute(text("CREATE TRIGGER refuse_x BEFORE INSERT ON orders WHEN NEW.accession LIKE 'X%' "
                       "BEGIN SELECT RAISE(ABORT, 'refused by site rule'); END"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"accession": f"X{i}", "ordered_exam": "CT", "clinical_notes": NOTE})
                           + "\n" for i in range(3)))
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"accession": "G1", "ordered_exam": "CT", "clinical_notes": NOTE}) + "\n")
    report = import_files(db, [bad, good])
    assert report.imported == 1 and len(report.problems) == 1
    problem = str(report.problems[0])
    assert problem.startswith("bad.jsonl:1: lines 1-3 not stored") and "refused by site rule" in problem
    assert "anaphylaxis" not in problem and "MRN" not in problem
    db.dispose()
