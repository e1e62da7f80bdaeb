"""`radassist import FILE...`: orders from JSONL or CSV."""
from __future__ import annotations

import sys

from radassist.commands import db_parent, open_db


def register(sub) -> None:
    p = sub.add_parser("import", parents=[db_parent()], help="import orders from JSONL or CSV files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=run_import)


def run_import(args) -> int:
    from radassist.catalog import ensure_catalog
    from radassist.ingest import import_files

    db = open_db(args)
    with db.session() as session:
        ensure_catalog(session)
    report = import_files(db, args.files)
    for problem in report.problems:
        print(f"rejected {problem}", file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1
