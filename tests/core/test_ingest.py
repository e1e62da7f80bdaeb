import json

import pytest

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
    from support.accounts import service_key_file

    key = str(service_key_file(db, tmp_path))
    ok = _jsonl(tmp_path, [json.dumps(GOOD).encode()])
    assert main(["import", str(ok), "--db", str(db.path), "--key-file", key]) == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(json.dumps(dict(GOOD, accession="B1")).encode() + b"\n{oops\n")
    assert main(["import", str(bad), "--db", str(db.path), "--key-file", key]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err


# --- issue 11: every bad line reported with file:line, the rest still lands -----------------------

def _import_one_file(db, tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    later = tmp_path / f"later-{name}.jsonl"
    later.write_text(json.dumps(dict(GOOD, accession="LATER1")) + "\n")
    report = import_files(db, [path, later])
    with db.session() as s:
        accessions = set(s.scalars(select(OrderRow.accession)))
    assert "LATER1" in accessions  # a later file on the command line still lands
    return report, accessions


def test_lone_surrogate_is_reported_and_the_file_goes_on(db, tmp_path):
    data = (json.dumps(GOOD).encode() + b"\n"
            + b'{"accession": "S1", "ordered_exam": "CT HEAD", "clinical_notes": "pain \\ud800 here"}\n'
            + b'{"accession": "S2\\udfff", "ordered_exam": "CT HEAD"}\n'
            + json.dumps(dict(GOOD, accession="S3")).encode() + b"\n")
    report, accessions = _import_one_file(db, tmp_path, "sur.jsonl", data)
    assert {"A1", "S3"} <= accessions and not {"S1", "S2"} & accessions
    problems = {p.line: p.message for p in report.problems}
    assert set(problems) == {2, 3}
    assert "clinical_notes" in problems[2] and "surrogate" in problems[2]
    assert "accession" in problems[3]
    assert all(p.file == "sur.jsonl" for p in report.problems)


def test_deeply_nested_brackets_are_one_bad_line(db, tmp_path):
    data = json.dumps(GOOD).encode() + b"\n" + b"[" * 100_000 + b"]" * 100_000 + b"\n" \
        + b'{"accession": "N1", "ordered_exam": "CT", "clinical_notes": ' + b"[" * 100_000 + b"\n" \
        + json.dumps(dict(GOOD, accession="N2")).encode() + b"\n"
    report, accessions = _import_one_file(db, tmp_path, "deep.jsonl", data)
    assert {"A1", "N2"} <= accessions
    assert [(p.line, "nested" in p.message or "invalid JSON" in p.message) for p in report.problems] == [
        (2, True), (3, True)]


def test_bom_before_the_first_order_is_accepted(db, tmp_path):
    data = b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n" + json.dumps(dict(GOOD, accession="A2")).encode()
    report, accessions = _import_one_file(db, tmp_path, "bom.jsonl", data)
    assert report.ok and {"A1", "A2"} <= accessions


CSV_HEADER = b"accession,ordered_exam,clinical_notes,age,sex,priority\n"


def test_csv_field_over_128kb_is_reported_by_field_and_other_rows_land(db, tmp_path):
    huge = b"x" * 200_000
    data = CSV_HEADER + b"C1,CT HEAD,fall,70,F,STAT\nC2,CT HEAD," + huge + b",70,F,STAT\nC3,MRI BRAIN,ok,40,M,ROUTINE\n"
    report, accessions = _import_one_file(db, tmp_path, "big.csv", data)
    assert {"C1", "C3"} <= accessions and "C2" not in accessions
    [problem] = report.problems
    assert problem.line == 3 and "clinical_notes" in problem.message and "too long" in problem.message


def test_csv_field_over_the_parser_limit_is_one_bad_row(tmp_path):
    from radassist.ingest import CSV_FIELD_LIMIT

    path = tmp_path / "huge.csv"
    path.write_bytes(CSV_HEADER + b"C1,CT," + b"y" * (CSV_FIELD_LIMIT + 10) + b",1,F,STAT\nC2,CT,ok,1,F,STAT\n")
    good, problems = read_orders(path)
    assert [o.accession for _, o in good] == ["C2"]
    assert [p.line for p in problems] == [2] and "longer than" in problems[0].message


def test_unterminated_csv_quote_does_not_swallow_the_next_row(db, tmp_path):
    data = (CSV_HEADER
            + b'C1,CT HEAD,"fall from standing,70,F,STAT\n'
            + b"C2,MRI BRAIN,headache,40,M,ROUTINE\n"
            + b'C3,US RUQ,"pain after meals\nand nausea",30,F,URGENT\n'  # a real multi-line note
            + b"C4,CT CHEST,cough,50,M,ROUTINE\n")
    report, accessions = _import_one_file(db, tmp_path, "quote.csv", data)
    assert {"C2", "C3", "C4"} <= accessions and "C1" not in accessions
    [problem] = report.problems
    assert problem.line == 2 and "unterminated quote" in problem.message and "clinical_notes" in problem.message
    assert "line 3" in problem.message
    with db.session() as s:
        notes = dict(s.execute(select(OrderRow.accession, OrderRow.clinical_notes)).all())
    assert notes["C2"] == "headache" and notes["C3"] == "pain after meals\nand nausea"


def test_unterminated_csv_quote_at_the_end_is_reported(tmp_path):
    path = tmp_path / "tail.csv"
    path.write_bytes(CSV_HEADER + b"C1,CT,ok,1,F,STAT\n" + b'C2,CT HEAD,"no closing quote\nmore words\n')
    good, problems = read_orders(path)
    assert [o.accession for _, o in good] == ["C1"]
    assert [p.line for p in problems] == [3] and "unterminated quote" in problems[0].message


@pytest.mark.parametrize("accession, what", [
    ("A\u200b1", "U+200B"),          # zero-width space
    ("A1\u202e", "U+202E"),          # right-to-left override
    ("\ufeffA1", "U+FEFF"),          # BOM inside the value
    ("A\x001", "U+0000"),            # NUL
    ("A\u20661", "U+2066"),          # left-to-right isolate
])
def test_lookalike_accessions_are_refused_with_the_line(db, tmp_path, accession, what):
    data = json.dumps(GOOD).encode() + b"\n" + json.dumps(dict(GOOD, accession=accession)).encode() + b"\n"
    report, accessions = _import_one_file(db, tmp_path, "look.jsonl", data)
    assert accessions == {"A1", "LATER1"}
    [problem] = report.problems
    assert problem.line == 2 and "accession" in problem.message and what in problem.message


def test_fullwidth_accession_is_the_same_order(db, tmp_path):
    data = json.dumps(GOOD).encode() + b"\n"
    path = _jsonl(tmp_path, [data.strip()])
    assert import_files(db, [path]).imported == 1
    again = _jsonl(tmp_path, [json.dumps(dict(GOOD, accession="\uff21\uff11")).encode()])  # full-width "A1"
    report = import_files(db, [again])
    assert report.duplicates == 1 and report.imported == 0 and report.ok
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(OrderRow)) == 1


def test_duplicate_accession_in_one_file_names_both_lines(db, tmp_path):
    path = _jsonl(tmp_path, [json.dumps(GOOD).encode(), json.dumps(dict(GOOD, accession="A2")).encode(),
                             json.dumps(dict(GOOD, ordered_exam="MRI BRAIN", priority="ROUTINE")).encode()])
    report = import_files(db, [path])
    [problem] = report.problems
    assert problem.line == 3 and "line 1" in problem.message and "different content" in problem.message
    with db.session() as s:
        row = s.scalar(select(OrderRow).where(OrderRow.accession == "A1"))
    assert row.ordered_exam == "CT HEAD" and row.priority == "STAT"


# --- issue 11: amendments through file import ---------------------------------------------------

def _suggest(db, accession: str) -> int:
    from radassist.store.models import SuggestionRow

    with db.session() as s:
        order = s.scalar(select(OrderRow).where(OrderRow.accession == accession))
        s.add(SuggestionRow(order_id=order.id, model_version="test/1", suggestions_json="[]", flags_json="[]"))
        return order.id


def test_amended_order_updates_notes_clears_suggestion_and_is_audited(db, tmp_path):
    from radassist import audit
    from radassist.ingest import amendment_for
    from radassist.store.models import SuggestionRow

    import_files(db, [_jsonl(tmp_path, [json.dumps(GOOD).encode()])])
    order_id = _suggest(db, "A1")
    amended = dict(GOOD, clinical_notes=GOOD["clinical_notes"] + "; anaphylaxis to iodinated contrast")
    report = import_files(db, [_jsonl(tmp_path, [json.dumps(amended).encode()])])
    assert report.ok and report.amended == 1 and report.duplicates == 0
    assert "1 amended" in report.summary()
    with db.session() as s:
        row = s.get(OrderRow, order_id)
        assert "anaphylaxis" in row.clinical_notes and row.status == "todo"
        assert s.scalar(select(func.count()).select_from(SuggestionRow)) == 0  # recomputed by the worker
        change = amendment_for(s, order_id)
        events = [e for e in audit.iter_events(s) if e.action == "order.amend"]
    assert change is not None and not change.after_decision and change.changed_fields == ["clinical_notes"]
    assert change.changes[0].before == GOOD["clinical_notes"] and "anaphylaxis" in change.changes[0].after
    assert "contrast-allergy" in change.flags_added
    assert len(events) == 1 and "anaphylaxis" not in events[0].details


def test_amended_after_decision_returns_to_todo_with_the_difference(db, tmp_path):
    from radassist.access import Actor
    from radassist.ingest import amended_order_ids, amendment_for
    from radassist.store.models import DecisionRow

    import_files(db, [_jsonl(tmp_path, [json.dumps(GOOD).encode()])])
    with db.session() as s:
        row = s.scalar(select(OrderRow).where(OrderRow.accession == "A1"))
        row.status = "done"
        s.add(DecisionRow(order_id=row.id, username="rad", final_code="CT-HEAD-NC", action="accepted", comment=""))
        order_id = row.id
    report = import_files(db, [_jsonl(tmp_path, [json.dumps(dict(GOOD, priority="ROUTINE")).encode()])],
                          actor=Actor("rad", "radiologist"))
    assert report.amended == 1 and report.amended_after_decision == 1
    with db.session() as s:
        assert s.get(OrderRow, order_id).status == "todo"
        change = amendment_for(s, order_id)
        assert amended_order_ids(s) == {order_id}
    assert change.after_decision and change.previous_status == "done" and change.username == "rad"
    assert [(c.field, c.before, c.after) for c in change.changes] == [("priority", "STAT", "ROUTINE")]
    # decided again: no longer pending
    with db.session() as s:
        s.get(OrderRow, order_id).status = "done"
        s.add(DecisionRow(order_id=order_id, username="rad", final_code="CT-HEAD-NC", action="accepted", comment=""))
    with db.session() as s:
        assert amendment_for(s, order_id) is None and amended_order_ids(s) == set()
        assert amendment_for(s, order_id, pending_only=False).after_decision


def test_identical_resend_is_a_duplicate_not_an_amendment(db, tmp_path):
    from radassist.ingest import amendment_for

    path = _jsonl(tmp_path, [json.dumps(GOOD).encode()])
    import_files(db, [path])
    order_id = _suggest(db, "A1")
    again = import_files(db, [path])
    assert again.duplicates == 1 and again.amended == 0
    with db.session() as s:
        assert amendment_for(s, order_id, pending_only=False) is None
