"""Core benchmark: embedding engine accuracy on the dev set, and `radassist predict` speed/memory.

    .venv/bin/python bench/bench_core.py [--dev ../shared/dev_orders.jsonl] [--n 1000]

Prints a table. Accuracy counts a suggestion in the order's `acceptable` list as a hit.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def accuracy(engine, examples):
    preds = engine.predict_batch([e.order for e in examples], top_k=3)
    ok = [{e.code, *e.acceptable} for e in examples]
    top1 = sum(p.suggestions[0].code in a for p, a in zip(preds, ok)) / len(examples)
    top3 = sum(any(s.code in a for s in p.suggestions) for p, a in zip(preds, ok)) / len(examples)
    return top1, top3, preds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev", default=str(ROOT.parent / "shared" / "dev_orders.jsonl"))
    ap.add_argument("--n", type=int, default=1000, help="orders for the throughput run")
    args = ap.parse_args()

    from radassist.catalog import default_catalog
    from radassist.engines import create_embedding_engine
    from radassist.engines.embedding import EmbeddingEngine
    from radassist.safety import check_notes
    from radassist.synthetic import generate, read_labelled_jsonl

    catalog = default_catalog()
    dev = read_labelled_jsonl(args.dev)
    rows = []

    baseline = EmbeddingEngine(catalog)  # no head: plain cosine similarity
    b1, b3, _ = accuracy(baseline, dev)
    rows.append(("dev top-1 / top-3, untrained cosine baseline", f"{b1:.3f} / {b3:.3f}"))
    shipped = create_embedding_engine(catalog)
    s1, s3, preds = accuracy(shipped, dev)
    rows.append((f"dev top-1 / top-3, shipped head ({shipped.version})", f"{s1:.3f} / {s3:.3f}"))
    t0 = time.perf_counter()
    fresh = EmbeddingEngine(catalog, encoder=baseline.encoder)
    train = generate(catalog, per_protocol=40, seed=1)
    fit = fresh.fit(train)
    rows.append((f"fit on {len(train)} synthetic orders (s, incl. encoding)", f"{time.perf_counter() - t0:.1f}"))
    f1, f3, _ = accuracy(fresh, dev)
    rows.append(("dev top-1 / top-3, freshly fitted head", f"{f1:.3f} / {f3:.3f}"))
    rows.append(("held-out synthetic top-1 / temperature", f"{fit['val_top1']:.3f} / {fit['temperature']:.2f}"))
    flags = sum(len(check_notes(e.order.clinical_notes)) for e in dev)
    rows.append(("safety flags raised on dev notes", str(flags)))

    # Throughput, latency and memory of the real command, in its own process.
    pool = generate(catalog, per_protocol=max(1, args.n // len(catalog) + 1), seed=7)[: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        inp.write_text("".join(json.dumps({"accession": f"B{i}", "ordered_exam": e.order.ordered_exam,
                                           "clinical_notes": e.order.clinical_notes, "age": e.order.age,
                                           "sex": e.order.sex, "priority": e.order.priority}) + "\n"
                               for i, e in enumerate(pool)))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "radassist.cli", "predict", "--input", str(inp),
                               "--output", str(out), "--engine", "embedding", "--catalog",
                               str(ROOT / "resources" / "protocols.csv")],
                              capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        load_s = float(proc.stderr.split("loaded ")[1].split(" in ")[1].split(" s")[0])
        lat = sorted(json.loads(line)["latency_ms"] for line in out.read_text().splitlines())
    rows.append(("predict: process wall time (s)", f"{wall:.1f}"))
    rows.append(("predict: model load (s)", f"{load_s:.1f}"))
    rows.append((f"predict: orders/s after load ({len(pool)} orders)", f"{len(pool) / (wall - load_s):.0f}"))
    rows.append(("predict: p50 / p95 per-order latency in batch (ms)",
                 f"{lat[len(lat) // 2]:.1f} / {lat[int(len(lat) * 0.95)]:.1f}"))
    rows.append(("predict: peak RSS (MB)", f"{peak_mb:.0f}"))
    width = max(len(r[0]) for r in rows)
    print(f"{'metric'.ljust(width)}  value\n{'-' * width}  -----")
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")


if __name__ == "__main__":
    main()
