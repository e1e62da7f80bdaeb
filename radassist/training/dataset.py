"""Training data from radiologists' decisions: de-identified, de-duplicated, split stably.

- The label is the latest decision per order: the suggested protocol when accepted, the
  radiologist's when overridden.
- Held-out split by a hash of the accession: an order is in the same split in every run, so
  every candidate model is judged on the same cases.
- A replay of synthetic orders is mixed in so that protocols nobody decided lately are not
  forgotten.
- Text that reaches a model or an export has no name, MRN or accession (also scrubbed from notes).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from radassist.domain import LabelledOrder, Order, Protocol
from radassist.worklist import latest_decisions

HELDOUT_PERCENT = 20


def is_heldout(accession: str, percent: int = HELDOUT_PERCENT) -> bool:
    return int(hashlib.sha256(accession.encode()).hexdigest()[:8], 16) % 100 < percent


def pseudonym(accession: str) -> str:
    return "case-" + hashlib.sha256(("radassist:" + accession).encode()).hexdigest()[:12]


def scrub_notes(notes: str, *identifiers: str | None) -> str:
    """Remove the order's own identifiers (name parts, MRN, accession) where a note repeats them."""
    for ident in identifiers:
        if not ident:
            continue
        parts = [ident] + [p for p in re.split(r"[\s,]+", ident) if len(p) >= 3]
        for part in parts:
            notes = re.sub(re.escape(part), "[redacted]", notes, flags=re.IGNORECASE)
    return notes


def deidentify(order: Order) -> Order:
    return Order(accession=pseudonym(order.accession), ordered_exam=order.ordered_exam,
                 clinical_notes=scrub_notes(order.clinical_notes, order.patient_name, order.mrn, order.accession),
                 age=order.age, sex=order.sex, priority=order.priority)


@dataclass
class DecisionDataset:
    train: list[LabelledOrder]
    heldout: list[LabelledOrder]
    decisions: int
    overrides: int
    duplicates_dropped: int
    replay: int

    def counts(self) -> dict:
        return {"decisions": self.decisions, "overrides": self.overrides, "train_decisions": len(self.train) - self.replay,
                "heldout": len(self.heldout), "replay": self.replay, "duplicates_dropped": self.duplicates_dropped}


def decision_examples(session: Session, catalog_codes: set[str] | None = None) -> tuple[list[tuple[bool, LabelledOrder]], int, int]:
    """(heldout?, de-identified labelled order) per decided order; plus overrides and duplicates counts."""
    from radassist.ingest import order_from_row

    seen: set[tuple] = set()
    out, overrides, dups = [], 0, 0
    for d in latest_decisions(session):
        if catalog_codes is not None and d.final_code not in catalog_codes:
            continue
        order = order_from_row(d.order)
        key = (order.ordered_exam.lower(), order.clinical_notes.strip().lower(), order.age, order.sex, d.final_code)
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        overrides += d.action == "overridden"
        out.append((is_heldout(order.accession), LabelledOrder(deidentify(order), d.final_code)))
    return out, overrides, dups


def corpus_replay(catalog: Sequence[Protocol], per_protocol: int, seed: int = 0) -> list[LabelledOrder]:
    """Up to ``per_protocol`` orders per catalog protocol from the shipped writer corpus (data/corpus)."""
    import random

    from radassist.paths import PROJECT_DIR

    folder = PROJECT_DIR / "data" / "corpus"
    if per_protocol <= 0 or not folder.is_dir():
        return []
    from radassist.training.style_folds import load_corpus  # imports the embedding engine (torch): only if needed

    codes = {p.code for p in catalog}
    by_code: dict[str, list[LabelledOrder]] = {}
    for e in load_corpus(folder):
        if e.code in codes:
            by_code.setdefault(e.code, []).append(e)
    rng = random.Random(seed)
    out = []
    for code in sorted(by_code):
        rows = by_code[code]
        out += rows if len(rows) <= per_protocol else rng.sample(rows, per_protocol)
    return out


def build_dataset(session: Session, catalog: Sequence[Protocol], replay_per_protocol: int = 8,
                  seed: int = 0, corpus_per_protocol: int = 20) -> DecisionDataset:
    """Decisions (train / held-out by accession) + replay: synthetic orders and writer-corpus orders, so
    that what the shipped model knew is not forgotten when it learns from the site's decisions."""
    from radassist.synthetic import generate

    codes = {p.code for p in catalog}
    examples, overrides, dups = decision_examples(session, codes)
    train = [e for held, e in examples if not held]
    heldout = [e for held, e in examples if held]
    replay = generate(catalog, per_protocol=replay_per_protocol, seed=seed + 1000) if replay_per_protocol else []
    replay += corpus_replay(catalog, corpus_per_protocol, seed)
    # Replay must not re-teach what the site overrides: drop the synthetic examples of a protocol
    # that the radiologists replace more often than they keep.
    superseded = superseded_codes(session)
    replay = [e for e in replay if e.code not in superseded]
    return DecisionDataset(train + replay, heldout, len(examples) + dups, overrides, dups, len(replay))


def superseded_codes(session: Session) -> set[str]:
    """Suggested protocols that the site overrode (to another protocol) more often than it chose them."""
    from collections import Counter

    away: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    for d in latest_decisions(session):
        kept[d.final_code] += 1
        if d.action == "overridden" and d.suggested_code and d.suggested_code != d.final_code:
            away[d.suggested_code] += 1
    return {code for code, n in away.items() if n > kept[code]}


def export_dataset(dataset: DecisionDataset, path: str | Path) -> int:
    """De-identified JSONL (one labelled order per line, with its split), written 0600."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    n = 0
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for split, items in (("train", dataset.train), ("heldout", dataset.heldout)):
            for e in items:
                o = e.order
                fh.write(json.dumps({"accession": o.accession, "ordered_exam": o.ordered_exam,
                                     "clinical_notes": o.clinical_notes, "age": o.age, "sex": o.sex,
                                     "priority": o.priority, "expected": e.code, "acceptable": [e.code],
                                     "split": split}) + "\n")
                n += 1
    os.replace(tmp, path)
    return n
