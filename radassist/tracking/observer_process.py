"""A training-run observer whose work runs in a helper process (`radassist.child_process`).

Why: MLflow's import (~2.5 s), its SQL store and its model logging are Python that holds the
interpreter lock. On a thread of the training process they slowed the run by 17-22% (bench_spark
`--mlflow-app`, 2 cores): the training loop waits for the lock after every torch call. Here the hooks
only pickle their arguments onto a socket; the helper (nice 10) runs the real observer.

- ``step`` and ``run_started`` return at once; ``run_finished`` / ``run_failed`` and the promotion hooks
  wait until the helper has done everything sent before (at most ``wait_s``), so that a training process
  does not exit before its run is logged.
- Tracking never fails a run: a helper that cannot start, dies or does not answer in time gives one
  warning (no clinical text) and the rest of its hooks do nothing.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from radassist import child_process

log = logging.getLogger(__name__)

WAIT_S = 200.0  # a little over MLflowObserver.FINISH_WAIT_SECONDS: the helper gives up first
NICE = 10
_SYNC = ("run_finished", "run_failed", "model_promoted", "model_rolled_back")


def _serve(conn, factory: Callable[[], Any]) -> None:
    """In the helper: build the observer, then call its hooks in the order they were sent."""
    try:
        observer = factory()
    except Exception as exc:  # noqa: BLE001 - the parent warns once and stops sending
        log.warning("tracking helper: the observer could not be built (%s)", type(exc).__name__)
        conn.send(("error", *child_process.describe(exc)))
        return
    while True:
        try:
            name, args, reply = conn.recv()
        except (EOFError, OSError):  # the training process is done
            return
        try:
            getattr(observer, name)(*args)
        except Exception as exc:  # noqa: BLE001 - the observer's own hooks already catch their errors
            log.warning("tracking helper: %s failed (%s)", name, type(exc).__name__)
        if reply:
            conn.send(("done", name))


class ObserverProcess:
    """A `RunObserver` that forwards every hook to ``factory()``'s observer in a helper process.

    ``describes``: attributes to show about the observer it stands for (e.g. ``uri``, ``catalog``)."""

    def __init__(self, factory: Callable[[], Any], *, wait_s: float = WAIT_S, nice: int = NICE, **describes):
        self.__dict__.update(describes)
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._broken = False
        try:
            self._process, self._conn = child_process.start_child(_serve, factory, nice=nice)
        except Exception as exc:  # noqa: BLE001 - tracking never fails a run
            self._fail(f"could not start ({type(exc).__name__})")

    def _fail(self, why: str) -> None:
        if not self._broken:
            log.warning("run tracking helper %s; the run goes on without tracking", why)
        self._broken = True

    def _send(self, name: str, *args) -> None:
        if self._broken:
            return
        reply = name in _SYNC
        with self._lock:
            try:
                self._conn.send((name, args, reply))
                if not reply:
                    return
                while True:  # the helper answers each waited-for hook, in order
                    if not self._conn.poll(self._wait_s):
                        self._fail(f"did not finish {name} within {self._wait_s:.0f} s")
                        return
                    status, *detail = self._conn.recv()
                    if status == "error":
                        self._fail(f"failed ({': '.join(d for d in detail if d)})")
                        return
                    if detail and detail[0] == name:
                        return
            except (EOFError, OSError, ValueError):
                self._fail("ended")

    # --- the RunObserver hooks ----------------------------------------------------------------------
    def run_started(self, run, params) -> None:
        self._send("run_started", run, dict(params))

    def step(self, run, step: int, loss: float, lr: float | None = None) -> None:
        self._send("step", run, step, loss, lr)

    def run_finished(self, run, metrics, model_dir, card) -> None:
        self._send("run_finished", run, dict(metrics), model_dir, dict(card))

    def run_failed(self, run, status: str, reason: str) -> None:
        self._send("run_failed", run, status, reason)

    def model_promoted(self, engine: str, version: str, model_dir) -> None:
        self._send("model_promoted", engine, version, model_dir)

    def model_rolled_back(self, engine: str, from_version, to_version: str) -> None:
        self._send("model_rolled_back", engine, from_version, to_version)

    def close(self, timeout_s: float = 5.0) -> None:
        """End the helper after what was sent (the helper also ends when this process does)."""
        if self._broken and not hasattr(self, "_conn"):
            return
        try:
            self._conn.close()
            self._process.wait(timeout_s)
        except Exception:  # noqa: BLE001
            self._process.kill()


__all__ = ["ObserverProcess"]
