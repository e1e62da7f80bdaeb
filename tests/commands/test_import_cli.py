"""`radassist import` on the bad inputs of issue 11, each written as its reproduction.

Every bad line is reported as file:line naming the field (never its value) and skipped; the rest
of the file and later files on the command line still land.
"""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from radassist.cli import main
from radassist.store import AuditEventRow, OrderRow, SuggestionRow

SECRET = "Jane Roe has HIV"


def _order(acc: str, **kw) -> dict:
    return {"accession": acc, "ordered_exam": "CT HEAD", "clinical_notes": "fall, headache", "age": 70, "sex": "F",
            "priority": "ROUTINE", **kw}


def _line(record) -> bytes:
    return json.dumps(record).encode()


@pytest.fixture
def run(db, tmp_path, capsys):
    from support.accounts import service_key_file

    key = str(service_key_file(db, tmp_path))

    def run_import(*files) -> tuple[int, str, str]:
        code = main(["import", *map(str, files), "--db", str(db.path), "--key-file", key])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run_import


def _write(tmp_path, name: str, lines: list[bytes]):
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _stored(db) -> dict[str, OrderRow]:
    with db.session() as s:
        return {r.accession: r for r in s.scalars(select(OrderRow))}


def test_lone_surrogate_is_one_bad_line_and_later_files_still_land(db, tmp_path, run):
    # `json.dumps` would escape the surrogate the same way a sending system does: "\ud800"
    bad = b'{"accession": "S2", "ordered_exam": "CT HEAD", "clinical_notes": "' + SECRET.encode() + b' \\ud800"}'
    first = _write(tmp_path, "a.jsonl", [_line(_order("S1")), bad, _line(_order("S3"))])
    later = _write(tmp_path, "b.jsonl", [_line(_order("S4"))])
    code, out, err = run(first, later)
    assert code == 1
    assert "a.jsonl:2" in err and "clinical_notes" in err and "surrogate" in err
    assert SECRET not in err and "UnicodeEncodeError" not in err
    assert set(_stored(db)) == {"S1", "S3", "S4"}


def test_lone_surrogate_in_the_accession_itself(db, tmp_path, run):
    path = _write(tmp_path, "a.jsonl", [b'{"accession": "X\\udc00", "ordered_exam": "CT"}', _line(_order("S5"))])
    code, _, err = run(path)
    assert code == 1 and "a.jsonl:1" in err and "accession" in err
    assert set(_stored(db)) == {"S5"}


def test_hundred_thousand_nested_brackets(db, tmp_path, run):
    path = _write(tmp_path, "deep.jsonl", [_line(_order("N1")), b"[" * 100_000, b"{" * 50_000 + b'"a":' * 1,
                                           _line(_order("N2"))])
    code, _, err = run(path)
    assert code == 1 and "deep.jsonl:2" in err and "deep.jsonl:3" in err
    assert "RecursionError" not in err
    assert set(_stored(db)) == {"N1", "N2"}


CSV_HEAD = b"accession,ordered_exam,clinical_notes,age,sex,priority\n"


def test_csv_field_over_128_kb_rejects_that_row_only(db, tmp_path, run):
    path = tmp_path / "big.csv"
    path.write_bytes(CSV_HEAD + b"C1,CT HEAD,fall,40,F,ROUTINE\n"
                     + b'C2,CT HEAD,"' + b"x" * 200_000 + b'",40,F,ROUTINE\n'
                     + b"C3,CT HEAD,fall,41,M,STAT\n")
    code, _, err = run(path)
    assert code == 1 and "big.csv:3" in err and "clinical_notes" in err
    assert "field larger than field limit" not in err
    assert set(_stored(db)) == {"C1", "C3"}


