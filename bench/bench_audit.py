"""Audit trail benchmark: append rate, verify and export of 100,000 events.

    .venv/bin/python bench/bench_audit.py [--events 100000] [--keep DIR]

Targets (issue 6, tightened by issue 11 with anchoring: every event carries an HMAC with the
site key): append >= 2,000 events/s (one transaction per event, as the app does); verify
100,000 events (hash chain and HMACs) < 2 s; export 100,000 events to each format < 10 s.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from radassist import audit  # noqa: E402
from radassist.access import AUDITOR, RADIOLOGIST, Actor  # noqa: E402
from radassist.store import open_database  # noqa: E402

RAD = Actor("rad", RADIOLOGIST)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--append", type=int, default=3000, help="events appended one transaction each")
    ap.add_argument("--keep", help="folder to keep the database and exports in")
    args = ap.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-audit-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = open_database(folder / "bench.db")
    rows = []

    # 1. append, one transaction (and commit) per event: the app's pattern
    t0 = time.perf_counter()
    for i in range(args.append):
        with db.session() as s:
            audit.record_event(s, RAD, "order.open", entity=f"order:ACC{i:07d}")
    dt = time.perf_counter() - t0
    rows.append(("append, 1 commit per event", args.append, dt, args.append / dt, ">= 2,000/s",
                 args.append / dt >= 2000))

    # fill up to --events in batches (same code path, fewer commits)
    t0 = time.perf_counter()
    remaining = args.events - args.append
    actions = ("order.open", "decision.accept", "decision.override", "signin", "signout", "import")
    while remaining > 0:
        with db.session() as s:
            for i in range(min(10_000, remaining)):
                action = actions[i % len(actions)]
                audit.record_event(s, RAD, action, entity=f"order:ACC{remaining - i:07d}",
                                   details={"final": "CT-HEAD-WO", "suggested": "CT-HEAD-W"}
                                   if action.startswith("decision") else None)
            remaining -= min(10_000, remaining)
    dt = time.perf_counter() - t0
    n = args.events - args.append
    rows.append(("append, 10,000 per commit", n, dt, n / dt if dt else 0, "", True))

    # 2. verify
    with db.session() as s:
        t0 = time.perf_counter()
        result = audit.verify_chain(s)
        dt = time.perf_counter() - t0
    rows.append(("verify chain + HMACs", result.count, dt, result.count / dt, "< 2 s",
                 result.ok and result.anchored == result.count and dt < 2))

    # 2b. checkpoint, and verify against it
    with db.session() as s:
        t0 = time.perf_counter()
        audit.write_checkpoint(s, folder / "checkpoint.json")
        result = audit.verify_against(s, folder / "checkpoint.json")
        dt = time.perf_counter() - t0
    rows.append(("checkpoint + verify --against", result.count, dt, result.count / dt, "< 4 s",
                 result.ok and dt < 4))

    # 3. export each format (the export event itself makes it one more each time)
    auditor = Actor("auditor", AUDITOR)
    for fmt in audit.FORMATS:
        out = folder / f"export.{fmt}.{'csv' if fmt == 'csv' else 'json'}"
        with db.session() as s:
            t0 = time.perf_counter()
            res = audit.export_events(s, auditor, fmt, out)
            dt = time.perf_counter() - t0
        rows.append((f"export {fmt} ({out.stat().st_size / 1e6:.0f} MB)", res.count, dt, res.count / dt, "< 10 s",
                     dt < 10))

    # a sample of the FHIR export validated with fhir.resources (validation is not timed above)
    try:
        from fhir.resources.R4B.auditevent import AuditEvent

        doc = json.loads((folder / "export.fhir.json").read_text())
        t0 = time.perf_counter()
        for entry in doc["entry"][:: max(1, len(doc["entry"]) // 500)]:
            AuditEvent.model_validate(entry["resource"])
        print(f"(validated a sample of FHIR resources with fhir.resources R4B in {time.perf_counter() - t0:.2f} s)")
    except ImportError:
        print("(fhir.resources not installed: sample not validated)")

    print(f"{'step':<30} {'events':>9} {'seconds':>8} {'events/s':>10}  {'target':<11} ok")
    for name, count, secs, rate, target, ok in rows:
        print(f"{name:<30} {count:>9,} {secs:>8.2f} {rate:>10,.0f}  {target:<11} {'yes' if ok else 'NO'}")
    db.dispose()
    return 0 if all(r[5] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
