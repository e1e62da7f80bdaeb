"""365 fresh phrasings across flag types, severities and statuses, each positive with its near miss.

``tests/data/flag_phrasings.jsonl`` was written for this test (not from the development sets):
``expect`` lists every flag the text should raise with the fields the text determines. A type
not expected may still appear only as resolved or handled (shown muted, never steering).
"""
from support import DATA_DIR, REPO, TESTS_DIR  # noqa: F401
import json
from pathlib import Path

import pytest

from radassist.domain import Order
from radassist.flag_assessment import assess_order
from radassist.safety_policy import load_policy

ROWS = [json.loads(line) for line in (DATA_DIR / "flag_phrasings.jsonl").read_text().splitlines()
        if line.strip()]
POLICY = load_policy()


def mismatches(row) -> list[str]:
    got = assess_order(Order(row["id"], "IMAGING", row["text"], row.get("age"), row.get("sex", "U")), POLICY)
    by_type = {f.type: f for f in got}
    problems = []
    for exp in row["expect"]:
        f = by_type.get(exp["type"])
        if f is None:
            problems.append(f"missed {exp['type']}")
            continue
        for key in ("severity", "status", "kind"):
            if key in exp and getattr(f, key) != exp[key]:
                problems.append(f"{exp['type']}: {key} {getattr(f, key)!r}, expected {exp[key]!r}")
        if exp.get("handled") and not f.handled:
            problems.append(f"{exp['type']}: not marked handled")
    expected_types = {e["type"] for e in row["expect"]}
    for f in got:
        if f.type not in expected_types and f.is_current and not f.handled:
            problems.append(f"unexpected {f.type} from {f.evidence!r}")
    return problems


@pytest.mark.parametrize("row", ROWS, ids=[r["id"] for r in ROWS])
def test_phrasing(row):
    assert not mismatches(row), (row["text"], mismatches(row))


def test_set_is_large_and_balanced():
    assert len(ROWS) >= 300
    types = {e["type"] for r in ROWS for e in r["expect"]}
    assert len(types) == 7
    assert sum(1 for r in ROWS if not r["expect"]) >= 100  # near-miss negatives
