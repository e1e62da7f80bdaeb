"""The training-run service on a small catalog (fast): one version name for registry, folder and
engine; per-step losses; observer hooks; a run that fails or stops ends in the registry."""
from __future__ import annotations

import json
import threading

import pytest
from support.llm import PROTOCOLS, examples
from support.retraining import ADMIN_ACTOR

from radassist import registry
from radassist.training import run_events
from radassist.training.run_service import CANCELLED_EXIT, FAILED_EXIT, OK, TrainingRun, TrainingRunConfig

# Each run takes about a second, but the first needs MiniLM loaded (7-13 s here): `make test` runs them.
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def shared_encoder(monkeypatch, sentence_encoder):
    import radassist.engines.embedding as embedding

    monkeypatch.setattr(embedding, "load_sentence_encoder", lambda device="cpu": sentence_encoder)


class Recorder(run_events.NullObserver):
    def __init__(self):
        self.calls = []

    def run_started(self, run, params):
        self.calls.append(("started", run.version, run.started_by))

    def step(self, run, step, loss, lr=None):
        self.calls.append(("step", step, loss))

    def run_finished(self, run, metrics, model_dir, card):
        self.calls.append(("finished", run.version, model_dir.name, sorted(card["files"])))

    def run_failed(self, run, status, reason):
        self.calls.append(("failed", run.version, status, reason))


def config(tmp_path, **kw) -> TrainingRunConfig:
    return TrainingRunConfig(engine="embedding", source="file", out_dir=tmp_path / "models", embedding_epochs=40, **kw)


def test_a_registered_run_has_one_name_losses_per_step_and_tells_the_observers(db, tmp_path):
    recorder = Recorder()
    events = []
    run = TrainingRun(db, config(tmp_path), progress=events.append, catalog=PROTOCOLS, examples=examples(2),
                      observers=run_events.ObserverGroup([recorder]))
    claimed = run.claim(ADMIN_ACTOR)
    outcome = run.execute()
    assert outcome.exit_code == OK and outcome.status == registry.CANDIDATE
    version = claimed.version
    assert version.startswith("embedding-") and outcome.version == version and outcome.path.name == version
    assert json.loads((outcome.path / "head.json").read_text())["version"] == version  # the engine's own name
    steps = [e for e in events if "step" in e and "event" not in e]
    assert len(steps) == 40 and steps[-1]["loss"] < steps[0]["loss"] and steps[-1]["total"] == 40
    assert not any(isinstance(e.get("message"), dict) for e in events)
    with db.session() as session:
        row = registry.get_version(session, version)
    assert row.status == registry.CANDIDATE and set(row.files) >= {"head.json", "head.pt"}
    assert row.metrics["gate"]["too_small"] and row.metrics["comparison"] == {"heldout": 0}
    kinds = [c[0] for c in recorder.calls]
    assert kinds[0] == "started" and kinds[-1] == "finished" and kinds.count("step") == 40
    assert recorder.calls[0] == ("started", version, ADMIN_ACTOR.username)
    assert recorder.calls[-1][1:3] == (version, version)


def test_a_failing_run_ends_failed_in_the_registry_and_tells_the_observers(db, tmp_path):
    recorder = Recorder()
    run = TrainingRun(db, config(tmp_path), catalog=PROTOCOLS, examples=examples(1)[:5],  # too few to fit
                      observers=run_events.ObserverGroup([recorder]))
    version = run.claim(ADMIN_ACTOR).version
    outcome = run.execute()
    assert outcome.exit_code == FAILED_EXIT and "at least 10" in outcome.error
    with db.session() as session:
        assert registry.get_version(session, version).status == registry.FAILED
    assert recorder.calls[-1][:3] == ("failed", version, registry.FAILED)


def test_a_stopped_run_is_cancelled_and_writes_nothing(db, tmp_path):
    stop = threading.Event()
    run = TrainingRun(db, config(tmp_path), catalog=PROTOCOLS, examples=examples(2), stop_event=stop,
                      progress=lambda e: stop.set() if e.get("step") == 3 else None)
    version = run.claim(ADMIN_ACTOR).version
    assert run.execute().exit_code == CANCELLED_EXIT
    with db.session() as session:
        assert registry.get_version(session, version).status == registry.CANCELLED
    assert not (tmp_path / "models" / version).exists()


def test_an_unregistered_file_run_writes_a_model_folder_only(tmp_path):
    outcome = TrainingRun(None, config(tmp_path), catalog=PROTOCOLS, examples=examples(2)).execute()
    assert outcome.status == "written" and outcome.path.parent == tmp_path / "models"
