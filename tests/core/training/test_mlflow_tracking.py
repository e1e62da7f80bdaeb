"""MLflow tracking and registry against a temporary sqlite:/// store (radassist[mlflow]): real training
runs through the training-run service, the logged model reloaded from MLflow gives the same
suggestions, promotion and rollback move the `champion` alias, failures end the run."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import time

import pytest

if importlib.util.find_spec("mlflow") is None:  # imported by each test: collecting costs nothing
    pytest.skip("needs the mlflow extra: pip install 'radassist[mlflow]'", allow_module_level=True)

from support.llm import PROTOCOLS, TEXTS, examples  # noqa: E402
from support.retraining import ADMIN_ACTOR  # noqa: E402

from radassist import registry  # noqa: E402
from radassist.training import run_events  # noqa: E402
from radassist.training.run_events import RunInfo  # noqa: E402
from radassist.training.run_service import OK, TrainingRun, TrainingRunConfig  # noqa: E402

pytestmark = pytest.mark.mlflow


@pytest.fixture(autouse=True)
def shared_encoder(monkeypatch, sentence_encoder):
    import radassist.engines.embedding as embedding

    monkeypatch.setattr(embedding, "load_sentence_encoder", lambda device="cpu": sentence_encoder)


@pytest.fixture
def tracking_uri(tmp_path):
    import mlflow
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    yield uri
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture
def site(db, tracking_uri):
    """The site database with the MLflow tracking URI set (as an admin would in Settings)."""
    from radassist.settings import load_settings, save_settings

    with db.session() as session:
        save_settings(session, ADMIN_ACTOR, dataclasses.replace(load_settings(session),
                                                                mlflow_tracking_uri=tracking_uri))
    return db


def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def orders():
    from radassist.domain import Order

    return [Order(f"Q{i}", exam, note, age=50, sex="F") for i, (exam, notes) in enumerate(TEXTS.values())
            for note in notes[:2]]


def train(db, tmp_path, engine="embedding", **kw):
    cfg = TrainingRunConfig(engine=engine, source="file", out_dir=tmp_path / "models", embedding_epochs=30, **kw)
    run = TrainingRun(db, cfg, catalog=PROTOCOLS, examples=examples(2))
    run.claim(ADMIN_ACTOR)
    outcome = run.execute()
    assert outcome.exit_code == OK, outcome.error
    return outcome


def test_a_training_run_is_tracked_registered_and_reloads_with_the_same_suggestions(site, tmp_path, tracking_uri):
    import mlflow
    import pandas as pd

    from radassist.engines.embedding import EmbeddingEngine

    outcome = train(site, tmp_path)  # the site setting alone turns tracking on (observers_for)
    c = client(tracking_uri)
    experiment = c.get_experiment_by_name("radassist-embedding")
    (run,) = c.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["radassist_version"] == outcome.version
    assert run.data.params["epochs"] == "30" and run.data.params["source"] == "file"
    losses = c.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == list(range(1, 31))           # every step, in order
    assert losses[-1].value < losses[0].value
    expected_metrics = {k for k, v in outcome.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert expected_metrics and expected_metrics <= set(run.data.metrics)
    card = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/model_card.json")
    assert card["version"] == outcome.version and card["engine"] == "embedding"
    assert run.data.tags["card.version"] == outcome.version
    # artifacts beside the sqlite store, not in the working directory
    assert run.info.artifact_uri.startswith((tmp_path / "mlflow-artifacts").as_uri())

    (mv,) = c.search_model_versions("name = 'radassist-embedding'")
    assert mv.tags["radassist_version"] == outcome.version and mv.run_id == run.info.run_id
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/radassist-embedding/{mv.version}")
    batch = orders()
    frame = pd.DataFrame([{"accession": o.accession, "ordered_exam": o.ordered_exam, "clinical_notes": o.clinical_notes,
                           "age": o.age, "sex": o.sex, "priority": o.priority} for o in batch])
    reloaded = model.predict(frame)
    direct = EmbeddingEngine(PROTOCOLS, head_dir=outcome.path).predict_batch(batch)

    def strip(record):
        return {k: v for k, v in record.items() if k != "latency_ms"}

    assert [strip(r) for r in reloaded] == [strip(p.to_json()) for p in direct]  # exactly the same records
    assert reloaded[0]["model"] == f"embedding/{outcome.version}"


def test_promotion_sets_the_champion_alias_and_rollback_moves_it_back(site, tmp_path, tracking_uri):
    import mlflow
    first = train(site, tmp_path)
    second = train(site, tmp_path)
    c = client(tracking_uri)

    def champion():
        return c.get_model_version_by_alias("radassist-embedding", "champion").tags["radassist_version"]

    with site.session() as session:  # no held-out decisions in a file run: an admin forces the gate
        registry.promote(session, ADMIN_ACTOR, first.version, force=True)
    assert champion() == first.version
    with site.session() as session:
        registry.promote(session, ADMIN_ACTOR, second.version, force=True)
    assert champion() == second.version
    with site.session() as session:
        registry.rollback(session, ADMIN_ACTOR, "embedding")
    assert champion() == first.version
    with site.session() as session:  # back to the shipped model, which MLflow never saw: no champion
        registry.rollback(session, ADMIN_ACTOR, "embedding")
    with pytest.raises(mlflow.exceptions.MlflowException):
        c.get_model_version_by_alias("radassist-embedding", "champion")


def test_failed_and_cancelled_runs_end_failed_and_killed(tracking_uri):
    from radassist.tracking.mlflow_observer import MLflowObserver

    observer = MLflowObserver(tracking_uri)
    for version, status in (("embedding-fail", registry.FAILED), ("embedding-stop", registry.CANCELLED)):
        info = RunInfo("embedding", version, started_by="admin.test")
        observer.run_started(info, {"epochs": 3})
        observer.step(info, 1, 0.9)
        observer.run_failed(info, status, "training process ended without reporting")
    c = client(tracking_uri)
    experiment = c.get_experiment_by_name("radassist-embedding")
    runs = {r.data.tags["radassist_version"]: r for r in c.search_runs([experiment.experiment_id])}
    assert runs["embedding-fail"].info.status == "FAILED"
    assert runs["embedding-stop"].info.status == "KILLED"
    assert runs["embedding-fail"].data.tags["radassist_status"] == registry.FAILED
    assert c.get_metric_history(runs["embedding-fail"].info.run_id, "loss")[0].value == pytest.approx(0.9)
    # a new observer (another process: the registry's reaper) finds the run by its version tag
    assert MLflowObserver(tracking_uri).run_id("embedding", "embedding-fail") == runs["embedding-fail"].info.run_id


def test_an_unreachable_server_never_fails_or_stalls_a_run(caplog, tmp_path):
    from radassist.tracking.mlflow_observer import MLflowObserver

    observer = MLflowObserver("http://127.0.0.1:9")  # loopback, nothing listens there
    info = RunInfo("embedding", "embedding-offline")
    caplog.set_level(logging.WARNING)
    t0 = time.perf_counter()
    observer.run_started(info, {"epochs": 3})
    for step in range(1, 200):
        observer.step(info, step, 1.0 / step)
    observer.run_finished(info, {"top1": 0.9}, tmp_path, {"version": "x"})
    observer.model_promoted("embedding", "embedding-offline", None)
    assert time.perf_counter() - t0 < 30
    warnings = [r.getMessage() for r in caplog.records if "MLflow" in r.getMessage()]
    assert warnings and "no more MLflow logging for this run" in warnings[0]
    assert len([w for w in warnings if "embedding-offline" in w]) == 1  # one warning for the run, then silence
    assert any(w.startswith("MLflow model_promoted") for w in warnings)


def test_observers_for_picks_mlflow_from_the_site_setting(tracking_uri):
    from radassist.settings import SiteSettings
    from radassist.tracking.mlflow_observer import MLflowObserver

    assert run_events.observers_for(SiteSettings()).observers == []
    (observer,) = run_events.observers_for(SiteSettings(mlflow_tracking_uri=tracking_uri),
                                           catalog=PROTOCOLS).observers
    # an MLflowObserver in a helper process (its imports and SQL off the training process's interpreter lock)
    assert observer.observer_class is MLflowObserver
    assert observer.uri == tracking_uri and observer.catalog == PROTOCOLS
    observer.close()


def test_flattened_metrics_keep_numbers_only():
    from radassist.tracking.mlflow_observer import flatten_metrics

    flat = flatten_metrics({"top1": 0.9, "comparison": {"candidate": {"top1": 0.8}, "heldout": 12},
                            "optimizer": "adamw", "gate": None, "passed": True, "loss": float("nan")})
    assert flat == {"top1": 0.9, "comparison.candidate.top1": 0.8, "comparison.heldout": 12.0, "passed": 1.0}
    json.dumps(flat)


def test_hooks_queue_their_work_and_a_finished_run_is_logged_before_run_finished_returns(tracking_uri, tmp_path,
                                                                                         monkeypatch):
    """MLflow's cost stays off the training thread (imports, the store, slow servers) except at the end."""
    from radassist.tracking.mlflow_observer import MLflowObserver

    observer = MLflowObserver(tracking_uri, catalog=PROTOCOLS)
    slow_start = observer._run_started

    def slow(run, params):
        time.sleep(1.0)  # a slow server, or mlflow's first import in a fresh training process
        slow_start(run, params)

    monkeypatch.setattr(observer, "_run_started", slow)
    info = RunInfo("embedding", "embedding-async", started_by="admin.test")
    t0 = time.perf_counter()
    observer.run_started(info, {"epochs": 3})
    for step in range(1, 4):
        observer.step(info, step, 1.0 / step)
    assert time.perf_counter() - t0 < 0.5  # the run went on meanwhile
    head = tmp_path / "head"
    head.mkdir()
    (head / "head.json").write_text("{}")
    observer.run_finished(info, {"top1": 0.5}, head, {"version": "embedding-async"})
    c = client(tracking_uri)
    run = c.get_run(observer.run_id("embedding", "embedding-async"))
    assert run.info.status == "FINISHED" and run.data.metrics["top1"] == 0.5
    assert [m.step for m in c.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
