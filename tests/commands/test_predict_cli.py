"""`radassist predict` / `evaluate` as other tools rely on them (design: contracts)."""
import json

import pytest

from radassist.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")

ORDERS = [
    {"accession": "P1", "ordered_exam": "CT CHEST", "clinical_notes": "?PE, tachycardic. Anaphylaxis to IV contrast.",
     "age": 60, "sex": "F", "priority": "STAT", "expected": "NM-VQ"},
    {"accession": "P2", "ordered_exam": "MRI KNEE", "clinical_notes": "locking after twisting injury",
     "age": 30, "sex": "M", "priority": "ROUTINE", "expected": "MR-KNEE-WO"},
]


def _write(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return path


@pytest.mark.slow  # loads the shipped engine and MiniLM
def test_predict_contract_and_bad_lines(tmp_path):
    inp = _write(tmp_path / "in.jsonl", [ORDERS[0], "{broken", {"accession": "P3"}, ORDERS[1]])
    out = tmp_path / "out.jsonl"
    code = main(["predict", "--input", str(inp), "--output", str(out), "--engine", "embedding",
                 "--db", str(tmp_path / "r.db")])
    assert code == 1  # some lines failed
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [l.get("accession") for l in lines] == ["P1", None, "P3", "P2"]
    assert "error" in lines[1] and "line 2" in lines[1]["error"]
    assert "missing ordered_exam" in lines[2]["error"]
    for line in (lines[0], lines[3]):
        assert {"accession", "suggestions", "flags", "model", "latency_ms"} <= set(line) <= {
            "accession", "suggestions", "flags", "model", "latency_ms", "review", "review_reason"}
        assert len(line["suggestions"]) == 3
        scores = [s["score"] for s in line["suggestions"]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        assert {"code", "name", "score"} <= set(line["suggestions"][0]) <= {"code", "name", "score", "why", "conflicts"}
        assert line["model"].startswith("embedding/")
    assert lines[0]["flags"] == [{"type": "contrast-allergy", "evidence": "Anaphylaxis to IV contrast",
                                  "severity": "severe", "status": "active", "kind": "iodinated"}]
    assert lines[3]["flags"] == []
    assert lines[3]["suggestions"][0]["code"] == "MR-KNEE-WO"


@pytest.mark.slow  # loads the shipped engine and MiniLM
def test_evaluate_reports_every_metric(tmp_path, capsys):
    data = _write(tmp_path / "dev.jsonl", ORDERS)
    assert main(["evaluate", "--data", str(data), "--engine", "embedding", "--json",
                 "--db", str(tmp_path / "r.db")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("top1", "top3", "macro_f1", "semantic_similarity", "ece", "coverage", "precision_at_threshold",
                "coverage_at_target", "review_rate", "precision_pre_selected", "per_category", "reliability"):
        assert key in report
    assert sum(b["n"] for b in report["reliability"]) == report["n"]
    assert report["target_precision"] == 0.98
    assert report["n"] == 2 and 0.5 <= report["top3"] <= 1.0
    assert 0.0 < report["semantic_similarity"] <= 1.0001
