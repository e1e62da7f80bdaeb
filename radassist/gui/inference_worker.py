"""The one thread that drives the suggestion engine.

The engine is created from the worker's thread (loading a model is slow): the site's engine in a
process of its own (radassist.engine_process), a test's engine in this thread. Then the worker computes
suggestions for every to-do order in worklist order and caches them in the database
(``worklist.save_prediction``, its own session). A request for a specific order (the one the
radiologist just opened) jumps the queue. Errors are emitted and the worker carries on. The
GUI thread talks to it only through ``request``/``refresh_queue``/``stop`` (a lock and a
condition, never blocking on the model) and listens to its signals (queued across threads).
"""
from __future__ import annotations

import functools
import logging
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable

from PySide6.QtCore import QThread, Signal

from radassist import child_process
from radassist.engine_process import (
    EngineProcess,
    EngineProcessCancelled,
    EngineProcessExited,
    default_torch_threads,
)
from radassist.engines.base import SuggestionEngine
from radassist.worklist import save_prediction, todo_order_ids
from radassist.worklist_queries import orders_to_predict

log = logging.getLogger(__name__)

LOADING, READY, ERROR, STOPPED = "loading", "ready", "error", "stopped"

# Engines are built one at a time: the quick engine, then the site engine (in-thread engines: transformers'
# lazy imports are not thread-safe; engine processes: the first one's suggestions come sooner when it
# does not share the cores). Only building waits on it; computing suggestions never does.
ENGINE_BUILD_LOCK = threading.Lock()


def default_engine_factory(db, engine_name: str | None = None, fallback: bool = True
                           ) -> Callable[[], SuggestionEngine | tuple[SuggestionEngine, str | None]]:
    """The site's engine via radassist.engine_factory (with the embedding fallback when ``fallback``),
    in a process of its own (radassist.engine_process): the model's imports and Python never hold
    this process's interpreter lock, so the GUI thread does not stall while it loads or computes.

    The factory may return ``(engine, reason)``: the reason (why the fallback engine is used) is
    shown in the status bar.
    """

    def factory():
        from radassist import engine_process

        if not engine_process.supported():  # no descriptor passing: the engine runs in this thread
            return engine_process.site_engine(str(db.path), engine_name, fallback)
        # started, not waited for: the worker waits (and gives up when it is stopped meanwhile)
        return engine_process.EngineProcess(
            functools.partial(engine_process.site_engine, str(db.path), engine_name, fallback), wait=False)

    return factory


def prestarted_engine_factory(db, engine_name: str | None = None):
    """`default_engine_factory`, with the first engine process started now (the app calls this when
    the sign-in dialog opens, so that the model loads while the user types the password); later calls
    of the factory (a restart after a settings change) start new processes. ``close_unused()`` ends
    the first one if no worker took it (sign-in cancelled, an auditor)."""
    from radassist.engine_process import supported

    later = default_engine_factory(db, engine_name)
    pending = [later()] if supported() else []  # an EngineProcess, started and not waited for

    def factory():
        return pending.pop() if pending else later()

    def close_unused():
        while pending:
            pending.pop().close()

    factory.close_unused = close_unused  # type: ignore[attr-defined]
    return factory


def _leave_a_core_for_the_gui() -> None:
    """An engine in this thread: its math threads take all cores but one, so the GUI thread never waits
    for a core (an engine process does the same in its own process)."""
    torch = sys.modules.get("torch")  # engines without torch have nothing to tune
    if torch is not None:
        torch.set_num_threads(default_torch_threads())


def _describe(exc: BaseException) -> str:
    return ": ".join(part for part in child_process.describe(exc) if part)


