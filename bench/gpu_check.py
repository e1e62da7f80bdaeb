"""CUDA check for the LLM engine (run on a GPU machine from the repo root):

    python bench/gpu_check.py [--base-model DIR] [--adapter default] [--steps 50]

1. 4-bit NF4 load on CUDA (load time, VRAM);
2. predict 50 dev orders (../shared/dev_orders.jsonl repeated to 50; whole catalog as
   candidates): latency per order, scored tokens/s, top-1/top-3, peak VRAM;
3. 50 QLoRA steps on synthetic orders on a freshly loaded model: s/step, tokens/s, loss,
   first LoRA gradient norm, peak VRAM. Nothing is written to models/.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-model", default=None)
    ap.add_argument("--adapter", default="default", help="'base' for none")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "dev_orders.jsonl")
    ap.add_argument("--orders", type=int, default=50)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU", file=sys.stderr)
        return 2

    from bench_llm import accuracy, read_dev

    from radassist.catalog import default_catalog
    from radassist.engines.llm import LLMEngine
    from radassist.engines.llm_model import load_base_model
    from radassist.synthetic import generate
    from radassist.training.qlora import QLoRAConfig, train

    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    catalog = default_catalog()
    codes = {p.code for p in catalog}
    if args.data.is_file():
        rows = read_dev(args.data)
    else:  # a copy without ../shared: use synthetic orders instead
        rows = [(ex.order, {ex.code}) for ex in generate(catalog, per_protocol=1, seed=7)]
    rows = (rows * (args.orders // len(rows) + 1))[: args.orders]
    orders = [o for o, _ in rows]

    # 1. 4-bit load
    torch.cuda.reset_peak_memory_stats()
    loaded = load_base_model(args.base_model, quantization="nf4", device="cuda")
    report["load"] = loaded.summary()
    engine = LLMEngine(catalog, adapter=None if args.adapter == "base" else args.adapter, loaded=loaded)
    report["model"] = engine.model_id

    # 2. predict
    engine.predict(orders[0])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    lat = []
    for order in orders:
        t = time.perf_counter()
        engine.predict(order)
        torch.cuda.synchronize()
        lat.append((time.perf_counter() - t) * 1000)
    tok = loaded.tokenizer
    from radassist.engines.llm import build_prompt

    n_tokens = sum(len(tok(build_prompt(o, engine.safety(o.clinical_notes))).input_ids) for o in orders)
    n_tokens += len(orders) * len(engine.scorer._trie(list(engine._cand_ids.values()))[0])
    t = time.perf_counter()
    preds = []
    for i in range(0, len(orders), 16):
        preds += engine.predict_batch(orders[i:i + 16])
    torch.cuda.synchronize()
    batch_s = time.perf_counter() - t
    top1, top3, in_cat = accuracy(preds, rows, codes)
    report["predict"] = {
        "orders": len(orders), "p50_ms": round(statistics.median(lat), 1),
        "p95_ms": round(sorted(lat)[int(0.95 * (len(lat) - 1))], 1),
        "batch_orders_per_s": round(len(orders) / batch_s, 2),
        "batch_tokens_per_s": round(n_tokens / batch_s, 0),
        "top1": round(top1, 3), "top3": round(top3, 3), "all_in_catalog": in_cat,
        "peak_vram_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
    }
    del engine, loaded
    torch.cuda.empty_cache()

    # 3. QLoRA steps on a freshly loaded model
    torch.cuda.reset_peak_memory_stats()
    data = generate(catalog, per_protocol=max(2, args.steps * args.batch_size // len(catalog) + 1), seed=3)
    cfg = QLoRAConfig(base_model=args.base_model, device="cuda", max_steps=args.steps, batch_size=args.batch_size,
                      val_max=32)
    steps = []
    with tempfile.TemporaryDirectory() as out:
        result = train(cfg, data, data[:32], catalog, progress=steps.append, out_dir=out, command="gpu_check")
    report["qlora"] = {
        "steps": result.steps, "s_per_step": result.metrics.get("seconds_per_step"),
        "first_lora_grad_norm": round(result.first_grad_norm, 5), "optimizer": result.optimizer,
        "loss_first_last": [round(result.losses[0], 4), round(result.losses[-1], 4)],
        "val_top1": result.metrics.get("top1"),
        "peak_vram_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
