"""A run observer that appends each hook call to a JSON-lines file (for observers in another process)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


class FileRecorder:
    def __init__(self, path: str, *, slow_finish_s: float = 0.0, fail_build: bool = False):
        if fail_build:
            raise RuntimeError("no tracking server")
        self.path = Path(path)
        self.slow_finish_s = slow_finish_s

    def _write(self, *record) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps([os.getpid(), *record], default=str) + "\n")

    def run_started(self, run, params):
        self._write("run_started", run.version, dict(params))

    def step(self, run, step, loss, lr=None):
        self._write("step", run.version, step, loss)

    def run_finished(self, run, metrics, model_dir, card):
        time.sleep(self.slow_finish_s)  # logging a model takes a while
        self._write("run_finished", run.version, dict(metrics))

    def run_failed(self, run, status, reason):
        self._write("run_failed", run.version, status)

    def model_promoted(self, engine, version, model_dir):
        self._write("model_promoted", engine, version)

    def model_rolled_back(self, engine, from_version, to_version):
        self._write("model_rolled_back", engine, to_version)


def records(path: Path) -> list[list]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()] if Path(path).exists() else []
