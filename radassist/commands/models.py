"""`radassist models list|promote VERSION|rollback`: the model registry.

`promote` verifies the model's files against the hashes recorded at training time and applies
the promotion gate (top-1 and top-3 on the held-out decisions; enough of them to tell);
``--force`` overrides only a held-out set too small to tell, and is audited as such.
"""
from __future__ import annotations

import sys

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
    pro.add_argument("--force", action="store_true",
                     help="promote although the held-out set is too small to tell (audited)")
    add_auth_arguments(pro)
    pro.set_defaults(func=run_promote)
    rb = msub.add_parser("rollback", parents=[db_parent()], help="back to the previously active version (admin)")
    rb.add_argument("--engine", choices=("embedding", "llm"), required=True)
    add_auth_arguments(rb)
    rb.set_defaults(func=run_rollback)


def _pct(value) -> str:
    return "" if value is None else f"{value:.1%}"


def run_list(args) -> int:
    from radassist.registry import list_versions, reap_dead_runs

    with open_db(args).session() as session:
        reaped = reap_dead_runs(session)  # a killed run must not stay "running"
        versions = list_versions(session, args.engine)
    if reaped:
        print(f"{reaped} run(s) whose training process had ended without reporting marked failed", file=sys.stderr)
    if not versions:
        print("no trained versions (the shipped models are in use)")
        return 0
    print(f"{'version':34} {'engine':9} {'status':9} {'by':12} {'created':19} "
          f"{'top-1 cand/act':>15} {'top-3 cand/act':>15} {'held-out':>8}  gate")
    for v in versions:
        cmp = v.metrics.get("comparison") or {}
        cand, act = cmp.get("candidate") or {}, cmp.get("active") or {}
        gate = v.metrics.get("gate") or {}
        verdict = "" if not gate else ("passes" if gate.get("passed") else "refuses")
        top1 = f"{_pct(cand.get('top1'))}/{_pct(act.get('top1'))}" if cand else ""
        top3 = f"{_pct(cand.get('top3'))}/{_pct(act.get('top3'))}" if cand else ""
        print(f"{v.version:34} {v.engine:9} {v.status:9} {v.created_by:12} {v.created_at:19} "
              f"{top1:>15} {top3:>15} {cmp.get('heldout', ''):>8}  {verdict}")
    return 0


def run_promote(args) -> int:
    from radassist.registry import ModelIntegrityError, PromotionRefused, promote

    db = open_db(args)
    with db.session() as session:
        actor = authenticate_cli(args, session)
    try:
        with db.session() as session:
            v = promote(session, actor, args.version, force=args.force)
    except (PromotionRefused, ModelIntegrityError) as exc:
        print(f"radassist: refused: {exc}", file=sys.stderr)
        return 3
    print(f"{v.version} is now the active {v.engine} model")
    return 0


def run_rollback(args) -> int:
    from radassist.registry import rollback

    with open_db(args).session() as session:
        v = rollback(session, authenticate_cli(args, session), args.engine)
    print(f"active {args.engine} model: {v.version if v else 'the shipped default'}")
    return 0
