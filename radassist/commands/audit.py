"""`radassist audit export|verify`: hand the audit trail to compliance, and check it is intact."""
from __future__ import annotations

import sys

from radassist.commands import db_parent, open_db
from radassist.commands._common import authenticate_cli


def register(subparsers) -> None:
    audit = subparsers.add_parser("audit", help="export or verify the audit log")
    sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    exp = sub.add_parser("export", parents=[db_parent()],
                         help="export events (auditors and admins; the export itself is audited)")
    exp.add_argument("--format", required=True, choices=("csv", "json", "fhir"),
                     help="csv, json, or fhir (a Bundle of FHIR R4 AuditEvent resources)")
    exp.add_argument("--since", metavar="DATE", help="first day (YYYY-MM-DD) or ISO 8601 UTC time, inclusive")
    exp.add_argument("--until", metavar="DATE", help="last day (YYYY-MM-DD, whole day included) or ISO time")
    exp.add_argument("--out", required=True, metavar="FILE", help="file to write (0600, written atomically)")
    exp.add_argument("--user", required=True, metavar="NAME", help="the auditor or admin exporting")
    exp.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    exp.set_defaults(func=cmd_export)

    ver = sub.add_parser("verify", parents=[db_parent()],
                         help="check the hash chain and the HMACs; exit 1 naming the first bad event")
    ver.add_argument("--against", metavar="FILE",
                     help="a checkpoint file: also detect deleted last events and a rewritten chain")
    ver.set_defaults(func=cmd_verify)

    cp = sub.add_parser("checkpoint", parents=[db_parent()],
                        help="verify, then write the log's head to FILE (keep it away from the database)")
    cp.add_argument("--out", required=True, metavar="FILE", help="checkpoint file to write (JSON, 0600)")
    cp.set_defaults(func=cmd_checkpoint)


def cmd_export(args) -> int:
    from radassist import audit, users

    try:  # a bad date is reported before asking for a password
        audit.to_iso(args.since)
        audit.to_iso(args.until, end=True)
    except ValueError as exc:
        print(f"radassist: error: {exc}", file=sys.stderr)
        return 2
    db = open_db(args)
    try:
        with db.session() as session:
            try:
                actor = authenticate_cli(args, session)
            except users.AuthenticationError as exc:
                print(f"radassist: sign-in refused: {exc}", file=sys.stderr)
                return 3
            result = audit.export_events(session, actor, args.format, args.out, since=args.since,
                                         until=args.until)
    finally:
        db.dispose()
    print(f"exported {result.count} events to {result.path} ({result.fmt})")
    return 0


def cmd_verify(args) -> int:
    from radassist import audit

    db = open_db(args)
    try:
        with db.session() as session:
            if args.against:
                try:
                    result = audit.verify_against(session, args.against)
                except audit.CheckpointError as exc:
                    print(f"radassist: error: {exc}", file=sys.stderr)
                    return 2
            else:
                result = audit.verify_chain(session)
    finally:
        db.dispose()
    if result.ok:
        against = f", matches the checkpoint {args.against}" if args.against else ""
        print(f"audit log intact: {result.count} events ({result.anchored} anchored with the site key), "
              f"head {result.head_id} {result.head_hash}{against}")
        if result.note:
            print(f"note: {result.note}")
        if not args.against:
            print("note: deleted last events show only against a checkpoint (audit verify --against FILE)")
        return 0
    where = f"at event {result.first_bad_id}" if result.first_bad_id else "against the checkpoint"
    print(f"audit log BROKEN {where}: {result.reason}")
    return 1


def cmd_checkpoint(args) -> int:
    from radassist import audit

    db = open_db(args)
    try:
        with db.session() as session:
            try:
                data = audit.write_checkpoint(session, args.out)
            except audit.CheckpointError as exc:
                print(f"radassist: error: {exc}", file=sys.stderr)
                return 1
    finally:
        db.dispose()
    signed = "signed with the site key" if data.get("mac") else "unsigned (no site key yet)"
    print(f"checkpoint written to {args.out}: {data['count']} events, head {data['head_id']} "
          f"{data['head_hash']} ({signed})")
    return 0
