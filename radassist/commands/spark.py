"""`radassist spark-predict`: batch prediction on Spark (optional extra radassist[spark])."""
from __future__ import annotations

import sys

from radassist.commands import db_parent


def register(sub) -> None:
    p = sub.add_parser("spark-predict", parents=[db_parent()],
                       help="batch prediction on Spark (JSONL/Parquet in, Parquet/JSONL out)")
    p.add_argument("--input", required=True, metavar="PATH", help="orders: JSONL file or Parquet file/folder")
    p.add_argument("--output", required=True, metavar="PATH", help="predictions: *.parquet folder, else one JSONL file")
    p.add_argument("--master", default=None, metavar="URL",
                   help="Spark master: local[2], local[*], spark://host:7077 (default: the active session, "
                        "else local[*]; not needed on Databricks)")
    p.add_argument("--engine", choices=("embedding", "llm"), default=None,
                   help="suggestion engine (default: the site setting, else embedding)")
    p.add_argument("--model-version", metavar="VERSION", default=None,
                   help="registry version (default: the active one; 'shipped': the shipped model)")
    p.add_argument("--catalog", metavar="CSV", help="protocol catalog (default: the database's)")
    p.add_argument("--top-k", type=int, default=3, metavar="N")
    p.add_argument("--partitions", type=int, default=None, metavar="N", help="default: 4 per core, and at least one per 20,000 orders")
    p.set_defaults(func=run_spark_predict)


def run_spark_predict(args) -> int:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        print("radassist: error: spark-predict needs the optional extra: pip install 'radassist[spark]'",
              file=sys.stderr)
        return 2
    from radassist.commands._common import resolve_catalog
    from radassist.paths import default_db_path
    from radassist.scale.spark_predict import spark_predict

    catalog = resolve_catalog(args)
    stats = spark_predict(args.input, args.output, master=args.master, engine=args.engine,
                          db_path=getattr(args, "db", None) or default_db_path(), catalog=catalog,
                          model_version=args.model_version, top_k=args.top_k, partitions=args.partitions)
    print(f"{stats.summary()} ({stats.model}, {args.master or 'default master'})", file=sys.stderr)
    return 0 if stats.errors == 0 else 1
