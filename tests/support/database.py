"""A new test database in a few milliseconds: a copy of one real, migrated SQLite file with the
shipped catalog (built once per test process by the real migrations), opened with ``open_database``.

Migrating a new file runs every Alembic revision (~100 ms); hundreds of tests need an empty database,
none of them tests the migrations (tests/core/test_store.py does, on files it creates itself).
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_TEMPLATE: Path | None = None


def _template() -> Path:
    global _TEMPLATE
    if _TEMPLATE is None:
        from radassist.catalog import ensure_catalog
        from radassist.store import open_database

        folder = Path(tempfile.mkdtemp(prefix="radassist-template-"))
        atexit.register(shutil.rmtree, folder, True)
        database = open_database(folder / "template.db")
        with database.session() as session:
            ensure_catalog(session)
        database.dispose()  # the last connection checkpoints the WAL into the file
        _TEMPLATE = folder / "template.db"
    return _TEMPLATE


def new_database(path: Path):
    """A migrated database with the shipped catalog at ``path`` (which must not exist yet)."""
    from radassist.store import open_database

    path = Path(path)
    if path.exists():
        raise FileExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template(), path)
    return open_database(path)
