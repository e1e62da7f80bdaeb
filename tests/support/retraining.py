"""Retraining helpers: decisions seeded through the real import and decision paths, the CLI, run registration."""
from __future__ import annotations

import json
from pathlib import Path

from radassist import registry
from radassist.access import ADMIN, RADIOLOGIST, Actor

ADMIN_ACTOR = Actor("admin.test", ADMIN)
RAD_ACTOR = Actor("dr.test", RADIOLOGIST)
PATIENT = "Quixworth, Zebulon"
PROTOCOLS = ("CT-HEAD-WO", "CTA-CHEST-PE", "MR-KNEE-WO", "US-APPENDIX", "US-RUQ", "CT-ABD-PEL-W", "MR-BRAIN-WWO",
             "CT-LSPINE-WO")
REPO = Path(__file__).resolve().parents[2]


def seed_decisions(db, tmp_path: Path, per_protocol: int = 8, seed: int = 5, override: dict | None = None,
                   codes=PROTOCOLS) -> list[str]:
    """Orders (with name/MRN, repeated in the notes) for a few protocols, each with a decision.

    ``override``: {true_code: site_code}: the model suggested ``true_code``, the radiologist chose ``site_code``.
    Returns the accessions.
    """
    from radassist.catalog import catalog_from_db
    from radassist.domain import FLAG_TYPES, Suggestion
    from radassist.ingest import import_files
    from radassist.store.models import OrderRow
    from radassist.synthetic import generate
    from radassist.worklist import DecisionInput, record_decision

    with db.session() as session:
        catalog = [p for p in catalog_from_db(session) if p.code in set(codes)]
    examples = generate(catalog, per_protocol=per_protocol, seed=seed)
    lines, labels = [], {}
    for i, e in enumerate(examples):
        acc, mrn = f"ACC{seed:02d}{i:05d}", f"MRN{seed:02d}{i:06d}"
        o = e.order
        notes = f"Patient {PATIENT} (MRN {mrn}, accession {acc}). {o.clinical_notes}"
        lines.append(json.dumps({"accession": acc, "ordered_exam": o.ordered_exam, "clinical_notes": notes,
                                 "age": o.age, "sex": o.sex, "priority": o.priority, "mrn": mrn,
                                 "patient_name": PATIENT}))
        labels[acc] = e.code
    path = tmp_path / f"orders-{seed}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = import_files(db, [path], actor=ADMIN_ACTOR)
    assert report.imported == len(lines), report.summary()
    override = override or {}
    with db.session() as session:
        ids = {r.accession: r.id for r in session.query(OrderRow).filter(OrderRow.accession.in_(list(labels)))}
        for acc, code in labels.items():
            final = override.get(code, code)
            # historical decisions: whatever the notes say, the radiologist weighed it
            record_decision(session, RAD_ACTOR, DecisionInput(
                ids[acc], final, suggested=Suggestion(code, code, 0.9), model_version="embedding/shipped",
                acknowledged=FLAG_TYPES))
    return list(labels)


def cli(*argv: str) -> int:
    from radassist.cli import main

    return main(list(argv))


def register_run(db, engine: str = "embedding", actor: Actor = ADMIN_ACTOR, version: str | None = None,
                 monkeypatch=None) -> str:
    """Register a run as the app does (one-time token). With ``monkeypatch`` the token is put in the
    environment, where `radassist train --run-id` (in-process or a child process) finds it."""
    with db.session() as session:
        run, token = registry.register_app_run(session, actor, engine, data={}, hyperparams={}, version=version)
    if monkeypatch is not None:
        monkeypatch.setenv(registry.RUN_TOKEN_ENV, token)
    return run.version


def train_args(db, out: Path, version: str, engine: str = "embedding", replay: int = 3,
               corpus_replay: int = 0) -> list[str]:
    return ["train", "--engine", engine, "--from-db", "--db", str(db.path), "--run-id", version,
            "--json-progress", "--replay", str(replay), "--corpus-replay", str(corpus_replay), "--out", str(out)]
