"""`radassist catalog import|list|export`: the site's protocol catalog."""
from __future__ import annotations

import csv
import sys

from radassist.commands import db_parent, open_db
from radassist.commands._common import add_auth_arguments, authenticate_cli


def register(sub) -> None:
    p = sub.add_parser("catalog", help="protocol catalog")
    csub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    imp = csub.add_parser("import", parents=[db_parent()], help="validate and load a catalog CSV")
    imp.add_argument("file", metavar="FILE")
    add_auth_arguments(imp)
    imp.set_defaults(func=run_catalog_import)
    lst = csub.add_parser("list", parents=[db_parent()], help="print the active catalog as CSV")
    lst.set_defaults(func=run_catalog_list)


def run_catalog_import(args) -> int:
    from radassist.access import SYSTEM, require
    from radassist.audit import record_event
    from radassist.catalog import CatalogError, load_catalog_csv, sync_catalog

    try:
        protocols = load_catalog_csv(args.file)
    except CatalogError as exc:
        for problem in exc.problems:
            print(f"{args.file}:{problem}", file=sys.stderr)
        print("catalog unchanged", file=sys.stderr)
        return 1
    from radassist.users import needs_bootstrap

    db = open_db(args)
    with db.session() as session:
        # An admin signs in; only the very first set-up, before any user exists, runs as the system.
        actor = SYSTEM if needs_bootstrap(session) and not args.user else authenticate_cli(args, session)
        require(actor, "catalog.edit")
        counts = sync_catalog(session, protocols)
        record_event(session, actor, "catalog.import", entity="catalog", details=counts)
    print(f"catalog: {counts['total']} protocols ({counts['added']} added, {counts['updated']} updated, "
          f"{counts['deactivated']} deactivated)")
    return 0


def run_catalog_list(args) -> int:
    from radassist.audit import spreadsheet_safe
    from radassist.catalog import REQUIRED_COLUMNS, ensure_catalog

    db = open_db(args)
    with db.session() as session:
        protocols = ensure_catalog(session)
    writer = csv.writer(sys.stdout)
    writer.writerow(REQUIRED_COLUMNS)
    for p in protocols:
        # Escaped as well: a catalog stored before the import check could hold a formula.
        writer.writerow([spreadsheet_safe(getattr(p, c)) for c in REQUIRED_COLUMNS])
    return 0
