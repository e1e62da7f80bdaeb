"""Helpers for the GUI tests (no tests here): a small real engine and a database with orders."""
from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path

from radassist.domain import Prediction, Protocol, Suggestion
from radassist.engines.base import SuggestionEngine

_WORD = re.compile(r"[a-z0-9]+")
_STOP = {"the", "and", "for", "with", "of", "or", "to", "a", "in", "on", "r", "l", "eval", "w", "wo", "contrast"}


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


class KeywordEngine(SuggestionEngine):
    """Ranks catalog protocols by word overlap with the order; softmax scores. Deterministic."""

    name = "keyword"

    def __init__(self, catalog: Sequence[Protocol], *, delay_s: float = 0.0, fail_accessions: Sequence[str] = (),
                 temperature: float = 1.0, busy_s: float = 0.0):
        self.delay_s = delay_s
        self.busy_s = busy_s
        self.fail_accessions = set(fail_accessions)
        self.temperature = temperature
        self.calls: list[list[str]] = []
        self.set_catalog(catalog)

    @property
    def version(self) -> str:
        return "test-1"

    def set_catalog(self, protocols: Sequence[Protocol]) -> None:
        self.protocols = list(protocols)
        self._words = [(_words(p.describe()), _words(p.name + " " + p.code.replace("-", " "))) for p in self.protocols]

    def predict_batch(self, orders, top_k: int = 3):
        self.calls.append([o.accession for o in orders])
        out = []
        for order in orders:
            if self.delay_s:
                time.sleep(self.delay_s)  # like a model: the GIL is released
            if self.busy_s:  # pure-Python work holding the GIL in slices, like tokenization
                end = time.perf_counter() + self.busy_s
                while time.perf_counter() < end:
                    sum(range(200))
            if order.accession in self.fail_accessions:
                raise RuntimeError(f"model crashed on {order.accession}")
            words = _words(order.model_text())
            exam = _words(order.ordered_exam)
            scores = []
            for desc, head in self._words:
                scores.append(len(words & desc) + 2.0 * len(exam & head))
            exps = [math.exp((s - max(scores)) / self.temperature) for s in scores]
            total = sum(exps)
            ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], self.protocols[i].code))[:top_k]
            out.append(Prediction(order.accession, [Suggestion(self.protocols[i].code, self.protocols[i].name,
                                                               exps[i] / total) for i in ranked],
                                  model=self.model_id))
        return out


ORDERS = [
    {"accession": "T1", "ordered_exam": "CT HEAD", "priority": "ROUTINE", "age": 70, "sex": "F",
     "clinical_notes": "Fall with head trauma on anticoagulation", "patient_name": "Doe, Jane", "mrn": "M1",
     "ordered_at": "2024-01-01T08:00:00Z"},
    {"accession": "T2", "ordered_exam": "CT CHEST", "priority": "STAT", "age": 50, "sex": "M",
     "clinical_notes": "Pulmonary embolism suspected, shortness of breath", "patient_name": "Roe, Rick", "mrn": "M2",
     "ordered_at": "2024-01-01T09:00:00Z"},
    {"accession": "T3", "ordered_exam": "MRI KNEE", "priority": "URGENT", "age": 30, "sex": "M",
     "clinical_notes": "Meniscal tear after twisting injury", "patient_name": "Poe, Ed", "mrn": "M3",
     "ordered_at": "2024-01-01T07:00:00Z"},
    {"accession": "T4", "ordered_exam": "US ABDOMEN", "priority": "ROUTINE", "age": 40, "sex": "F",
     "clinical_notes": "RUQ pain, gallstones? Allergic to iodinated contrast.", "patient_name": "Moe, Ann",
     "mrn": "M4", "ordered_at": "2024-01-01T06:00:00Z"},
]
# worklist order: T2 (STAT), T3 (URGENT), T4 (ROUTINE 06:00), T1 (ROUTINE 08:00)
WORKLIST_ORDER = ["T2", "T3", "T4", "T1"]


def make_db(tmp_path: Path, orders=ORDERS, name: str = "gui.db"):
    from radassist.access import SYSTEM
    from radassist.ingest import import_files
    from support.database import new_database

    db = new_database(tmp_path / name)
    if orders:
        path = tmp_path / f"{name}.orders.jsonl"
        path.write_text("".join(json.dumps(o) + "\n" for o in orders))
        report = import_files(db, [path], actor=SYSTEM)
        assert report.imported == len(orders), report.summary()
    return db


def catalog_of(db):
    from radassist.catalog import catalog_from_db

    with db.session() as session:
        return catalog_from_db(session)


def ui_settings(tmp_path: Path):
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)


def open_window(qtbot, db, tmp_path: Path, engine=None, *, catalog=None, start_worker: bool = True, **kwargs):
    """A MainWindow on ``db`` signed in as a radiologist, engine built in the worker thread."""
    from radassist.access import RADIOLOGIST, Actor
    from radassist.gui.main_window import MainWindow

    catalog = catalog if catalog is not None else catalog_of(db)
    if engine is None:
        engine = lambda: KeywordEngine(catalog, temperature=0.3)  # noqa: E731 - confident by default
    window = MainWindow(db, Actor("dr.test", RADIOLOGIST), engine_factory=engine,
                        ui_settings=kwargs.pop("settings", None) or ui_settings(tmp_path),
                        start_worker=start_worker, **kwargs)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def wait_all_suggested(qtbot, window, timeout: int = 20000) -> None:
    qtbot.waitUntil(lambda: bool(window.engine_info.get("model_id")) and all(
        e.suggestion_code for e in window.model.entries() if e.status == "todo"), timeout=timeout)


def decisions_by_accession(db) -> dict:
    from sqlalchemy import select

    from radassist.store.models import DecisionRow, OrderRow

    with db.session() as session:
        rows = session.execute(select(OrderRow.accession, DecisionRow).join(DecisionRow.order).order_by(DecisionRow.id))
        return {acc: (d.final_code, d.action, d.suggested_code, d.model_version, d.comment, d.time_to_decide_ms)
                for acc, d in rows}


def top_codes(db, accession: str, model_version: str) -> list[str]:
    from sqlalchemy import select

    from radassist.store.models import OrderRow, SuggestionRow

    with db.session() as session:
        row = session.execute(select(SuggestionRow.suggestions_json).join(OrderRow).where(
            OrderRow.accession == accession, SuggestionRow.model_version == model_version)).scalar_one()
        return [s["code"] for s in json.loads(row)]