def test_unterminated_csv_quote_does_not_swallow_the_next_row(db, tmp_path, run):
    path = tmp_path / "quote.csv"
    path.write_bytes(CSV_HEAD + b'Q1,CT HEAD,"fall from ladder,40,F,ROUTINE\n'
                     + b"Q2,MRI BRAIN,anaphylaxis to gadolinium,50,M,URGENT\n"
                     + b'Q3,US RUQ,"a real\nmulti-line note",30,F,ROUTINE\n')
    code, _, err = run(path)
    assert code == 1 and "quote.csv:2" in err and "quote" in err
    rows = _stored(db)
    assert set(rows) == {"Q2", "Q3"}
    assert rows["Q2"].clinical_notes == "anaphylaxis to gadolinium" and rows["Q2"].priority == "URGENT"
    assert rows["Q3"].clinical_notes == "a real\nmulti-line note"


def test_utf8_bom_at_file_start_keeps_the_first_order(db, tmp_path, run):
    jsonl = _write(tmp_path, "bom.jsonl", [b"\xef\xbb\xbf" + _line(_order("B1")), _line(_order("B2"))])
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + CSV_HEAD + b"B3,CT HEAD,fall,40,F,ROUTINE\n")
    code, _, err = run(jsonl, csv_path)
    assert code == 0, err
    assert set(_stored(db)) == {"B1", "B2", "B3"}


@pytest.mark.parametrize("accession, what", [
    ("LA\u200b1", "U+200B"),       # zero-width space
    ("LA\u202e1", "U+202E"),       # right-to-left override
    ("LA\ufeff1", "U+FEFF"),       # BOM inside
    ("LA\x001", "U+0000"),         # NUL
    ("LA\x071", "U+0007"),         # control
])
def test_look_alike_accessions_are_refused_with_the_line(db, tmp_path, run, accession, what):
    path = _write(tmp_path, "look.jsonl", [_line(_order("LA1")), _line(_order(accession))])
    code, _, err = run(path)
    assert code == 1 and "look.jsonl:2" in err and "accession" in err and what in err
    assert set(_stored(db)) == {"LA1"}


def test_full_width_accession_is_the_same_order(db, tmp_path, run):
    path = _write(tmp_path, "fw.jsonl", [_line(_order("LA1"))])
    again = _write(tmp_path, "fw2.jsonl", [_line(_order("\uff2c\uff21\uff11"))])  # full-width "LA1"
    assert run(path)[0] == 0
    code, out, _ = run(again)
    assert code == 0 and "1 already present" in out
    assert set(_stored(db)) == {"LA1"}


def test_duplicate_accession_in_one_file_names_both_lines(db, tmp_path, run):
    path = _write(tmp_path, "dup.jsonl", [_line(_order("D1")), _line(_order("D2")),
                                          _line(_order("D1", ordered_exam="MRI BRAIN", priority="STAT"))])
    code, _, err = run(path)
    assert code == 1 and "dup.jsonl:3" in err and "line 1" in err
    rows = _stored(db)
    assert set(rows) == {"D1", "D2"} and rows["D1"].ordered_exam == "CT HEAD"


def _suggest(db, accession: str) -> int:
    with db.session() as s:
        row = s.scalar(select(OrderRow).where(OrderRow.accession == accession))
        s.add(SuggestionRow(order_id=row.id, model_version="test", suggestions_json="[]"))
        return row.id


def test_amended_order_still_to_do_is_updated_and_re_suggested(db, tmp_path, run):
    assert run(_write(tmp_path, "a.jsonl", [_line(_order("M1", ordered_exam="CT ABDOMEN"))]))[0] == 0
    order_id = _suggest(db, "M1")
    amended = _order("M1", ordered_exam="CT ABDOMEN", clinical_notes="fall, headache. anaphylaxis to iodinated contrast")
    code, out, _ = run(_write(tmp_path, "b.jsonl", [_line(amended)]))
    assert code == 0 and "already present" not in out.replace("0 already present", "")
    row = _stored(db)["M1"]
    assert "anaphylaxis to iodinated contrast" in row.clinical_notes and row.status == "todo"
    with db.session() as s:
        assert s.scalars(select(SuggestionRow).where(SuggestionRow.order_id == order_id)).all() == []
        event = s.scalar(select(AuditEventRow).where(AuditEventRow.action == "order.amend"))
        from radassist.ingest import amendment_for

        amendment = amendment_for(s, order_id)
    assert event is not None and event.entity == "order:M1" and "anaphylaxis" not in event.details
    assert amendment.changed_fields == ["clinical_notes"] and "contrast-allergy" in amendment.flags_added