class InferenceWorker(QThread):
    state_changed = Signal(str, str)             # state (loading/ready/error/stopped), detail text
    engine_ready = Signal(str, str, str, str)    # engine name, version, device, model id
    prediction_ready = Signal(int, object)       # order id, Prediction (already committed)
    failed = Signal(str)                         # an error message; the worker goes on
    progress = Signal(int, int)                  # computed so far, still queued

    def __init__(self, db, engine_factory: Callable[[], SuggestionEngine] | None = None,
                 fallback_factory: Callable[[], SuggestionEngine] | None = None, batch_size: int = 4,
                 build_after: threading.Event | None = None, built: threading.Event | None = None, parent=None):
        super().__init__(parent)
        self.setObjectName("InferenceWorker")
        self._db = db
        self._factory = engine_factory or default_engine_factory(db)
        self._fallback = fallback_factory
        self._batch_size = max(1, batch_size)
        self._build_after = build_after  # another engine (the quick one) is built first
        self._built = built  # set once this worker's engine is built (or failed to): another waits on it
        self._cond = threading.Condition()
        self._urgent: deque[int] = deque()
        self._queue: deque[int] = deque()
        self._refresh = True  # read the to-do list once the engine is up
        self._stop = False
        self._seen: set[int] = set()   # orders whose suggestions for this engine exist
        self._failed: set[int] = set()  # orders whose prediction raised (retried only on request)
        self.engine: SuggestionEngine | None = None
        self.model_id: str | None = None
        self.computed = 0
        self._engine_lost = False

    # --- called from the GUI thread -----------------------------------------------------------
    def request(self, order_id: int) -> None:
        """Compute this order next (the user is looking at it)."""
        with self._cond:
            if order_id in self._seen and order_id not in self._failed:
                return
            self._failed.discard(order_id)
            if order_id in self._urgent:
                self._urgent.remove(order_id)
            self._urgent.appendleft(order_id)
            self._cond.notify_all()

    def refresh_queue(self) -> None:
        """Re-read the to-do orders (new ones were imported); they are queued in worklist order."""
        with self._cond:
            self._refresh = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def _stopping(self) -> bool:
        with self._cond:
            return self._stop

    def pending(self) -> int:
        with self._cond:
            return len(self._urgent) + len(self._queue)

    # --- the thread -----------------------------------------------------------------------------
    def run(self) -> None:  # noqa: C901 - one loop, kept in one place
        self.state_changed.emit(LOADING, "loading model…")
        try:
            engine = self._load()
        finally:
            if self._built is not None:
                self._built.set()
        if engine is None:
            return
        _leave_a_core_for_the_gui()
        self.engine = engine
        self.model_id = engine.model_id
        self.engine_ready.emit(engine.name, engine.version, str(engine.device), engine.model_id)
        self.state_changed.emit(READY, "")
        while True:
            with self._cond:
                while not self._stop and not self._urgent and not self._queue and not self._refresh:
                    self._cond.wait()
                if self._stop:
                    break
                refresh, self._refresh = self._refresh, False
            if refresh:
                self._rebuild_queue()
                continue
            with self._cond:
                if self._urgent:
                    batch = [self._urgent.popleft()]
                    urgent = True
                else:
                    batch = []
                    while self._queue and len(batch) < self._batch_size:
                        order_id = self._queue.popleft()
                        if order_id not in self._seen and order_id not in self._failed:
                            batch.append(order_id)
                    urgent = False
            if batch:
                if not self._process(batch, urgent):
                    break
                with self._cond:
                    remaining = len(self._urgent) + len(self._queue)
                self.progress.emit(self.computed, remaining)
        close = getattr(engine, "close", None)  # an engine process ends with its worker
        if close is not None:
            close()
        if not self._engine_lost:
            self.state_changed.emit(STOPPED, "")

    def _load(self) -> SuggestionEngine | None:
        if self._build_after is not None:
            self._build_after.wait(120)
        try:
            with ENGINE_BUILD_LOCK:
                engine = self._factory()
                if isinstance(engine, EngineProcess):  # started: its model loads in the child meanwhile
                    engine = engine.wait_ready(cancelled=self._stopping)
                    engine = (engine, engine.reason)
            if isinstance(engine, tuple):
                engine, reason = engine
                if reason:
                    self.failed.emit(f"Using the fallback engine: {reason}")
            return engine
        except EngineProcessCancelled:  # stopped while loading (the window closed, the engine restarted)
            self.state_changed.emit(STOPPED, "")
            return None
        except Exception as exc:  # the app goes on: fallback engine if there is one
            log.warning("engine failed to load: %s", traceback.format_exc())
            message = f"Engine failed to load: {_describe(exc)}"
            if self._fallback is None:
                self.failed.emit(message)
                self.state_changed.emit(ERROR, message)
                return None
            self.failed.emit(message + " — using the fallback engine")
            self.state_changed.emit(LOADING, "loading fallback engine…")
            try:
                with ENGINE_BUILD_LOCK:
                    return self._fallback()
            except Exception as exc2:
                message = f"Fallback engine failed to load: {_describe(exc2)}"
                self.failed.emit(message)
                self.state_changed.emit(ERROR, message)
                return None

    def _rebuild_queue(self) -> None:
        try:
            with self._db.session() as session:
                ids = todo_order_ids(session)
        except Exception as exc:
            self.failed.emit(f"Could not read the worklist: {_describe(exc)}")
            return
        with self._cond:
            self._queue = deque(i for i in ids if i not in self._seen and i not in self._failed)
            self.progress.emit(self.computed, len(self._queue) + len(self._urgent))

    def _process(self, order_ids: list[int], urgent: bool) -> bool:
        """Suggestions for these orders; False when the engine is gone (the worker ends)."""
        engine = self.engine
        assert engine is not None
        try:
            with self._db.session() as session:
                stored, todo = orders_to_predict(session, order_ids, engine.model_id, any_status=urgent)
            for order_id, cached in stored:
                self._mark_seen(order_id)
                self.prediction_ready.emit(order_id, cached)
        except Exception as exc:
            self.failed.emit(f"Could not read orders: {_describe(exc)}")
            return True
        if not todo:
            return True
        try:
            results = self._predict([o for _, o in todo])
        except EngineProcessExited as exc:  # nothing more will come from this engine
            self._engine_lost = True
            message = f"The suggestion engine stopped: {exc}"
            log.warning("%s", message)
            self.failed.emit(message)
            self.state_changed.emit(ERROR, message)
            return False
        except Exception as exc:
            if len(todo) == 1:
                self._fail(todo[0], exc)
                return
            results = []
            for item in todo:  # find the one that fails; the others still get suggestions
                try:
                    results.append(self._predict([item[1]])[0])
                except Exception as exc1:
                    self._fail(item, exc1)
                    results.append(None)
        done = [(oid, p) for (oid, _), p in zip(todo, results) if p is not None]
        try:
            with self._db.session() as session:
                for order_id, prediction in done:
                    if not prediction.model:
                        prediction.model = engine.model_id
                    save_prediction(session, order_id, prediction)
        except Exception as exc:
            self.failed.emit(f"Could not save suggestions: {_describe(exc)}")
            return True
        for order_id, prediction in done:  # committed: now the GUI may show them
            self._mark_seen(order_id)
            self.computed += 1
            self.prediction_ready.emit(order_id, prediction)
        return True

    def _predict(self, orders):
        start = time.perf_counter()
        predictions = self.engine.predict_batch(orders, top_k=3)
        if len(predictions) != len(orders):
            raise RuntimeError(f"engine returned {len(predictions)} predictions for {len(orders)} orders")
        elapsed = (time.perf_counter() - start) * 1000 / max(1, len(orders))
        for p in predictions:
            if not p.latency_ms:
                p.latency_ms = elapsed
        return predictions

    def _fail(self, item, exc: BaseException) -> None:
        order_id, order = item
        log.warning("prediction failed for %s: %s", order.accession, traceback.format_exc())
        with self._cond:
            self._failed.add(order_id)
        self.failed.emit(f"Suggestion failed for {order.accession}: {_describe(exc)}")

    def _mark_seen(self, order_id: int) -> None:
        with self._cond:
            self._seen.add(order_id)
