"""A suggestion engine in a process of its own, used through the ordinary engine interface.

Why: importing torch and the engines' own Python (tokenising, the flag assessment's regular
expressions) hold the interpreter lock. In the app's process they stall the GUI thread: bench_gui
measured 130-340 ms at model load and 50-60 ms while computing. Here a helper process
(`radassist.child_process`) builds the engine and answers over a socket; the app's worker thread waits
on it with the lock released, so the window keeps its 10 ms heartbeat whatever the model does.

- The child builds the engine from a picklable factory (``site_engine``: the site database's engine,
  exactly `engine_factory.create_site_engine`, fallback included), then serves ``predict_batch`` and
  ``set_catalog`` requests one at a time. Predictions come back as the same `Prediction` objects.
- An error inside the child is raised in the caller as `EngineProcessError` (type and first line of
  the message, never a traceback with note text); the child carries on. A child that dies (killed,
  out of memory) raises `EngineProcessExited` on the next call.
- The child's model math takes all cores but one (the GUI's), unless ``torch_threads`` says otherwise,
  at a lower CPU priority (``nice`` 10): when the cores are busy, the GUI thread runs first.
- A child whose parent is gone (the app quit without stopping it) exits within a second.

POSIX only (a descriptor passed to the child); `supported()` says whether this platform has it.
No Qt here: the GUI's inference worker and any other long-lived caller can use it.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from radassist import child_process
from radassist.domain import Order, Prediction, Protocol
from radassist.engines.base import EngineError, SuggestionEngine

log = logging.getLogger(__name__)

START_TIMEOUT_S = 600.0  # a 7B model on a slow disk; the caller shows a loading indicator meanwhile
NICE = 10  # the engine computes at a lower CPU priority than the app that waits for it


class EngineProcessError(EngineError):
    """An exception inside the engine process (its type and the first line of its message)."""

    def __init__(self, remote_type: str, message: str):
        super().__init__(f"{remote_type}: {message}" if message else remote_type)
        self.remote_type = remote_type


class EngineProcessExited(EngineError):
    """The engine process is gone (it was killed, ran out of memory, or was closed)."""


class EngineProcessCancelled(EngineProcessExited):
    """The engine process was ended while it loaded, because its caller stopped waiting."""


supported = child_process.supported


def default_torch_threads() -> int:
    """All cores but one: the GUI thread (and the app's database work) never waits for a core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


def site_engine(db_path: str, engine: str | None = None, fallback: bool = True
                ) -> tuple[SuggestionEngine, str | None]:
    """In the child: the site's engine from the database at ``db_path`` (settings, catalog, the
    registry's active versions), with the embedding fallback when ``fallback``."""
    from radassist import engine_factory
    from radassist.store import open_database

    db = open_database(db_path)
    try:
        return engine_factory.create_site_engine(db, engine, fallback=fallback)
    finally:
        db.dispose()


def _serve(conn, payload: tuple[Callable[[], Any], int | None]) -> None:
    """The child's main loop: build, report, then answer requests until told to stop."""
    factory, torch_threads = payload
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    threads = torch_threads or default_torch_threads()
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read when torch is imported (while building)
    try:
        built = factory()
        engine, reason = built if isinstance(built, tuple) else (built, None)
        torch = sys.modules.get("torch")  # an engine without torch has nothing to tune
        if torch is not None:
            torch.set_num_threads(threads)
        conn.send(("ready", {"name": engine.name, "version": engine.version, "device": str(engine.device),
                             "model_id": engine.model_id, "reason": reason, "pid": os.getpid()}))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
        log.warning("engine process: the engine failed to load", exc_info=True)
        conn.send(("error", *child_process.describe(exc)))
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the parent closed the pipe
            return
        kind = request[0]
        if kind == "stop":
            return
        try:
            if kind == "predict":
                _, orders, top_k = request
                conn.send(("ok", engine.predict_batch(orders, top_k=top_k)))
            elif kind == "catalog":
                engine.set_catalog(request[1])
                conn.send(("ok", None))
            else:
                conn.send(("error", "ValueError", f"unknown request {kind!r}"))
        except Exception as exc:  # noqa: BLE001 - the child carries on; the caller gets the error
            log.warning("engine process: %s failed", kind, exc_info=True)
            conn.send(("error", *child_process.describe(exc)))


class EngineProcess(SuggestionEngine):
    """A `SuggestionEngine` whose model lives in a child process; calls block until it answers.

    Construction blocks until the engine is built (seconds to minutes): call it off the GUI thread.
    One caller at a time (the app's inference worker); ``close()`` ends the child.
    """

    def __init__(self, factory: Callable[[], Any], *, torch_threads: int | None = None,
                 start_timeout_s: float = START_TIMEOUT_S, wait: bool = True, nice: int = NICE):
        self._lock = threading.Lock()
        self._ready = False
        self._start_timeout_s = start_timeout_s
        self._process, self._conn = child_process.start_child(_serve, (factory, torch_threads), nice=nice)
        self.pid: int | None = self._process.pid
        self.reason: str | None = None
        if wait:
            self.wait_ready()

    def wait_ready(self, cancelled: Callable[[], bool] | None = None) -> EngineProcess:
        """Block until the child has built its engine (``wait=False`` started it early); raises
        `EngineProcessError` when it could not, and `EngineProcessCancelled` (the child ended) as
        soon as ``cancelled()`` is true: a window closed while the model loads does not wait for it."""
        if self._ready:
            return self
        try:
            deadline = time.monotonic() + self._start_timeout_s
            while not self._conn.poll(0.2):
                if cancelled is not None and cancelled():
                    raise EngineProcessCancelled("the engine was no longer wanted while it loaded")
                if time.monotonic() > deadline:
                    raise EngineProcessExited(
                        f"the engine process did not start within {self._start_timeout_s:.0f} s")
            info = self._receive()
        except BaseException:
            self.close()
            raise
        self.name = info["name"]
        self._version = info["version"]
        self._device = info["device"]
        self._model_id = info["model_id"]
        self.reason = info["reason"]
        self._ready = True
        return self

    # --- the engine interface ---------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self._version

    @property
    def device(self) -> str:
        return self._device

    @property
    def model_id(self) -> str:
        return self._model_id

    def predict_batch(self, orders: Sequence[Order], top_k: int = 3) -> list[Prediction]:
        return self._call(("predict", list(orders), top_k))

    def set_catalog(self, protocols: Sequence[Protocol]) -> None:
        self._call(("catalog", list(protocols)))

    # --- the process ------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the child (it finishes the request it is on); killed if it does not end in time."""
        try:
            with self._lock:
                self._conn.send(("stop",))
        except (OSError, ValueError):  # already gone or closed
            pass
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5.0)
        self._conn.close()

    def _call(self, request: tuple):
        with self._lock:
            try:
                self._conn.send(request)
            except (OSError, ValueError) as exc:
                raise EngineProcessExited(self._exit_message()) from exc
            return self._receive()

    def _receive(self):
        try:
            status, *payload = self._conn.recv()  # waits with the interpreter lock released
        except (EOFError, OSError) as exc:
            raise EngineProcessExited(self._exit_message()) from exc
        if status == "error":
            raise EngineProcessError(*payload)
        return payload[0]

    def _exit_message(self) -> str:
        try:
            code = self._process.wait(0.5)
        except subprocess.TimeoutExpired:
            code = None
        how = "is still running" if code is None else (f"was killed (signal {-code})" if code < 0
                                                       else f"exited with code {code}")
        return f"the engine process {how}"


__all__ = ["EngineProcess", "EngineProcessCancelled", "EngineProcessError", "EngineProcessExited",
           "default_torch_threads", "site_engine", "supported"]
