import pytest

from radassist.catalog import CatalogError, catalog_from_db, parse_catalog, sync_catalog

HEADER = "code,name,modality,body_region,contrast,indications\n"


def test_shipped_catalog_loads(catalog):
    assert len(catalog) == 77
    assert len({p.code for p in catalog}) == 77
    assert {p.modality for p in catalog} <= {"CT", "MR", "US", "XR", "NM", "PET"}


def test_problems_are_reported_with_line_numbers():
    text = HEADER + (
        'A,Alpha,CT,Head,none,"x"\n'
        'A,Again,CT,Head,none,"y"\n'
        'B,Beta,XX,Head,none,"z"\n'
    )
    with pytest.raises(CatalogError) as err:
        parse_catalog(text, "cat.csv")
    messages = [str(p) for p in err.value.problems]
    assert any(m.startswith("line 3:") and "duplicate code 'A'" in m for m in messages)
    assert any(m.startswith("line 4:") and "unknown modality" in m for m in messages)


def test_missing_column_is_reported():
    with pytest.raises(CatalogError, match="missing column"):
        parse_catalog("code,name,modality\nA,B,CT\n")


def test_sync_adds_updates_and_deactivates(db, catalog):
    with db.session() as s:
        new = parse_catalog(HEADER + 'NEW-1,MRI Foo,MR,Foot,none,"plantar fasciitis"\n')
        counts = sync_catalog(s, catalog[:5] + new)
        assert counts == {"added": 1, "updated": 0, "deactivated": 72, "total": 6}
        assert [p.code for p in catalog_from_db(s)] == sorted(p.code for p in catalog[:5] + new)


def test_cli_import_of_bad_catalog_changes_nothing(db, tmp_path, capsys):
    from radassist.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + 'A,Alpha,CT,Head,none,"x"\nA,Dup,CT,Head,none,"x"\n')
    assert main(["catalog", "import", str(bad), "--db", str(db.path)]) == 1
    assert "line 3" in capsys.readouterr().err
    with db.session() as s:
        assert len(catalog_from_db(s)) == 77


def test_cli_catalog_import_needs_an_admin_once_users_exist(db, tmp_path, monkeypatch, capsys):
    import io
    import sys

    from radassist.access import ADMIN
    from radassist.cli import main
    from radassist.users import bootstrap_admin, create_user

    with db.session() as s:
        bootstrap_admin(s, "boss", "Chief-Key-81")
        from radassist.access import Actor

        create_user(s, Actor("boss", ADMIN), "rad", "Reader-Key-82", "radiologist")
    good = tmp_path / "good.csv"
    good.write_text(HEADER + 'A,Alpha,CT,Head,none,"x"\n')
    assert main(["catalog", "import", str(good), "--db", str(db.path)]) == 3  # nobody signed in
    monkeypatch.setattr(sys, "stdin", io.StringIO("Reader-Key-82\n"))
    assert main(["catalog", "import", str(good), "--db", str(db.path), "--user", "rad", "--password-stdin"]) == 3
    with db.session() as s:
        assert len(catalog_from_db(s)) == 77
    monkeypatch.setattr(sys, "stdin", io.StringIO("Chief-Key-81\n"))
    assert main(["catalog", "import", str(good), "--db", str(db.path), "--user", "boss", "--password-stdin"]) == 0
    with db.session() as s:
        assert [p.code for p in catalog_from_db(s)] == ["A"]


# --- issue 11, item 10: formula injection ------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("code", "=HYPERLINK(\"http://x\")"), ("name", "@SUM(1+1)*cmd|' /C calc'!A0"), ("name", "+1+1"),
    ("body_region", "-2+3"), ("indications", "\t=1+1"), ("indications", "  =1+1"), ("contrast", "\r=1"),
])
def test_catalog_fields_refuse_formula_leading_characters(field, value):
    """Issue 11: codes and names starting with =, @, +, - were accepted and printed unescaped."""
    cells = {"code": "CT-X", "name": "CT X", "modality": "CT", "body_region": "Head", "contrast": "none",
             "indications": "x"}
    cells[field] = value
    text = HEADER + ",".join('"' + cells[c].replace('"', '""') + '"' for c in
                             ("code", "name", "modality", "body_region", "contrast", "indications")) + "\n"
    with pytest.raises(CatalogError) as err:
        parse_catalog(text, "cat.csv")
    (problem,) = err.value.problems
    assert problem.line == 2 and f"field {field!r}" in str(problem) and "formula" in str(problem)
    assert value.strip() not in str(err.value)  # the field is named, its value is not repeated


def test_a_catalog_synced_from_the_app_refuses_formulas_too(db):
    from radassist.catalog import sync_catalog
    from radassist.domain import Protocol

    with pytest.raises(CatalogError, match="formula"), db.session() as s:
        sync_catalog(s, [Protocol("=EVIL()", "x", "CT", "Head", "none", "")])


def test_catalog_list_escapes_formula_cells(db, capsys):
    """A catalog stored before the check (straight into the database) is printed escaped."""
    import csv
    import io

    from radassist.cli import main
    from radassist.store.models import ProtocolRow, utcnow

    with db.session() as s:
        s.add(ProtocolRow(code="@EVIL", name="=cmd|' /C calc'!A0", modality="CT", body_region="-1",
                          contrast="none", indications="+x", active=True, updated_at=utcnow()))
    capsys.readouterr()
    assert main(["catalog", "list", "--db", str(db.path)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    evil = next(r for r in rows if "EVIL" in r["code"])
    assert evil == {"code": "'@EVIL", "name": "'=cmd|' /C calc'!A0", "modality": "CT", "body_region": "'-1",
                    "contrast": "none", "indications": "'+x"}
