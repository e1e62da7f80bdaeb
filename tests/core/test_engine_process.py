"""The engine in its own process (radassist.engine_process): same answers as in-process, errors that
say what failed, a dead or orphaned child noticed, and the site's real engine built from the database."""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from radassist.domain import Order
from radassist.ingest import order_from_record
from radassist.engine_process import EngineProcess, EngineProcessError, EngineProcessExited, site_engine
from support.gui import ORDERS, KeywordEngine, catalog_of, make_db


def _orders():
    return [order_from_record(o) for o in ORDERS]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def keyword_process(db):
    catalog = catalog_of(db)
    engine = EngineProcess(functools.partial(KeywordEngine, catalog, fail_accessions=["BOOM"]))
    yield engine, KeywordEngine(catalog)
    engine.close()


def test_answers_as_the_same_engine_in_process(keyword_process):
    remote, local = keyword_process
    assert remote.pid != os.getpid() and remote.alive
    assert (remote.name, remote.version, remote.model_id) == (local.name, local.version, local.model_id)
    assert remote.predict_batch(_orders(), top_k=3) == local.predict_batch(_orders(), top_k=3)
    assert remote.predict(_orders()[0], top_k=1) == local.predict(_orders()[0], top_k=1)


def test_an_error_in_the_engine_is_raised_here_and_the_process_carries_on(keyword_process):
    remote, local = keyword_process
    bad = order_from_record({**ORDERS[0], "accession": "BOOM"})
    with pytest.raises(EngineProcessError) as caught:
        remote.predict_batch([bad])
    assert caught.value.remote_type == "RuntimeError"
    assert str(caught.value) == "RuntimeError: model crashed on BOOM"
    assert remote.predict_batch(_orders()[:1]) == local.predict_batch(_orders()[:1])


def test_set_catalog_reaches_the_engine(keyword_process):
    remote, local = keyword_process
    small = [p for p in local.protocols if p.modality == "MR"][:3]
    remote.set_catalog(small)
    codes = {s.code for p in remote.predict_batch(_orders()) for s in p.suggestions}
    assert codes <= {p.code for p in small}


def test_an_engine_that_cannot_load_fails_the_start_with_its_reason(db):
    with pytest.raises(EngineProcessError) as caught:
        EngineProcess(functools.partial(site_engine, str(db.path), "no-such-engine", False))
    assert caught.value.remote_type == "EngineError"
    assert "unknown engine 'no-such-engine'" in str(caught.value)


def test_a_killed_engine_process_is_reported_on_the_next_call(keyword_process):
    remote, _ = keyword_process
    os.kill(remote.pid, signal.SIGKILL)
    with pytest.raises(EngineProcessExited, match="killed"):
        remote.predict_batch(_orders())
    assert not remote.alive


def test_close_ends_the_process(db):
    engine = EngineProcess(functools.partial(KeywordEngine, catalog_of(db)))
    pid = engine.pid
    engine.close()
    assert _wait_gone(pid, 5)
    with pytest.raises(EngineProcessExited):
        engine.predict_batch(_orders())


def test_an_orphaned_engine_process_exits(tmp_path):
    """The app quit without stopping its engine (os._exit while a model loads): the child does not linger."""
    script = textwrap.dedent(f"""
        import functools, os, sys
        sys.path[:0] = {sys.path!r}
        from radassist.engine_process import EngineProcess
        from support.gui import KeywordEngine, catalog_of, make_db
        from pathlib import Path
        db = make_db(Path({str(tmp_path)!r}), orders=[])
        engine = EngineProcess(functools.partial(KeywordEngine, catalog_of(db)))
        print(engine.pid, flush=True)
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    child = int(out.stdout.split()[-1])
    assert _wait_gone(child, 10), "the engine process outlived its parent"


def test_the_sites_real_engine_in_a_process_answers_as_in_process(tmp_path):
    """What the app runs: site_engine builds the database's engine (settings, catalog, active versions)
    in the child; its suggestions are those of the same engine built here."""
    from radassist.engine_factory import create_site_engine

    db = make_db(tmp_path)
    remote = EngineProcess(functools.partial(site_engine, str(db.path), "embedding", True))
    try:
        local, reason = create_site_engine(db, "embedding")
        assert remote.reason is None and reason is None
        assert remote.model_id == local.model_id
        got, want = remote.predict_batch(_orders()), local.predict_batch(_orders())
        assert [[s.code for s in p.suggestions] for p in got] == [[s.code for s in p.suggestions] for p in want]
        assert [p.top.score for p in got] == pytest.approx([p.top.score for p in want], abs=1e-5)
        assert [[f.type for f in p.flags] for p in got] == [[f.type for f in p.flags] for p in want]
    finally:
        remote.close()
