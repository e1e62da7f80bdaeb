"""Hospital interfaces, measured on this machine (issue 12). Everything talks to 127.0.0.1 only.

1. Listener: N ORM^O01 over one kept-open MLLP connection (parse, store, audit, ACK; the
   suggestion queue is fed but not drained here): messages/s and ACK latency p50/p99.
2. 10 concurrent sender connections: every message stored exactly once.
3. Order over MLLP -> suggestion stored, with the site's embedding engine (``--llm``: also the llm
   engine once loaded).
4. Outbox: the peer is down for ``--down-s`` seconds while 1,000 decisions are made, then comes
   up: all delivered once, in order; time to drain.

    python bench/bench_interfaces.py [--messages 1000] [--down-s 60] [--skip-engine] [--llm]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select  # noqa: E402

from radassist.access import Actor  # noqa: E402
from radassist.catalog import ensure_catalog  # noqa: E402
from radassist.interop.hl7_orders import build_ack, parse_ack, parse_order_message  # noqa: E402
from radassist.interop.mllp import MLLPClient, MLLPListener  # noqa: E402
from radassist.interop.outbox import Destination, OutboxWorker  # noqa: E402
from radassist.interop.receiver import HL7Receiver  # noqa: E402
from radassist.store import open_database  # noqa: E402
from radassist.store.models import OrderRow, OutboxRow  # noqa: E402
from radassist.worklist import DecisionInput, record_decision  # noqa: E402

NOTES = ["Fall from standing, on apixaban. Headache and vomiting.",
         "RLQ pain 12h, fever, WBC 15, r/o appendicitis. eGFR 85.",
         "Known breast cancer, new back pain, r/o cord compression. Pacemaker in situ.",
         "SOB, pleuritic chest pain, D-dimer raised, r/o PE. Anaphylaxis to iodinated contrast."]
EXAMS = ["CT head without contrast", "CT abdomen and pelvis", "MRI spine", "CT pulmonary angiogram"]


def message(n: int, prefix: str = "B") -> str:
    return (f"MSH|^~\\&|RIS|HOSP|RADASSIST|RAD|20250101120000||ORM^O01|{prefix}{n:07d}|P|2.3\r"
            f"PID|1||MRN{n}^^^H^MR~SSN{n}^^^SSA^SS||PATIENT^TEST||19600101|F\r"
            f"PV1|1|O|RAD\r"
            f"ORC|NW|P{prefix}{n}|F{prefix}{n}||||^^^^^R||20250101115900|||4455^WELBY^MARCUS\r"
            f"OBR|1|P{prefix}{n}|F{prefix}{n}|X{n % 4}^{EXAMS[n % 4]}^L|||||||||{NOTES[n % 4]}\\.br\\seen in ED"
            f"|||4455^WELBY^MARCUS||{prefix}ACC{n:07d}\r"
            f"NTE|1||Clinical question {n}\r"
            f"ZDS|1.2.3.{n}\r")


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def fresh_db(tmp: Path, name: str):
    db = open_database(tmp / f"{name}.db")
    with db.session() as s:
        ensure_catalog(s)
    return db


def bench_listener(tmp: Path, n: int) -> dict:
    db = fresh_db(tmp, "listener")
    queued: list[int] = []
    receiver = HL7Receiver(db, on_orders=queued.extend)
    out = {}
    with MLLPListener(receiver.handle_bytes, "127.0.0.1", 0) as server:
        with MLLPClient("127.0.0.1", server.port) as client:
            for i in range(20):  # warm-up
                client.send(message(9_000_000 + i, "W"))
            latencies = []
            start = time.perf_counter()
            for i in range(n):
                t0 = time.perf_counter()
                code, _ = parse_ack(client.send(message(i)))
                latencies.append((time.perf_counter() - t0) * 1000)
                assert code == "AA", code
            elapsed = time.perf_counter() - start
        out["one_connection"] = {"messages": n, "seconds": round(elapsed, 3), "msgs_per_s": round(n / elapsed, 1),
                                 "ack_ms_p50": round(pct(latencies, 0.5), 2),
                                 "ack_ms_p99": round(pct(latencies, 0.99), 2),
                                 "ack_ms_max": round(max(latencies), 2)}
        per, errors = n // 10, []

        def sender(k):
            try:
                with MLLPClient("127.0.0.1", server.port) as c:
                    for i in range(per):
                        code, _ = parse_ack(c.send(message(k * 100_000 + i, "C")))
                        if code != "AA":
                            errors.append(code)
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(10)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
    with db.session() as s:
        stored = s.scalar(select(func.count()).select_from(OrderRow).where(OrderRow.accession.like("CACC%")))
    out["ten_connections"] = {"messages": per * 10, "stored": stored, "errors": len(errors),
                              "seconds": round(elapsed, 3), "msgs_per_s": round(per * 10 / elapsed, 1)}
    db.dispose()
    return out


def bench_suggestions(tmp: Path, engine_name: str, n: int = 20) -> dict:
    from radassist.engine_factory import create_site_engine
    from radassist.service import Service, ServiceConfig

    db = fresh_db(tmp, f"suggest-{engine_name}")
    config = ServiceConfig(listen=[("127.0.0.1", 0)],
                           engine_factory=lambda: create_site_engine(db, engine_name))
    t_load = time.perf_counter()
    with Service(db, config) as service:
        service.worker.ready.wait(900)
        load_s = time.perf_counter() - t_load
        if service.worker.engine is None:
            return {"error": service.worker.load_error}
        latencies = []
        with MLLPClient("127.0.0.1", service.ports[0]) as client:
            for i in range(n):
                t0 = time.monotonic()
                client.send(message(i, "S"))
                with db.session() as s:
                    oid = s.scalar(select(OrderRow.id).where(OrderRow.accession == f"SACC{i:07d}"))
                deadline = t0 + 60
                while oid not in service.worker.stored_at and time.monotonic() < deadline:
                    time.sleep(0.002)
                latencies.append((service.worker.stored_at.get(oid, float("inf")) - t0) * 1000)
        model = service.worker.engine.model_id
    db.dispose()
    return {"engine": model, "load_s": round(load_s, 1), "orders": n,
            "arrival_to_stored_ms_p50": round(pct(latencies, 0.5), 1),
            "arrival_to_stored_ms_max": round(max(latencies), 1)}


def bench_outbox(tmp: Path, decisions: int, down_s: float) -> dict:
    db = fresh_db(tmp, "outbox")
    receiver = HL7Receiver(db)
    for i in range(decisions):
        receiver.handle(message(i, "O"))
    with db.session() as s:
        ids = [i for (i,) in s.execute(select(OrderRow.id).order_by(OrderRow.id))]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    worker = OutboxWorker(db, [Destination("mllp", host="127.0.0.1", port=port)], poll_s=0.2, max_backoff=5.0,
                          timeout=5.0)
    worker.start()
    rad = Actor("bench.rad", "radiologist")
    start = time.monotonic()
    for k, oid in enumerate(ids):  # decisions spread over the outage
        with db.session() as s:
            record_decision(s, rad, DecisionInput(oid, "CT-HEAD-WO"))
        target = start + down_s * (k + 1) / len(ids)
        if (delay := target - time.monotonic()) > 0:
            time.sleep(delay)
    while time.monotonic() - start < down_s:
        time.sleep(0.05)
    received: list[str] = []

    def handle(data: bytes) -> bytes:
        text = data.decode()
        received.append(text)
        return build_ack(parse_order_message(text), "AA").encode()

    up = time.monotonic()
    with MLLPListener(handle, "127.0.0.1", port, name="peer"):
        deadline = up + 300
        while len(received) < decisions and time.monotonic() < deadline:
            time.sleep(0.05)
        drain = time.monotonic() - up
        time.sleep(0.5)  # anything extra would arrive now
    worker.stop()
    accessions = [parse_order_message(m).items[0].record["accession"] for m in received]
    with db.session() as s:
        expected = [a for (a,) in s.execute(select(OrderRow.accession).order_by(OrderRow.id))]
        attempts = s.scalar(select(func.max(OutboxRow.attempts)))
    db.dispose()
    return {"decisions": decisions, "peer_down_s": down_s, "delivered": len(received),
            "distinct": len(set(accessions)), "in_order": accessions == expected,
            "drain_after_up_s": round(drain, 2), "max_attempts_of_one_result": attempts}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--down-s", type=float, default=60.0)
    parser.add_argument("--decisions", type=int, default=1000)
    parser.add_argument("--skip-engine", action="store_true")
    parser.add_argument("--llm", action="store_true", help="also measure the llm engine (slow to load)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        results["listener"] = bench_listener(tmp, args.messages)
        print(json.dumps({"listener": results["listener"]}), flush=True)
        if not args.skip_engine:
            results["suggestion_embedding"] = bench_suggestions(tmp, "embedding")
            print(json.dumps({"suggestion_embedding": results["suggestion_embedding"]}), flush=True)
            if args.llm:
                results["suggestion_llm"] = bench_suggestions(tmp, "llm", n=10)
                print(json.dumps({"suggestion_llm": results["suggestion_llm"]}), flush=True)
        results["outbox"] = bench_outbox(tmp, args.decisions, args.down_s)
        print(json.dumps({"outbox": results["outbox"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
