"""`radassist serve`: the background service of a site (listeners, suggestion worker, outbox).

- MLLP listener(s): HL7 v2 orders in, ACK out (``radassist.interop``).
- Suggestion worker: one thread that owns the site's engine (``engine_factory.create_site_engine``) and
  computes suggestions for every new order as it arrives (the listener hands it the ids) and,
  every few seconds, for any to-do order without suggestions from the current model (orders
  imported some other way). Stored with ``worklist.save_prediction``, exactly as the app's
  worker does, so the app finds them ready and only computes what is missing.
- Outbox worker: the protocol of every decision back to the configured destinations.

``stop()`` (SIGTERM/SIGINT in ``run_forever``) closes the listeners first (no new orders), lets
the message in flight finish, then stops the workers.
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import and_, exists, select

from radassist.access import Actor
from radassist.domain import Prediction
from radassist.engines.base import SuggestionEngine
from radassist.ingest import order_from_row
from radassist.interop.feed import INTERFACE
from radassist.interop.hl7_orders import DEFAULT_ACCESSION_FIELDS
from radassist.interop.mllp import MLLPListener
from radassist.interop.outbox import Destination, OutboxWorker
from radassist.interop.receiver import HL7Receiver
from radassist.store.models import OrderRow, SuggestionRow
from radassist.worklist import save_prediction, worklist_order_by

log = logging.getLogger(__name__)


def orders_missing_suggestions(session, model_version: str, limit: int = 500) -> list[int]:
    """To-do orders, in worklist order, without suggestions from ``model_version``."""
    has = exists().where(and_(SuggestionRow.order_id == OrderRow.id, SuggestionRow.model_version == model_version))
    return list(session.scalars(select(OrderRow.id).where(OrderRow.status == "todo", ~has)
                                .order_by(*worklist_order_by()).limit(limit)))


class SuggestionWorker(threading.Thread):
    """Computes and stores suggestions for new orders; the engine is created inside this thread."""

    def __init__(self, db, engine_factory: Callable | None = None, batch_size: int = 16, poll_s: float = 5.0):
        super().__init__(name="suggestions", daemon=True)
        self.db = db
        self.engine_factory = engine_factory or self._site_engine
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.engine: SuggestionEngine | None = None
        self.computed = 0
        self.failed: set[int] = set()
        self.ready = threading.Event()
        self.load_error: str | None = None
        self._queue: queue.Queue[int] = queue.Queue()
        self._halt = threading.Event()
        self.stored_at: dict[int, float] = {}  # order id -> time.monotonic() when stored (for the bench)

    def _site_engine(self):
        from radassist.engine_factory import create_site_engine

        engine, warning = create_site_engine(self.db)
        if warning:
            log.warning("%s", warning)
        return engine

    def submit(self, order_ids: Sequence[int]) -> None:
        for order_id in order_ids:
            self._queue.put(order_id)

    def stop(self, timeout: float = 30.0) -> None:
        self._halt.set()
        self._queue.put(-1)
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        try:
            result = self.engine_factory()
            self.engine = result[0] if isinstance(result, tuple) else result
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}"
            log.error("suggestion engine could not load (%s): suggestions are left to the app", self.load_error)
            self.ready.set()
            return
        self.ready.set()
        engine = self.engine
        assert engine is not None
        log.info("suggestion worker ready with %s", engine.model_id)
        last_poll = 0.0
        while not self._halt.is_set():
            ids: list[int] = []
            if time.monotonic() - last_poll >= self.poll_s:
                last_poll = time.monotonic()
                try:
                    with self.db.session() as session:
                        ids = [i for i in orders_missing_suggestions(session, engine.model_id)
                               if i not in self.failed]
                except Exception as exc:
                    log.error("suggestion worker: cannot read the worklist (%s)", type(exc).__name__)
            if not ids:
                try:
                    first = self._queue.get(timeout=min(self.poll_s, 1.0))
                except queue.Empty:
                    continue
                ids = [first]
            while len(ids) < self.batch_size:
                try:
                    ids.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            ids = list(dict.fromkeys(i for i in ids if i >= 0))
            for start in range(0, len(ids), self.batch_size):
                if self._halt.is_set():
                    break
                self._process(ids[start:start + self.batch_size])

    def _process(self, order_ids: list[int]) -> None:
        engine = self.engine
        if engine is None:  # never loaded: nothing to suggest with
            return
        try:
            with self.db.session() as session:
                missing = set(orders_missing_suggestions(session, engine.model_id, limit=100_000)) \
                    if len(order_ids) > 50 else None
                todo = []
                for order_id in order_ids:
                    row = session.get(OrderRow, order_id)
                    if row is None or row.status != "todo":
                        continue
                    if missing is not None and order_id not in missing:
                        continue
                    if missing is None and session.scalar(select(SuggestionRow.id).where(
                            SuggestionRow.order_id == order_id, SuggestionRow.model_version == engine.model_id)):
                        continue
                    todo.append((order_id, order_from_row(row)))
        except Exception as exc:
            log.error("suggestion worker: cannot read orders (%s)", type(exc).__name__)
            return
        if not todo:
            return
        start = time.perf_counter()
        predictions: list[Prediction | None]
        try:
            predictions = list(engine.predict_batch([o for _, o in todo], top_k=3))
        except Exception:
            predictions = []
            for order_id, order in todo:  # find the one that fails; the others still get suggestions
                try:
                    predictions.append(engine.predict_batch([order], top_k=3)[0])
                except Exception as exc:
                    log.warning("suggestion failed for order id %d (%s)", order_id, type(exc).__name__)
                    self.failed.add(order_id)
                    predictions.append(None)
        elapsed = (time.perf_counter() - start) * 1000 / len(todo)
        try:
            with self.db.session() as session:
                for (order_id, _), prediction in zip(todo, predictions):
                    if prediction is None:
                        continue
                    prediction.model = prediction.model or engine.model_id
                    prediction.latency_ms = prediction.latency_ms or elapsed
                    save_prediction(session, order_id, prediction)
        except Exception as exc:
            log.error("suggestion worker: cannot store suggestions (%s)", type(exc).__name__)
            return
        now = time.monotonic()
        for (order_id, _), prediction in zip(todo, predictions):
            if prediction is not None:
                self.computed += 1
                self.stored_at[order_id] = now


@dataclass
class ServiceConfig:
    listen: list[tuple[str, int]] = field(default_factory=lambda: [("127.0.0.1", 2575)])
    accession_fields: tuple[str, ...] = DEFAULT_ACCESSION_FIELDS
    destinations: list[Destination] = field(default_factory=list)
    suggestions: bool = True
    engine_factory: Callable | None = None
    outbox_poll_s: float = 0.5
    max_backoff_s: float = 10.0
    actor: Actor | None = None  # the service account orders are received as (default: feed.INTERFACE)


class Service:
    def __init__(self, db, config: ServiceConfig):
        self.db = db
        self.config = config
        self.worker: SuggestionWorker | None = None
        self.outbox: OutboxWorker | None = None
        self.listeners: list[MLLPListener] = []
        self._stopped = threading.Event()

    def start(self) -> "Service":
        cfg = self.config
        if cfg.suggestions:
            self.worker = SuggestionWorker(self.db, cfg.engine_factory)
            self.worker.start()
        if cfg.destinations:
            self.outbox = OutboxWorker(self.db, cfg.destinations, poll_s=cfg.outbox_poll_s,
                                       max_backoff=cfg.max_backoff_s)
            self.outbox.start()
        receiver = HL7Receiver(self.db, cfg.accession_fields,
                               on_orders=self.worker.submit if self.worker is not None else None,
                               actor=cfg.actor or INTERFACE)
        try:
            for host, port in cfg.listen:
                self.listeners.append(MLLPListener(receiver.handle_bytes, host, port).start())
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def ports(self) -> list[int]:
        return [listener.port for listener in self.listeners]

    def stop(self) -> None:
        for listener in self.listeners:
            listener.stop()
        if self.outbox is not None:
            self.outbox.stop()
        if self.worker is not None:
            self.worker.stop()
        self._stopped.set()

    def __enter__(self) -> "Service":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def run_forever(self) -> None:
        """Until SIGTERM or SIGINT (main thread only), then a clean stop."""
        stop = threading.Event()

        def on_signal(signum, _frame):
            log.info("signal %d: stopping", signum)
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not stop.wait(1.0):
                pass
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.stop()
