"""`radassist listen` (HL7 v2 MLLP listener) and `radassist serve` (listeners, suggestions, outbox)."""
from __future__ import annotations

import sys

from radassist.commands import db_parent, open_db


def _common(p) -> None:
    p.add_argument("--mllp", action="append", metavar="HOST:PORT",
                   help="listen for HL7 v2 orders here (default 127.0.0.1:2575; repeatable; "
                        "0.0.0.0:2575 to accept the interface engine from the network)")
    p.add_argument("--accession-fields", metavar="LIST",
                   help="where the accession number is, first non-empty wins (default "
                        "OBR-18,OBR-3,ORC-3,OBR-2,ORC-2)")
    p.add_argument("--key-file", metavar="PATH",
                   help="receive orders as this service account (users add-service); default: the "
                        "built-in 'interface' account, role service")


def register(sub) -> None:
    p = sub.add_parser("listen", parents=[db_parent()],
                       help="HL7 v2 order listener (MLLP): ORM^O01/OMI^O23 in, ACK out")
    _common(p)
    p.set_defaults(func=run_listen)
    s = sub.add_parser("serve", parents=[db_parent()],
                       help="background service: listeners, suggestion worker, results outbox")
    _common(s)
    s.add_argument("--no-listen", action="store_true", help="run no MLLP listener (suggestions/outbox only)")
    s.add_argument("--results-mllp", metavar="HOST:PORT", help="send protocol results (HL7 v2) to this peer")
    s.add_argument("--results-style", choices=("xo", "ack"), default="xo",
                   help="xo: ORM/OMI with order control XO (default); ack: ORR^O02 / ORL^O22")
    s.add_argument("--results-placement", choices=("obr4", "obx"), default="obr4",
                   help="protocol code and name in OBR-4 (default) or in an OBX")
    s.add_argument("--results-folder", metavar="DIR",
                   help="also write FHIR R4 ServiceRequest updates + Provenance here")
    s.add_argument("--facility", default="", help="MSH-4 of the results sent")
    s.add_argument("--engine", choices=("embedding", "llm"), default=None, help="default: the site setting")
    s.add_argument("--no-suggestions", action="store_true", help="do not compute suggestions in this process")
    s.set_defaults(func=run_serve)


def _config(args, suggestions: bool):
    from radassist.interop.hl7_orders import ACCESSION_FIELDS, DEFAULT_ACCESSION_FIELDS
    from radassist.interop.mllp import parse_hostport
    from radassist.service import ServiceConfig

    listen = [] if getattr(args, "no_listen", False) else [parse_hostport(x) for x in (args.mllp or ["127.0.0.1:2575"])]
    fields = DEFAULT_ACCESSION_FIELDS
    if args.accession_fields:
        fields = tuple(f.strip().upper() for f in args.accession_fields.split(",") if f.strip())
        unknown = [f for f in fields if f not in ACCESSION_FIELDS]
        if unknown or not fields:
            raise ValueError(f"unknown accession field(s) {', '.join(unknown)}; known: {', '.join(ACCESSION_FIELDS)}")
    return ServiceConfig(listen=listen, accession_fields=fields, suggestions=suggestions)


def _sign_in(args, db, config) -> bool:
    """--key-file: the orders are received and audited as that service account. False if refused."""
    if not getattr(args, "key_file", None):
        return True
    from radassist import users

    try:
        with db.session() as session:
            config.actor = users.authenticate_service(session, args.key_file)
    except users.AuthenticationError as exc:
        print(f"radassist: sign-in refused: {exc}", file=sys.stderr)
        return False
    return True


def _announce(service) -> None:
    for listener in service.listeners:
        print(f"listening for HL7 v2 orders (MLLP) on {listener.host}:{listener.port}", file=sys.stderr)
    sys.stderr.flush()


def run_listen(args) -> int:
    from radassist.catalog import ensure_catalog
    from radassist.service import Service

    db = open_db(args)
    with db.session(immediate=True) as session:
        ensure_catalog(session)
    config = _config(args, suggestions=False)
    if not _sign_in(args, db, config):
        return 3
    service = Service(db, config).start()
    _announce(service)
    service.run_forever()
    print("stopped", file=sys.stderr)
    return 0


def run_serve(args) -> int:
    from radassist.catalog import ensure_catalog
    from radassist.interop.mllp import parse_hostport
    from radassist.interop.outbox import Destination
    from radassist.service import Service

    db = open_db(args)
    with db.session(immediate=True) as session:
        ensure_catalog(session)
    config = _config(args, suggestions=not args.no_suggestions)
    if not _sign_in(args, db, config):
        return 3
    if args.results_mllp:
        host, port = parse_hostport(args.results_mllp)
        config.destinations.append(Destination("mllp", host=host, port=port, style=args.results_style,
                                               placement=args.results_placement, facility=args.facility))
    if args.results_folder:
        config.destinations.append(Destination("fhir", folder=args.results_folder))
    if args.engine and config.suggestions:
        from radassist.engine_factory import create_site_engine

        config.engine_factory = lambda: create_site_engine(db, args.engine)
    service = Service(db, config).start()
    _announce(service)
    for dest in config.destinations:
        print(f"sending results to {dest.name}", file=sys.stderr)
    service.run_forever()
    print("stopped", file=sys.stderr)
    return 0
