"""`radassist serve`: order over MLLP -> suggestion stored -> decision -> result back; clean stop."""
from __future__ import annotations

from support import DATA_DIR, REPO, TESTS_DIR  # noqa: F401
import os
import time

import pytest
from sqlalchemy import select

from radassist.access import Actor
from radassist.domain import Prediction, Suggestion
from radassist.engines.base import SuggestionEngine
from radassist.interop.hl7_orders import parse_ack, parse_order_message
from radassist.interop.mllp import MLLPClient
from radassist.interop.outbox import Destination
from radassist.service import Service, ServiceConfig, SuggestionWorker, orders_missing_suggestions
from radassist.store.models import OrderRow, SuggestionRow
from radassist.worklist import DecisionInput, cached_prediction, record_decision
from support.mllp import Peer, free_port, order_message, send_through_cli_listener


class FakeEngine(SuggestionEngine):
    name = "fake"

    def __init__(self, fail_on: str = ""):
        self.fail_on = fail_on
        self.batches: list[int] = []

    @property
    def version(self) -> str:
        return "1"

    def set_catalog(self, protocols) -> None:
        pass

    def predict_batch(self, orders, top_k=3):
        self.batches.append(len(orders))
        if any(self.fail_on and self.fail_on in o.clinical_notes for o in orders):
            raise RuntimeError("engine trouble")
        return [Prediction(o.accession, [Suggestion("CT-HEAD-WO", "CT head without contrast", 0.9)])
                for o in orders]


def _wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_order_in_suggestion_ready_decision_out(db):
    peer = Peer()
    engine = FakeEngine()
    config = ServiceConfig(listen=[("127.0.0.1", 0)], engine_factory=lambda: engine, outbox_poll_s=0.05,
                           destinations=[Destination("mllp", host="127.0.0.1", port=peer.port)])
    try:
        with Service(db, config) as service:
            assert service.worker.ready.wait(5)
            with MLLPClient("127.0.0.1", service.ports[0], timeout=5) as client:
                assert parse_ack(client.send(order_message(1)))[0] == "AA"

            def stored():
                with db.session() as s:
                    oid = s.scalar(select(OrderRow.id))
                    return oid and cached_prediction(s, oid, engine.model_id)

            assert _wait(stored, 5)
            with db.session() as s:
                oid = s.scalar(select(OrderRow.id))
                record_decision(s, Actor("rad", "radiologist"),
                                DecisionInput(oid, "CT-HEAD-WO", cached_prediction(s, oid, "fake/1").top, "fake/1"))
            assert _wait(lambda: len(peer.received) == 1, 5)
    finally:
        peer.stop()
    result = parse_order_message(peer.received[0]).items[0]
    assert result.control == "XO"
    assert result.record["ordered_exam"] == "CT Head WO Contrast"  # the catalog name of CT-HEAD-WO
    assert not service.worker.is_alive() and not service.outbox.is_alive()


def test_worker_fills_orders_imported_another_way_and_survives_a_failing_order(db, tmp_path):
    from radassist.ingest import import_files

    path = tmp_path / "o.jsonl"
    path.write_text("".join(
        f'{{"accession": "J{i}", "ordered_exam": "CT head", "clinical_notes": "{"BOOM" if i == 2 else "ok"}"}}\n'
        for i in range(5)))
    import_files(db, [path])
    engine = FakeEngine(fail_on="BOOM")
    worker = SuggestionWorker(db, lambda: engine, poll_s=0.05)
    worker.start()
    try:
        assert _wait(lambda: worker.computed == 4, 5)
    finally:
        worker.stop()
    with db.session() as s:
        failing = s.scalar(select(OrderRow.id).where(OrderRow.accession == "J2"))
        assert orders_missing_suggestions(s, "fake/1") == [failing]
        assert s.scalar(select(SuggestionRow.model_version)) == "fake/1"


def test_engine_that_cannot_load_leaves_the_listener_running(db):
    def broken():
        raise OSError("no weights")

    with Service(db, ServiceConfig(listen=[("127.0.0.1", 0)], engine_factory=broken)) as service:
        assert service.worker.ready.wait(5) and service.worker.load_error == "OSError"
        with MLLPClient("127.0.0.1", service.ports[0], timeout=5) as client:
            assert parse_ack(client.send(order_message(5)))[0] == "AA"


@pytest.mark.parametrize("command", ["listen", "serve"])
def test_cli_runs_until_sigterm(db, tmp_path, command):
    port = free_port()
    args = [command, "--db", str(db.path), "--mllp", f"127.0.0.1:{port}"]
    if command == "serve":
        args += ["--no-suggestions", "--results-folder", str(tmp_path / "out")]
    send_through_cli_listener(args, port, order_message(9))
    with db.session() as s:
        assert s.scalar(select(OrderRow.accession)) == "ACC000009"
