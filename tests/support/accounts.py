"""Accounts for tests that run `radassist import`: a service account's key file (no password hashing)."""
from __future__ import annotations

from pathlib import Path


def service_key_file(db, folder: Path, name: str = "feed") -> Path:
    """Create service account ``name`` in ``db`` and return its key file (0600) under ``folder``."""
    from radassist import users
    from radassist.access import SYSTEM

    path = Path(folder) / f"{name}.key"
    with db.session() as session:
        users.create_service_account(session, SYSTEM, name, path)
    return path
