"""The protocol catalog: CSV parsing and validation (no database here)."""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from radassist.domain import MODALITIES, Protocol
from radassist.paths import default_catalog_path
from radassist.store.models import ProtocolRow, utcnow

REQUIRED_COLUMNS = ("code", "name", "modality", "body_region", "contrast", "indications")
# A cell starting with one of these runs as a formula when the CSV is opened in a spreadsheet.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def formula_problem(field: str, value: str) -> str | None:
    """A message naming the field (never its value) when ``value`` would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return (f"field {field!r} starts with '=', '+', '-', '@', a tab or a carriage return, which a "
                "spreadsheet would run as a formula: remove or reword the first character")
    return None


@dataclass(frozen=True)
class CatalogProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class CatalogError(ValueError):
    def __init__(self, source: str, problems: Sequence[CatalogProblem]):
        self.source = source
        self.problems = list(problems)
        text = "\n".join(f"{source}:{p}" for p in self.problems)
        super().__init__(f"invalid catalog ({len(self.problems)} problem(s)):\n{text}")


def parse_catalog(text: str, source: str = "<catalog>") -> list[Protocol]:
    """Parse and validate catalog CSV text. Raises CatalogError listing every problem."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise CatalogError(source, [CatalogProblem(1, f"missing column(s): {', '.join(missing)}")])
    problems: list[CatalogProblem] = []
    protocols: list[Protocol] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        raw = {(k or "").strip(): (v if isinstance(v, str) else "") for k, v in row.items() if k is not None}
        row = {k: v.strip() for k, v in raw.items()}
        # checked before and after trimming spaces: "\t=cmd" and "  =cmd" are refused alike
        formula = [msg for c in REQUIRED_COLUMNS
                   if (msg := formula_problem(c, raw.get(c, "").lstrip(" ")) or formula_problem(c, row.get(c, "")))]
        if formula:
            problems.extend(CatalogProblem(line, msg) for msg in formula)
            continue
        code = row["code"]
        if not code:
            problems.append(CatalogProblem(line, "empty code"))
            continue
        if code in seen:
            problems.append(CatalogProblem(line, f"duplicate code {code!r} (first on line {seen[code]})"))
            continue
        seen[code] = line
        if not row["name"]:
            problems.append(CatalogProblem(line, f"{code}: empty name"))
        modality = row["modality"].upper()
        if modality not in MODALITIES:
            problems.append(
                CatalogProblem(line, f"{code}: field 'modality': unknown modality (known: {', '.join(MODALITIES)})")
            )
        protocols.append(
            Protocol(
                code=code,
                name=row["name"],
                modality=modality,
                body_region=row["body_region"],
                contrast=row["contrast"].lower() or "none",
                indications=row["indications"],
            )
        )
    if not protocols and not problems:
        problems.append(CatalogProblem(1, "catalog has no protocols"))
    if problems:
        raise CatalogError(source, problems)
    return protocols


def load_catalog_csv(path: str | Path) -> list[Protocol]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CatalogError(str(path), [CatalogProblem(0, f"not UTF-8 ({exc.reason})")]) from None
    return parse_catalog(text, source=str(path))


def default_catalog() -> list[Protocol]:
    """The catalog shipped in resources/protocols.csv."""
    return load_catalog_csv(default_catalog_path())


# --- the catalog in the database -------------------------------------------------------------


def sync_catalog(session: Session, protocols: Sequence[Protocol]) -> dict[str, int]:
    """Make the active catalog in the database equal ``protocols``.

    Protocols no longer listed are deactivated, not deleted: past decisions still name them.
    """
    problems = [CatalogProblem(i, f"{p.code if not p.code.startswith(FORMULA_START) else '?'}: {msg}")
                for i, p in enumerate(protocols, 1) for c in REQUIRED_COLUMNS
                if (msg := formula_problem(c, getattr(p, c, "")))]
    if problems:  # the same rule for a catalog edited in the app as for an imported CSV
        raise CatalogError("<catalog>", problems)
    existing = {row.code: row for row in session.scalars(select(ProtocolRow))}
    added = updated = 0
    for p in protocols:
        row = existing.pop(p.code, None)
        values = dict(name=p.name, modality=p.modality, body_region=p.body_region, contrast=p.contrast,
                      indications=p.indications, active=True)
        if row is None:
            session.add(ProtocolRow(code=p.code, updated_at=utcnow(), **values))
            added += 1
        elif any(getattr(row, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(row, k, v)
            row.updated_at = utcnow()
            updated += 1
    deactivated = 0
    for row in existing.values():
        if row.active:
            row.active = False
            deactivated += 1
    session.flush()
    return {"added": added, "updated": updated, "deactivated": deactivated, "total": len(protocols)}


def catalog_from_db(session: Session) -> list[Protocol]:
    rows = session.scalars(select(ProtocolRow).where(ProtocolRow.active.is_(True)).order_by(ProtocolRow.code))
    return [Protocol(r.code, r.name, r.modality, r.body_region, r.contrast, r.indications) for r in rows]


def ensure_catalog(session: Session) -> list[Protocol]:
    """The database's catalog; on a new database, the shipped one is loaded first."""
    protocols = catalog_from_db(session)
    if not protocols:
        sync_catalog(session, default_catalog())
        protocols = catalog_from_db(session)
    return protocols
