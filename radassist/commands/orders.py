"""`radassist import FILE...`: orders from JSONL, CSV, HL7 v2 (.hl7) or FHIR R4 (.json) files.

Import needs an account: a signed-in user with the import permission (``--user NAME`` with
``--password-stdin`` or ``--password-file PATH``) or a service account's key file (``--key-file
PATH``, see ``radassist users add-service``). The import is audited as that account.
"""
from __future__ import annotations

import sys

from radassist.commands import db_parent, open_db


def register(sub) -> None:
    p = sub.add_parser("import", parents=[db_parent()],
                       help="import orders from JSONL, CSV, HL7 v2 or FHIR files (needs --user or --key-file)")
    p.add_argument("files", nargs="+", metavar="FILE")
    auth = p.add_argument_group("who imports (one of)")
    auth.add_argument("--key-file", metavar="PATH", help="a service account's key file (users add-service)")
    auth.add_argument("--user", metavar="NAME", help="a user with the import permission")
    auth.add_argument("--password-stdin", action="store_true", help="read --user's password from stdin")
    auth.add_argument("--password-file", metavar="PATH", help="read --user's password from this file's first line")
    p.set_defaults(func=run_import)


def _password(args) -> str:
    import getpass

    if args.password_file:
        with open(args.password_file, encoding="utf-8") as fh:
            return fh.readline().rstrip("\r\n")
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass(f"Password for {args.user}: ")


def sign_in(args, db):
    """The acting account from --key-file or --user; raises users.AuthenticationError."""
    from radassist import users

    if args.key_file and args.user:
        raise users.AuthenticationError("give either --key-file or --user, not both")
    if not args.key_file and not args.user:
        raise users.AuthenticationError("import needs an account: add --user NAME (with --password-stdin or "
                                        "--password-file) or --key-file PATH of a service account")
    password = None if args.key_file else _password(args)  # asked before any lock is taken
    with db.session(immediate=True) as session:  # queued fairly behind running importers
        if args.key_file:
            return users.authenticate_service(session, args.key_file)
        return users.authenticate(session, args.user, password)


def run_import(args) -> int:
    from radassist import users
    from radassist.access import PermissionDenied
    from radassist.catalog import ensure_catalog
    from radassist.ingest import import_files

    db = open_db(args)
    try:
        try:
            actor = sign_in(args, db)
        except (users.AuthenticationError, OSError) as exc:
            print(f"radassist: sign-in refused: {exc}", file=sys.stderr)
            return 3
        with db.session(immediate=True) as session:  # two processes on a new database: one seeds the catalog
            ensure_catalog(session)
        try:
            report = import_files(db, args.files, actor=actor)
        except PermissionDenied as exc:
            print(f"radassist: {exc}", file=sys.stderr)
            return 3
    finally:
        db.dispose()
    for problem in report.problems:
        print(f"rejected {problem}", file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1