def test_amended_order_already_decided_returns_to_do(db, tmp_path, run):
    from radassist.access import RADIOLOGIST, Actor
    from radassist.store import ProtocolRow
    from radassist.worklist import DecisionInput, record_decision

    assert run(_write(tmp_path, "a.jsonl", [_line(_order("M2"))]))[0] == 0
    with db.session() as s:
        order_id = s.scalar(select(OrderRow.id).where(OrderRow.accession == "M2"))
        code = s.scalar(select(ProtocolRow.code).limit(1))
        record_decision(s, Actor("rad", RADIOLOGIST), DecisionInput(order_id=order_id, final_code=code))
    assert _stored(db)["M2"].status == "done"
    amended = _order("M2", clinical_notes="fall, headache. anaphylaxis to iodinated contrast")
    assert run(_write(tmp_path, "b.jsonl", [_line(amended)]))[0] == 0
    assert _stored(db)["M2"].status == "todo"
    with db.session() as s:
        event = s.scalar(select(AuditEventRow).where(AuditEventRow.action == "order.amend"))
        from radassist.ingest import amendment_for

        amendment = amendment_for(s, order_id)
    assert json.loads(event.details)["after_decision"] is True
    assert amendment.after_decision and amendment.previous_status == "done"


def test_predict_input_with_a_lone_surrogate_fails_only_that_line():
    """`radassist predict` used to give every order of the batch `engine error: TypeError`."""
    from radassist.commands.predict import _parse_lines

    data = b"\n".join([_line(_order("P1")), b'{"accession": "P2", "ordered_exam": "CT", "clinical_notes": "\\ud800"}',
                       b"[" * 100_000, _line(_order("P3"))])
    items = list(_parse_lines(data))
    assert [(acc, order is not None) for acc, order, _ in items] == [("P1", True), (None, False), (None, False),
                                                                     ("P3", True)]
    assert "line 2" in items[1][2] and "surrogate" in items[1][2]
    assert "line 3" in items[2][2]
    for _, order, _ in items:  # what reaches the engine can be encoded
        if order is not None:
            order.clinical_notes.encode("utf-8")


@pytest.mark.slow  # four real `radassist import` processes
def test_concurrent_importers_sending_different_versions_of_one_order(db, tmp_path):
    """The same accessions from 4 processes at once, each with different notes: one insert, the
    others amendments (audited one by one), never a UNIQUE failure, a lock error or a lost order."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from sqlalchemy import func

    from support.accounts import service_key_file

    key = service_key_file(db, tmp_path)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    cli = "import sys; from radassist.cli import main; sys.exit(main(sys.argv[1:]))"
    files = []
    for i in range(4):
        path = tmp_path / f"v{i}.jsonl"
        path.write_text("".join(json.dumps(_order(f"V{n:04d}", clinical_notes=f"version {i}")) + "\n"
                                for n in range(300)))
        files.append(path)
    procs = [subprocess.Popen([sys.executable, "-c", cli, "import", str(f), "--db", str(db.path), "--key-file",
                               str(key)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for f in files]
    outcomes = [(p.wait(timeout=180), p.communicate()) for p in procs]
    for rc, (_, err) in outcomes:
        assert rc == 0, err
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(OrderRow)) == 300
        notes = set(s.scalars(select(OrderRow.clinical_notes)))
        amends = s.scalar(select(func.count()).select_from(AuditEventRow).where(AuditEventRow.action == "order.amend"))
    assert notes <= {f"version {i}" for i in range(4)}
    assert amends == 3 * 300  # every later version amended the stored one
