"""Start-up pieces: the screenshot path of `radassist gui`, demo seeding, integrations (the Qt import rule:
tests/test_architecture.py and import-linter)."""
from __future__ import annotations

from support import DATA_DIR, REPO, TESTS_DIR  # noqa: F401
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from support.gui import KeywordEngine, catalog_of, make_db, open_window  # noqa: E402



def test_demo_seed_imports_realistic_orders(tmp_path):
    from sqlalchemy import func, select

    from radassist.gui.demo import DEMO_ORDERS, seed_demo
    from radassist.store import open_database
    from radassist.store.models import OrderRow

    db = open_database(tmp_path / "demo.db")
    assert seed_demo(db) >= 35
    assert seed_demo(db) == 0  # only once
    with db.session() as session:
        priorities = set(session.scalars(select(OrderRow.priority)))
        assert priorities == {"STAT", "URGENT", "ROUTINE"}
        assert session.scalar(select(func.count()).select_from(OrderRow).where(OrderRow.patient_name.is_(None))) == 0


@pytest.mark.slow  # a second process or a timing measurement: seconds (make test runs it)
def test_screenshot_renders_an_order_with_suggestions(qtbot, tmp_path, monkeypatch):
    import radassist.gui.inference_worker as worker_module
    from radassist.gui.app import run_gui

    def factory(db, engine_name=None, fallback=True):
        return lambda: KeywordEngine(catalog_of(db), temperature=0.3)

    monkeypatch.setattr(worker_module, "default_engine_factory", factory)
    out = tmp_path / "shot.png"
    code = run_gui(db_path=str(tmp_path / "demo.db"), demo=True, screenshot=str(out), timeout_s=30)
    assert code == 0 and out.exists() and out.stat().st_size > 20_000
    from PySide6.QtGui import QImage

    image = QImage(str(out))
    assert image.width() >= 1000 and image.height() >= 700


def test_tool_actions_follow_permissions(qtbot, tmp_path):
    db = make_db(tmp_path)
    window = open_window(qtbot, db, tmp_path, start_worker=False)
    assert window.add_tool_action("Settings…", lambda: None, permission="settings.change") is None  # radiologist
    assert window.add_tool_action("Help page", lambda: None) is not None
    assert window.tools_menu.menuAction().isVisible()


def test_demo_orders_are_not_copied_from_the_development_sets():
    import json

    from radassist.gui.demo import DEMO_ORDERS

    dev_sets = [REPO.parent / "shared" / name for name in ("dev_orders.jsonl", "dev_orders2.jsonl")]
    if not all(p.exists() for p in dev_sets):
        pytest.skip("the development sets (../shared) are not beside this checkout")
    dev_notes = {json.loads(line)["clinical_notes"].strip().lower()
                 for p in dev_sets for line in p.read_text().splitlines() if line.strip()}
    demo_notes = {json.loads(line)["clinical_notes"].strip().lower()
                  for line in DEMO_ORDERS.read_text().splitlines() if line.strip()}
    assert len(demo_notes) >= 35
    assert not dev_notes & demo_notes
