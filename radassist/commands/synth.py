"""`radassist synth`: write synthetic labelled orders (training data) for a catalog."""
from __future__ import annotations

from radassist.commands import db_parent


def register(sub) -> None:
    p = sub.add_parser("synth", parents=[db_parent()], help="generate synthetic labelled orders")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--per-protocol", type=int, default=40, metavar="N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--catalog", metavar="CSV", help="catalog (default: the shipped one)")
    p.set_defaults(func=run_synth)


def run_synth(args) -> int:
    from radassist.catalog import default_catalog, load_catalog_csv
    from radassist.synthetic import generate, write_jsonl

    catalog = load_catalog_csv(args.catalog) if args.catalog else default_catalog()
    n = write_jsonl(generate(catalog, per_protocol=args.per_protocol, seed=args.seed), args.out)
    print(f"wrote {n} orders for {len(catalog)} protocols to {args.out}")
    return 0
