"""Files that hold patient data are owner-only (0600), whatever the umask; SQL stays parameterized."""
from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

import pytest

from radassist import audit, users
from radassist.access import AUDITOR, Actor

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("fast_hasher")


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
