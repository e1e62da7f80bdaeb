"""Opening the RadAssist database: SQLite in WAL mode, migrated to the latest schema."""
from __future__ import annotations

import functools
import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from radassist.access import PermissionDenied
from radassist.paths import default_db_path

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.MULTILINE)
_QUOTED = re.compile(r"[\"']([^\"']+)[\"']")


@functools.lru_cache(maxsize=1)
def _script_heads() -> frozenset[str]:
    """The head revision(s) of the shipped migrations, read from the scripts' ``revision`` and
    ``down_revision`` lines without importing Alembic (~0.25 s at every start otherwise: a database
    already at the head needs no Alembic at all). tests/core/test_store.py checks this against
    Alembic's own ScriptDirectory."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        for key, value in _REVISION_LINE.findall(script.read_text(encoding="utf-8")):
            names = _QUOTED.findall(value)
            (revisions if key == "revision" else parents).update(names)
    return frozenset(revisions - parents)


def head_revision() -> str:
    heads = _script_heads()
    return next(iter(heads)) if len(heads) == 1 else ""


def _current_revisions(conn: Connection) -> frozenset[str]:
    """The revision(s) stamped in the database (Alembic's ``alembic_version`` table); none for a new file."""
    try:
        rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").fetchall()
    except OperationalError:  # no such table: a new database
        conn.rollback()
        return frozenset()
    return frozenset(row[0] for row in rows)


BUSY_TIMEOUT_S = 30.0  # a writer waits this long for another process's transaction (all are short)
# After an immediate transaction, its holder keeps SQLite's lock free for this fraction of the time it
# held it, so that writers polling in SQLite's busy handler (sleeps up to 100 ms) are not starved by
# a queue of importers.
WRITER_GAP = 0.5
_BUSY_PRAGMA = "PRAGMA busy_timeout=%d" % int(BUSY_TIMEOUT_S * 1000)  # a constant, no value from outside


def _on_connect(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    try:
        # The busy timeout first: switching a new database to WAL takes a lock that another
        # process may hold for a moment.
        cur.execute(_BUSY_PRAGMA)
        mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            _retry_busy(lambda: cur.execute("PRAGMA journal_mode=WAL"))
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed transaction survives an app crash
        cur.execute("PRAGMA foreign_keys=ON")
    finally:
        cur.close()


def _retry_busy(fn, timeout_s: float = BUSY_TIMEOUT_S):
    """Retry ``fn`` while SQLite says the database is locked (statements the busy handler does not cover)."""
    import sqlite3

    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


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
    def session(self, *, immediate: bool = False) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error.

        ``immediate``: take SQLite's write lock at the start (BEGIN IMMEDIATE), for a transaction
        that reads and then writes what it read (check-then-insert) while other processes write
        too; it waits up to the busy timeout for them. Such transactions first queue on the
        ``<db>.lock`` file lock, which wakes the next waiter as soon as it is released (SQLite's
        busy handler polls with sleeps of up to 100 ms: 8 importers spent most of their time
        asleep), and leave a gap after committing (:data:`WRITER_GAP`) for the other writers.
        Do not nest them.
        """
        with self._sessions() as session, (migration_lock(self.path) if immediate else nullcontext()):
            try:
                if immediate:
                    started = time.monotonic()
                    session.connection().exec_driver_sql("BEGIN IMMEDIATE")
                yield session
                session.commit()
                if immediate:
                    # Still first in the file-lock queue, SQLite's lock free: a writer that waits in
                    # SQLite's busy handler (the app, the listener) gets its turn between batches.
                    time.sleep(min((time.monotonic() - started) * WRITER_GAP, 0.1))
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
            revisions = _current_revisions(conn)
        return next(iter(revisions)) if len(revisions) == 1 else None

    def dispose(self) -> None:
        self.engine.dispose()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade to ``revision``. A database already at the head (every start of the app and of each
    command after the first) is only read: one query, no Alembic environment."""
    if revision == "head":
        with engine.connect() as conn:
            if _current_revisions(conn) == _script_heads():
                return
    from alembic import command

    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@contextmanager
def migration_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``<db>.lock`` (fcntl.flock), so that processes opening a new or older
    database at the same time migrate it one after the other: the first creates the tables, the
    others find them at the head revision. Released when the holder exits, even by SIGKILL."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl: Any
        try:
            import fcntl
        except ImportError:  # not POSIX: SQLite's own locking (busy timeout) is all there is
            fcntl = None
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


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
    engine = create_engine(f"sqlite:///{path}", future=True, hide_parameters=True,
                           connect_args={"timeout": BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _on_connect)
    with migration_lock(path):
        migrate(engine, revision)
    _restrict_permissions(path)
    return Database(path, engine)
