"""Model benchmark: accuracy by category, confidence, speed, and the writer-held-out table.

    .venv/bin/python bench/bench_model.py                     # dev sets, embedding engine + untrained baseline
    .venv/bin/python bench/bench_model.py --engines embedding llm
    .venv/bin/python bench/bench_model.py --style-folds        # + train on 7 writer styles, test on the 8th (~3 min)

Accuracy counts any code in an order's `acceptable` list. "cov@98 best" is the largest share of
orders that could be pre-selected on that set at 98% precision; "pre-sel" / "prec" are what the
engine's stored review threshold (fitted on writer-held-out corpus folds) actually pre-selects.
Latency: one order per call (what the app's worker does), p50/p95; throughput: batches of 64.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = ROOT.parent / "shared"


def build(name, catalog):
    from radassist.engine_factory import build_engine as create_engine
    from radassist.engines.embedding import EmbeddingEngine

    if name == "untrained":
        return EmbeddingEngine(catalog)
    return create_engine(name, catalog)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", nargs="+", default=["untrained", "embedding"])
    ap.add_argument("--data", nargs="+", default=[str(SHARED / "dev_orders.jsonl"), str(SHARED / "dev_orders2.jsonl")])
    ap.add_argument("--latency-orders", type=int, default=60)
    ap.add_argument("--style-folds", action="store_true")
    args = ap.parse_args()

    from radassist.catalog import default_catalog
    from radassist.evaluation import evaluate_predictions
    from radassist.synthetic import read_labelled_jsonl

    catalog = default_catalog()
    sets = {Path(p).name: read_labelled_jsonl(p) for p in args.data if Path(p).exists()}
    rows, cats, speed = [], [], []
    for name in args.engines:
        t0 = time.perf_counter()
        engine = build(name, catalog)
        load_s = time.perf_counter() - t0
        for set_name, data in sets.items():
            preds = engine.predict_batch([e.order for e in data], top_k=3)
            r = evaluate_predictions(data, preds)
            rows.append((name, set_name, r))
            for c, d in sorted(r.per_category.items()):
                if c:
                    cats.append((name, set_name, c, d))
        orders = [e.order for data in sets.values() for e in data][: args.latency_orders]
        lat = []
        for o in orders:
            t = time.perf_counter()
            engine.predict_batch([o], top_k=3)
            lat.append((time.perf_counter() - t) * 1000)
        many = [e.order for data in sets.values() for e in data] * 4
        t = time.perf_counter()
        for i in range(0, len(many), 64):
            engine.predict_batch(many[i:i + 64], top_k=3)
        ops = len(many) / (time.perf_counter() - t)
        speed.append((name, load_s, np.percentile(lat, 50), np.percentile(lat, 95), ops))

    print(f"{'engine':<11} {'set':<20} {'top-1':>6} {'top-3':>6} {'ECE':>6} {'cov@98 best':>11} {'pre-sel':>8} {'prec':>6}")
    for name, set_name, r in rows:
        print(f"{name:<11} {set_name:<20} {r.top1:>6.3f} {r.top3:>6.3f} {r.ece:>6.3f} {r.coverage_at_target:>11.3f} "
              f"{1 - r.review_rate:>8.3f} {r.precision_pre_selected:>6.3f}")
    if cats:
        print(f"\n{'engine':<11} {'set':<20} {'category':<22} {'n':>4} {'top-1':>6} {'top-3':>6}")
        for name, set_name, c, d in cats:
            print(f"{name:<11} {set_name:<20} {c:<22} {d['n']:>4} {d['top1']:>6.3f} {d['top3']:>6.3f}")
    print(f"\n{'engine':<11} {'load s':>7} {'p50 ms':>8} {'p95 ms':>8} {'orders/s':>9}")
    for name, load_s, p50, p95, ops in speed:
        print(f"{name:<11} {load_s:>7.1f} {p50:>8.1f} {p95:>8.1f} {ops:>9.1f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")

    if args.style_folds:
        from radassist.synthetic import generate
        from radassist.training.style_folds import load_corpus, train_by_style

        corpus = load_corpus(ROOT / "data" / "corpus")
        _, report = train_by_style(catalog, corpus, generate(catalog, per_protocol=40, seed=1))
        print("\nwriter-held-out validation (train on the other styles + synthetic replay)")
        print(report.table())


if __name__ == "__main__":
    main()
