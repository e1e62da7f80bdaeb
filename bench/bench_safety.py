"""Safety checker speed and dev-set flag agreement.

    .venv/bin/python bench/bench_safety.py

Throughput of `check_notes` (detection) and `assess_order` (detection + severity/status) on the
corpus notes, one core; then every flag found on the development sets with its severity and status.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from radassist.flag_assessment import assess_order
    from radassist.safety import check_notes
    from radassist.safety_policy import load_policy
    from radassist.synthetic import read_labelled_jsonl
    from radassist.training.style_folds import load_corpus

    policy = load_policy()
    orders = [e.order for e in load_corpus(ROOT / "data" / "corpus")]
    for name, fn in (("check_notes", lambda o: check_notes(o.clinical_notes)),
                     ("assess_order", lambda o: assess_order(o, policy))):
        for o in orders[:200]:
            fn(o)  # warm caches
        t = time.perf_counter()
        for o in orders:
            fn(o)
        dt = time.perf_counter() - t
        print(f"{name:<13} {len(orders)} notes  {len(orders) / dt:8.0f} notes/s  {dt / len(orders) * 1e6:6.0f} us/note")
    for path in (ROOT.parent / "shared" / "dev_orders.jsonl", ROOT.parent / "shared" / "dev_orders2.jsonl"):
        if not path.exists():
            continue
        print(f"\n{path.name}: flags found (type severity status [kind] [handled]) -> steers ranking?")
        for e in read_labelled_jsonl(path):
            flags = assess_order(e.order, policy)
            if flags:
                desc = "; ".join(f"{f.type} {f.severity} {f.status}{' ' + f.kind if f.kind else ''}"
                                 f"{' handled' if f.handled else ''}{' STEERS' if policy.steers(f) else ''}"
                                 f" <{f.evidence}>" for f in flags)
                print(f"  {e.order.accession} [{e.category or '-'}] {desc}")


if __name__ == "__main__":
    main()
