"""Benchmark the LLM engine on the dev set (CPU): load time, peak RSS, latency, throughput,
top-1/top-3 (``acceptable`` codes count as hits), in-catalog check, shortlist recall, and the
embedding engine on the same orders for comparison.

    python bench/bench_llm.py [--data ../shared/dev_orders.jsonl] [--adapter default]
                              [--shortlist-k 10] [--quantization nf4] [--threads N] [--no-embedding]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from radassist.catalog import default_catalog  # noqa: E402
from radassist.domain import Order  # noqa: E402
from radassist.engines.llm_model import peak_rss_mb  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "dev_orders.jsonl"


def read_dev(path: Path):
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            order = Order(d["accession"], d["ordered_exam"], d.get("clinical_notes", ""), d.get("age"),
                          d.get("sex", "U"), d.get("priority", "ROUTINE"))
            rows.append((order, {d["expected"], *d.get("acceptable", [])}))
    return rows


def accuracy(preds, rows, codes):
    top1 = sum(p.suggestions[0].code in ok for p, (_, ok) in zip(preds, rows)) / len(rows)
    top3 = sum(any(s.code in ok for s in p.suggestions[:3]) for p, (_, ok) in zip(preds, rows)) / len(rows)
    in_catalog = all(s.code in codes for p in preds for s in p.suggestions)
    return top1, top3, in_catalog


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--adapter", default="default")
    ap.add_argument("--base-model", default=None)
    ap.add_argument("--quantization", default="nf4", choices=("nf4", "none"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shortlist-k", type=int, default=10, help="0 = score the whole catalog")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--no-embedding", action="store_true", help="skip the embedding engine")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    catalog = default_catalog()
    codes = {p.code for p in catalog}
    rows = read_dev(args.data)
    orders = [o for o, _ in rows]
    table: list[tuple[str, str]] = []

    embedding = None
    if not args.no_embedding or args.shortlist_k:
        from radassist.engines import create_embedding_engine

        t = time.perf_counter()
        embedding = create_embedding_engine(catalog)
        emb_load = time.perf_counter() - t

    from radassist.engines.llm import LLMEngine

    rss_before = peak_rss_mb()
    t = time.perf_counter()
    engine = LLMEngine(catalog, adapter=args.adapter, base_model=args.base_model, quantization=args.quantization,
                       device=args.device, shortlist_engine=embedding if args.shortlist_k else None,
                       shortlist_size=args.shortlist_k or len(catalog))
    load_s = time.perf_counter() - t
    engine.predict(orders[0])  # warm-up

    single_ms = []
    for order in orders:
        t = time.perf_counter()
        engine.predict(order)
        single_ms.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    preds = []
    for i in range(0, len(orders), args.batch_size):
        preds += engine.predict_batch(orders[i:i + args.batch_size], top_k=3)
    batch_s = time.perf_counter() - t
    top1, top3, in_cat = accuracy(preds, rows, codes)

    table += [
        ("model", f"{engine.model_id} on {engine.loaded.base_id} ({args.quantization}, {engine.device}, "
                  f"{torch.get_num_threads()} threads)"),
        ("calibration", f"{engine.calibration.normalization} log-prob, T={engine.calibration.temperature:.3f}"),
        ("candidates", f"embedding shortlist k={args.shortlist_k}" if args.shortlist_k else "whole catalog"),
        ("load time (base+adapter)", f"{load_s:.1f} s"),
        ("peak RSS", f"{peak_rss_mb():.0f} MB (before LLM load: {rss_before:.0f} MB)"),
        ("latency p50 / p95 (1 order)", f"{statistics.median(single_ms):.0f} / "
                                        f"{sorted(single_ms)[int(0.95 * (len(single_ms) - 1))]:.0f} ms"),
        (f"throughput (batches of {args.batch_size})", f"{len(orders) / batch_s:.2f} orders/s"),
        ("top-1 / top-3", f"{top1:.3f} / {top3:.3f}  (n={len(rows)})"),
        ("all suggestions in catalog", str(in_cat)),
    ]
    if embedding is not None:
        for k in sorted({3, 5, 10, args.shortlist_k} - {0}):
            lists = embedding.shortlist(orders, k)
            recall = sum(bool(set(lst) & ok) for lst, (_, ok) in zip(lists, rows)) / len(rows)
            table.append((f"embedding shortlist recall@{k}", f"{recall:.3f}"))
    if embedding is not None and not args.no_embedding:
        t = time.perf_counter()
        e_preds = embedding.predict_batch(orders, top_k=3)
        e_s = time.perf_counter() - t
        e1, e3, e_in = accuracy(e_preds, rows, codes)
        table.append(("embedding engine top-1 / top-3", f"{e1:.3f} / {e3:.3f}  ({embedding.model_id}, "
                                                        f"load {emb_load:.1f} s, {len(orders) / e_s:.1f} orders/s)"))
    misses = [(o.accession, p.suggestions[0].code, sorted(ok)) for p, (o, ok) in zip(preds, rows)
              if p.suggestions[0].code not in ok]

    width = max(len(k) for k, _ in table)
    print(f"LLM engine bench on {args.data.name}")
    for key, value in table:
        print(f"  {key:<{width}}  {value}")
    if misses:
        print("  top-1 misses: " + "; ".join(f"{a} -> {got} (want {'/'.join(ok)})" for a, got, ok in misses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
