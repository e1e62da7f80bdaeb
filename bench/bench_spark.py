"""Spark batch prediction vs plain in-process predict (embedding engine), and MLflow overhead.

    .venv/bin/python bench/bench_spark.py --n 20000 [--master local[2]] [--skip-mlflow]

Prints a table: orders/s, ratio (spark wall / plain wall; target <= 1.5), peak RSS of this process
tree (driver; Spark's Python workers are separate processes, reported via /proc children at the end).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _rss_mb() -> float:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(self_kb, child_kb) / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--skip-mlflow", action="store_true")
    args = ap.parse_args(argv)

    from radassist.catalog import default_catalog
    from radassist.engine_factory import build_engine
    from radassist.scale.spark_predict import get_session, spark_predict
    from radassist.synthetic import generate, write_jsonl

    catalog = default_catalog()
    tmp = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    orders = tmp / "orders.jsonl"
    examples = generate(catalog, per_protocol=max(1, args.n // len(catalog) + 1), seed=7)[:args.n]
    write_jsonl(examples, orders)

    t0 = time.perf_counter()
    engine = build_engine("embedding", catalog)
    for start in range(0, len(examples), 64):
        engine.predict_batch([e.order for e in examples[start:start + 64]], top_k=3)
    plain = time.perf_counter() - t0
    plain_rss = _rss_mb()

    spark = get_session(args.master)
    t0 = time.perf_counter()
    stats = spark_predict(orders, tmp / "out.parquet", spark=spark)
    wall = time.perf_counter() - t0
    spark.stop()

    print(f"{'run':28} {'orders':>8} {'wall s':>8} {'orders/s':>9} {'ratio':>6} {'peak RSS MB':>12}")
    print(f"{'plain predict (in-process)':28} {len(examples):8d} {plain:8.1f} {len(examples) / plain:9.1f} {1:6.2f} "
          f"{plain_rss:12.0f}")
    print(f"{'spark-predict ' + args.master:28} {stats.rows:8d} {wall:8.1f} {stats.rows / wall:9.1f} "
          f"{wall / plain:6.2f} {_rss_mb():12.0f}")

    if not args.skip_mlflow:
        from radassist.engines.embedding import default_head_dir
        from radassist.tracking.mlflow_observer import MLflowObserver
        from radassist.training.run_events import RunInfo

        obs = MLflowObserver(f"sqlite:///{tmp / 'mlflow.db'}")
        run = RunInfo("embedding", "bench-1", None, "bench")
        t0 = time.perf_counter()
        obs.run_started(run, {"epochs": 100})
        for step in range(100):
            obs.step(run, step, 1.0 / (step + 1))
        obs.run_finished(run, {"top1": 0.9}, default_head_dir(), {"version": "bench-1"})
        print(f"MLflow logging of a 100-step run: {time.perf_counter() - t0:.1f} s "
              "(compare with the run's own wall time for the overhead)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
