"""`radassist models list|promote VERSION|rollback`: the model registry."""
from __future__ import annotations

from radassist.commands import db_parent, open_db
from radassist.commands._common import add_auth_arguments, authenticate_cli


def register(sub) -> None:
    p = sub.add_parser("models", help="trained model versions")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    lst = msub.add_parser("list", parents=[db_parent()], help="every training run and its status")
    lst.add_argument("--engine", choices=("embedding", "llm"))
    lst.set_defaults(func=run_list)
    pro = msub.add_parser("promote", parents=[db_parent()], help="make a candidate the active version (admin)")
    pro.add_argument("version")
    add_auth_arguments(pro)
    pro.set_defaults(func=run_promote)
    rb = msub.add_parser("rollback", parents=[db_parent()], help="back to the previously active version (admin)")
    rb.add_argument("--engine", choices=("embedding", "llm"), required=True)
    add_auth_arguments(rb)
    rb.set_defaults(func=run_rollback)


def run_list(args) -> int:
    from radassist.registry import list_versions

    with open_db(args).session() as session:
        versions = list_versions(session, args.engine)
    if not versions:
        print("no trained versions (the shipped models are in use)")
        return 0
    print(f"{'version':44} {'engine':9} {'status':9} {'by':10} {'created':19} top-1 held-out")
    for v in versions:
        cand = v.metrics.get("comparison", {}).get("candidate", {}).get("top1")
        print(f"{v.version:44} {v.engine:9} {v.status:9} {v.created_by:10} {v.created_at:19} "
              f"{'' if cand is None else f'{cand:.3f}'}")
    return 0


def run_promote(args) -> int:
    from radassist.registry import promote

    with open_db(args).session() as session:
        v = promote(session, authenticate_cli(args, session), args.version)
    print(f"{v.version} is now the active {v.engine} model")
    return 0


def run_rollback(args) -> int:
    from radassist.registry import rollback

    with open_db(args).session() as session:
        v = rollback(session, authenticate_cli(args, session), args.engine)
    print(f"active {args.engine} model: {v.version if v else 'the shipped default'}")
    return 0
