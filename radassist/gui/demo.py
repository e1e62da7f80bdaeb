"""The demo database: ~40 realistic (fictitious) orders imported through the normal ingest path.

``resources/demo_orders.jsonl`` holds the orders with a ``minutes_ago`` field instead of
``ordered_at`` (an unknown field the importer ignores); seeding stamps ``ordered_at`` relative to
now so that the waiting times look like a live worklist. No Qt here.
"""
from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path

from radassist.access import RADIOLOGIST, SYSTEM, Actor
from radassist.catalog import ensure_catalog
from radassist.paths import RESOURCES_DIR, data_dir
from radassist.store.models import utcnow
from radassist.worklist_queries import order_count

DEMO_ORDERS = RESOURCES_DIR / "demo_orders.jsonl"
DEMO_ACTOR = Actor("rad", RADIOLOGIST)  # radassist.users.demo_users(): "Dr. Demo Radiologist"


def default_demo_db_path() -> Path:
    return data_dir() / "demo.db"


def demo_records(now=None) -> list[dict]:
    now = now or utcnow()
    records = []
    for line in DEMO_ORDERS.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        minutes = record.pop("minutes_ago", 60)
        record["ordered_at"] = (now - timedelta(minutes=minutes)).isoformat(timespec="seconds") + "Z"
        records.append(record)
    return records


def seed_demo(db, *, force: bool = False) -> int:
    """Catalog, demo users and demo orders (only into a database without orders, unless ``force``).

    Returns the number of orders imported.
    """
    from radassist import users
    from radassist.ingest import import_files

    with db.session() as session:
        ensure_catalog(session)
        count = order_count(session)
        # The demo users' hashes ship with the code (users.demo_users): no ~1 s of hashing here.
        users.seed_demo_users(session)
    imported = 0
    if not count or force:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "demo_orders.jsonl"
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in demo_records()),
                            encoding="utf-8")
            imported = import_files(db, [path], actor=SYSTEM).imported
    return imported
