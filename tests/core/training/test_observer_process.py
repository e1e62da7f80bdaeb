"""Training-run observers in a helper process (tracking.observer_process): every hook arrives, in order, in
another process; the hooks that end a run wait until it is logged; a helper that cannot work never fails a run."""
from __future__ import annotations

import functools
import logging
import os

from radassist.tracking.observer_process import ObserverProcess
from radassist.training.run_events import RunInfo
from support.observers import FileRecorder, records

RUN = RunInfo("embedding", "embedding-20261203-000000-abc123", None, "admin")


def test_hooks_run_in_order_in_another_process_and_run_finished_waits(tmp_path):
    log = tmp_path / "hooks.jsonl"
    observer = ObserverProcess(functools.partial(FileRecorder, str(log), slow_finish_s=0.5))
    observer.run_started(RUN, {"epochs": 3})
    for step in range(50):
        observer.step(RUN, step, 1.0 / (step + 1))
    observer.run_finished(RUN, {"top1": 0.9}, tmp_path, {"engine": "embedding"})
    got = records(log)  # read right after run_finished returned: everything is there
    assert [r[1] for r in got] == ["run_started"] + ["step"] * 50 + ["run_finished"]
    assert [r[3] for r in got if r[1] == "step"] == list(range(50))
    assert {r[0] for r in got} != {os.getpid()} and len({r[0] for r in got}) == 1
    observer.model_promoted("embedding", RUN.version, None)
    assert records(log)[-1][1:] == ["model_promoted", "embedding", RUN.version]
    observer.close()


def test_a_helper_that_cannot_build_its_observer_warns_once_and_the_run_goes_on(tmp_path, caplog):
    observer = ObserverProcess(functools.partial(FileRecorder, str(tmp_path / "x"), fail_build=True))
    with caplog.at_level(logging.WARNING):
        observer.run_started(RUN, {})
        observer.step(RUN, 0, 1.0)
        observer.run_finished(RUN, {}, tmp_path, {})  # returns: no exception, no hang
        observer.run_failed(RUN, "failed", "x")
    warnings = [r.getMessage() for r in caplog.records if "tracking helper" in r.getMessage()]
    assert len(warnings) == 1 and "RuntimeError: no tracking server" in warnings[0]
    assert not (tmp_path / "x").exists()


def test_a_helper_that_does_not_answer_in_time_is_given_up_on(tmp_path, caplog):
    log = tmp_path / "hooks.jsonl"
    observer = ObserverProcess(functools.partial(FileRecorder, str(log), slow_finish_s=30), wait_s=1.0)
    with caplog.at_level(logging.WARNING):
        observer.run_finished(RUN, {}, tmp_path, {})
        observer.model_promoted("embedding", RUN.version, None)  # ignored: the helper is given up on
    assert any("did not finish run_finished within 1 s" in r.getMessage() for r in caplog.records)
    observer.close(timeout_s=0.5)
