"""Where RadAssist keeps its files (platformdirs; every command also takes --db)."""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "RadAssist"
PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
RESOURCES_DIR = PROJECT_DIR / "resources"
MODELS_DIR = Path(os.environ.get("RADASSIST_MODELS_DIR", PROJECT_DIR / "models"))
ADAPTERS_DIR = MODELS_DIR / "adapters"


def data_dir() -> Path:
    path = Path(os.environ.get("RADASSIST_DATA_DIR") or platformdirs.user_data_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    path = Path(os.environ.get("RADASSIST_CACHE_DIR") or platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def trained_models_dir() -> Path:
    """Where training runs write their models: the user's data folder, never the install (read-only)."""
    path = Path(os.environ.get("RADASSIST_TRAINED_DIR") or data_dir() / "models")
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_db_path() -> Path:
    return data_dir() / "radassist.db"


def default_catalog_path() -> Path:
    return RESOURCES_DIR / "protocols.csv"


def audit_key_path(db_path: str | Path | None = None) -> Path:
    """The site key that anchors the audit chain (HMAC), kept outside the database.

    ``RADASSIST_AUDIT_KEY_FILE`` names it when set (a site keeps it where database users cannot
    write); otherwise it lies next to the database as ``<database>.audit-key``, or in the user's
    data folder for a database without a file.
    """
    configured = os.environ.get("RADASSIST_AUDIT_KEY_FILE")
    if configured:
        return Path(configured).expanduser()
    if db_path:
        db_path = Path(db_path)
        return db_path.with_name(db_path.name + ".audit-key")
    return data_dir() / "audit.key"
