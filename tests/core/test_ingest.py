import json

from sqlalchemy import func, select

from radassist.cli import main
from radassist.ingest import import_files, read_orders
from radassist.store import OrderRow

GOOD = {"accession": "A1", "ordered_exam": "CT HEAD", "clinical_notes": "fall, on apixaban", "age": 80,
        "sex": "F", "priority": "STAT", "mrn": "123", "patient_name": "Doe, Jane", "extra": "ignored"}


def _jsonl(tmp_path, lines: list[bytes]):
    path = tmp_path / "orders.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_bad_lines_are_reported_and_good_lines_land(db, tmp_path):
    good2 = dict(GOOD, accession="A2", age="45")
    path = _jsonl(tmp_path, [
        json.dumps(GOOD).encode(),
        b"{not json",
        json.dumps({"ordered_exam": "CT"}).encode(),                      # missing accession
        json.dumps(dict(GOOD, accession="A3", ordered_exam="")).encode(),  # missing exam
        json.dumps(dict(GOOD, accession="A4", age="old")).encode(),        # wrong type
        b'{"accession": "A5", "ordered_exam": "CT \xff\xfe"}',             # not UTF-8
        json.dumps(dict(GOOD, accession="A6", clinical_notes="x" * 1_000_000)).encode(),
        b"",
        json.dumps(good2).encode(),
        json.dumps(dict(GOOD, accession="A7", priority="WHENEVER")).encode(),
    ])
    report = import_files(db, [path])
    lines = {p.line: p.message for p in report.problems}
    assert set(lines) == {2, 3, 4, 5, 6, 7, 10}
    assert "invalid JSON" in lines[2]
    assert "missing accession" in lines[3]
    assert "missing ordered_exam" in lines[4]
    assert "age must be an integer" in lines[5]
    assert "UTF-8" in lines[6]
    assert "too long" in lines[7]
    assert "priority" in lines[10]
    assert all(p.file == "orders.jsonl" for p in report.problems)
    assert report.imported == 2 and not report.ok
    with db.session() as s:
        rows = {r.accession: r for r in s.scalars(select(OrderRow))}
    assert set(rows) == {"A1", "A2"}
    assert rows["A2"].age == 45 and rows["A1"].status == "todo"


def test_problem_messages_carry_no_note_text(db, tmp_path):
    secret = "Jane has HIV and a secret"
    path = _jsonl(tmp_path, [json.dumps(dict(GOOD, clinical_notes=secret, age=[1])).encode()])
    report = import_files(db, [path])
    assert report.problems and secret not in str(report.problems[0])


def test_reimport_does_not_duplicate(db, tmp_path):
    path = _jsonl(tmp_path, [json.dumps(GOOD).encode()])
    assert import_files(db, [path]).imported == 1
    again = import_files(db, [path])
    assert again.imported == 0 and again.duplicates == 1 and again.ok
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(OrderRow)) == 1


def test_csv_import_with_bad_row(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_bytes(
        b"accession,ordered_exam,clinical_notes,age,sex,priority\n"
        b"C1,MRI BRAIN,headache,40,F,ROUTINE\n"
        b"C2,US RUQ,pain,abc,F,ROUTINE\n"
        b"C3,US RUQ,\"multi\nline note\",30,M,URGENT\n"
        b"C4,CT,\xff,30,M,URGENT\n"
    )
    good, problems = read_orders(path)
    assert [o.accession for _, o in good] == ["C1", "C3"]
    assert [(p.line, "age" in p.message or "UTF-8" in p.message) for p in problems] == [(3, True), (6, True)]


def test_cli_exit_code_says_whether_all_lines_landed(db, tmp_path, capsys):
    ok = _jsonl(tmp_path, [json.dumps(GOOD).encode()])
    assert main(["import", str(ok), "--db", str(db.path)]) == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(json.dumps(dict(GOOD, accession="B1")).encode() + b"\n{oops\n")
    assert main(["import", str(bad), "--db", str(db.path)]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err
