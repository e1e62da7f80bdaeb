"""Opening the RadAssist database: SQLite in WAL mode, migrated to the latest schema."""
from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from radassist.access import PermissionDenied
from radassist.paths import default_db_path

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _on_connect(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed transaction survives an app crash
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _restrict_permissions(path: Path) -> None:
    """The database holds patient notes: owner read/write only (0600), also for WAL/SHM files."""
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists():
            os.chmod(p, stat.S_IRUSR | stat.S_IWUSR)


class Database:
    """A migrated SQLite database and a session factory."""

    def __init__(self, path: Path, engine: Engine):
        self.path = path
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException as exc:
                session.rollback()
                if isinstance(exc, PermissionDenied):
                    self.record_refusal(exc)
                raise

    def record_refusal(self, exc: PermissionDenied) -> None:
        """Audit a refused action in its own short transaction (the caller's has rolled back).

        Done once per exception (``exc.audited``); a failure to record never hides the refusal.
        """
        if getattr(exc, "audited", False):
            return
        from radassist.audit import record_refusal

        try:
            with self._sessions() as session:
                record_refusal(session, exc)
                session.commit()
        except Exception:  # noqa: BLE001 - the PermissionDenied is what the caller must see
            logging.getLogger(__name__).warning("could not audit a refused %s by %s", exc.permission,
                                                exc.actor.username, exc_info=True)

    def revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def dispose(self) -> None:
        self.engine.dispose()


def migrate(engine: Engine, revision: str = "head") -> None:
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def open_database(path: str | Path | None = None, *, revision: str = "head") -> Database:
    """Open (creating if needed) and migrate the database at ``path`` (default: user data folder)."""
    path = Path(path) if path else default_db_path()
    path = path.expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    # hide_parameters: SQL parameters (clinical notes, names) never reach exception messages,
    # stderr or the SQLAlchemy logs.
    engine = create_engine(f"sqlite:///{path}", future=True, hide_parameters=True)
    event.listen(engine, "connect", _on_connect)
    migrate(engine, revision)
    _restrict_permissions(path)
    return Database(path, engine)
