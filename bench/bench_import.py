"""Concurrent import benchmark (issue 11): N importer processes on one SQLite database.

    .venv/bin/python bench/bench_import.py [--processes 8] [--orders 10000] [--overlap 0.5] [--fresh] [--keep DIR]

Each process runs `radassist import --key-file` (a service account) on its own JSONL file of
``--orders`` orders; consecutive files share ``--overlap`` of their accessions. ``--fresh``: the
processes start on a database that does not exist yet (they create and migrate it at once,
through the core API as there is no service account to sign in with). Target: every distinct
order present exactly once, 0 failures; throughput reported.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from radassist import users  # noqa: E402
from radassist.access import SYSTEM  # noqa: E402
from radassist.catalog import ensure_catalog  # noqa: E402
from radassist.store import open_database  # noqa: E402
from radassist.store.models import OrderRow  # noqa: E402

FRESH_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    db_path, start, path = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    while not start.exists():
        time.sleep(0.002)
    from radassist.access import Actor
    from radassist.catalog import ensure_catalog
    from radassist.ingest import import_files
    from radassist.store import open_database
    db = open_database(db_path)
    with db.session(immediate=True) as session:
        ensure_catalog(session)
    report = import_files(db, [path], actor=Actor("feed", "service"))
    for p in report.problems:
        print(f"rejected {p}", file=sys.stderr)
    print(report.summary())
    sys.exit(0 if report.ok else 1)
""")
# The CLI importer, started behind the same start line.
CLI_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    start = Path(sys.argv[1])
    while not start.exists():
        time.sleep(0.002)
    from radassist.cli import main
    sys.exit(main(sys.argv[2:]))
""")
NOTES = ("fall from standing, on apixaban", "worst headache of life", "RUQ pain after meals",
         "?PE, tachycardic. Anaphylaxis to IV contrast.", "knee locking after twisting injury")


def write_orders(path: Path, start: int, count: int) -> None:
    with path.open("w") as fh:
        for n in range(start, start + count):
            fh.write(json.dumps({"accession": f"BENCH{n:07d}", "ordered_exam": "CT HEAD",
                                 "clinical_notes": NOTES[n % len(NOTES)], "age": 20 + n % 70,
                                 "sex": "FM"[n % 2], "priority": ("STAT", "ROUTINE", "URGENT")[n % 3]}) + "\n")


def app_writer(db_path: Path, stop: threading.Event, waits: list, errors: list) -> None:
    """What the app does meanwhile: a short write (here an audit event) every 100 ms, through
    SQLite's busy handler like the app's decisions; how long each one waited."""
    from radassist.access import RADIOLOGIST, Actor
    from radassist.audit import record_event

    db = open_database(db_path)
    actor = Actor("rad", RADIOLOGIST)
    while not stop.is_set():
        t = time.perf_counter()
        try:
            with db.session() as s:
                record_event(s, actor, "order.open", entity="order:bench")
            waits.append(time.perf_counter() - t)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.append(type(exc).__name__)
        stop.wait(0.1)
    db.dispose()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--orders", type=int, default=10_000)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--fresh", action="store_true", help="start on a database that does not exist yet")
    ap.add_argument("--keep", help="folder to keep the database and files in")
    args = ap.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-import-"))
    folder.mkdir(parents=True, exist_ok=True)
    db_path = folder / "bench.db"
    step = max(1, int(args.orders * (1 - args.overlap)))
    files = []
    for i in range(args.processes):
        path = folder / f"importer{i}.jsonl"
        write_orders(path, i * step, args.orders)
        files.append(path)
    expected = (args.processes - 1) * step + args.orders
    start = folder / "go"
    start.unlink(missing_ok=True)
    if args.fresh:
        cmds = [[sys.executable, "-c", FRESH_WORKER, str(db_path), str(start), str(f)] for f in files]
    else:
        db = open_database(db_path)
        with db.session() as s:
            ensure_catalog(s)
            users.create_service_account(s, SYSTEM, "bench-feed", folder / "feed.key")
        db.dispose()
        cmds = [[sys.executable, "-c", CLI_WORKER, str(start), "import", str(f), "--db", str(db_path),
                 "--key-file", str(folder / "feed.key")] for f in files]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
             for c in cmds]
    time.sleep(3.0)  # every process imported its modules and waits at the start line
    app_waits: list[float] = []
    app_errors: list[str] = []
    stop = threading.Event()
    if not args.fresh:
        app = threading.Thread(target=app_writer, args=(db_path, stop, app_waits, app_errors), daemon=True)
        app.start()
    t0 = time.perf_counter()
    start.touch()
    rows, failures = [], 0
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=1800)
        elapsed = time.perf_counter() - t0
        summary = out.strip().splitlines()[-1] if out.strip() else ""
        if proc.returncode != 0:
            failures += 1
            print(f"importer {i} failed ({proc.returncode}): {err.strip()[-500:]}", file=sys.stderr)
        rows.append((i, proc.returncode, elapsed, summary))
    wall = time.perf_counter() - t0
    stop.set()
    db = open_database(db_path)
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(OrderRow))
        distinct = s.scalar(select(func.count(func.distinct(OrderRow.accession))))
    db.dispose()
    print(f"{'importer':<9} {'exit':>4} {'done at s':>10}  summary")
    for i, rc, elapsed, summary in rows:
        print(f"{i:<9} {rc:>4} {elapsed:>10.2f}  {summary}")
    processed = args.processes * args.orders
    print()
    print(f"{'database':<22} {'new' if args.fresh else 'existing'}")
    print(f"{'importers':<22} {args.processes} x {args.orders:,} orders, {args.overlap:.0%} overlap")
    print(f"{'distinct expected':<22} {expected:,}")
    print(f"{'rows present':<22} {total:,} ({distinct:,} distinct)")
    print(f"{'failures':<22} {failures}")
    print(f"{'wall time':<22} {wall:.2f} s")
    print(f"{'throughput':<22} {processed / wall:,.0f} orders/s read and applied, {total / wall:,.0f} stored/s")
    if app_waits:
        waits = sorted(app_waits)
        print(f"{'app writes meanwhile':<22} {len(waits)} (one audit event each, plain transaction), "
              f"wait median {waits[len(waits) // 2] * 1000:.0f} ms, max {waits[-1] * 1000:.0f} ms, "
              f"{len(app_errors)} errors")
    ok = failures == 0 and total == distinct == expected and not app_errors
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
