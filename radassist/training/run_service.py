"""The training-run service: one owner for a training run, from claim to candidate.

    config = TrainingRunConfig(engine="embedding", source="db", replay_per_protocol=8)
    run = TrainingRun(db, config, progress=print_event)
    run.claim(actor)                      # or run.claim_registered(version, token): the app's run
    outcome = run.execute()               # data -> train -> compare with ACTIVE -> gate -> finish

Used by `radassist train` (a thin adapter: arguments -> config -> this), by the app (the
retraining panel runs that command in a QProcess and reads the same JSON events), and by tests.

- **One version name**: chosen at claim (`registry.new_version_name`), it names the registry row,
  the model folder under ``paths.trained_models_dir()`` and the engine's own version.
- **Claim**: `registry.start_run` (admins, one run at a time across processes) or, for a run the
  app registered, `registry.claim_run` with its one-time token; a refused claim is audited.
- **Compare**: candidate and active model built by the production engine factory
  (`radassist.engine_factory`), so the LLM shortlists with the ACTIVE embedding head.
- **Gate**: `training.gate.evaluate_gate`, stored with the run; `registry.promote` applies it again.
- **Events** (``progress``): per step ``{"step","total","loss","lr","eta_s"}``; otherwise
  ``{"event": "log"|"done"|"stopped"|"error", "message": ...}``. Observers
  (`run_events.observers_for`) get run_started / step / run_finished / run_failed.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radassist import registry
from radassist.access import Actor
from radassist.domain import LabelledOrder, Protocol
from radassist.paths import trained_models_dir
from radassist.training.gate import GateResult, evaluate_gate
from radassist.training.qlora import QLoRAConfig
from radassist.training.run_events import ObserverGroup, RunInfo, observers_for

if TYPE_CHECKING:
    from radassist.settings import SiteSettings
    from radassist.training.dataset import DecisionDataset

log = logging.getLogger(__name__)

EventFn = Callable[[dict], None]
SOURCES = ("db", "file")
ENGINES = ("embedding", "llm")
# exit codes of a run (the command's exit status)
OK, FAILED_EXIT, CANCELLED_EXIT, REFUSED_EXIT = 0, 1, 143, 3


class RunStopped(Exception):
    """The run was asked to stop (SIGTERM / Cancel) before it produced a model."""


@dataclass(frozen=True)
class TrainingRunConfig:
    """Everything a run needs to know, typed (the CLI and the panel build one; nothing below reads argv)."""

    engine: str = "embedding"
    source: str = "db"                     # "db": the site's decisions (+ replay); "file": a labelled JSONL
    data_file: Path | None = None          # with source="file"
    catalog_csv: Path | None = None        # with source="file": default the shipped catalog
    replay_per_protocol: int = 8           # synthetic orders per protocol mixed in (source="db")
    corpus_per_protocol: int = 20          # writer-corpus orders per protocol mixed in (source="db")
    out_dir: Path | None = None            # default: <user data>/models/<engine>
    seed: int = 0
    embedding_epochs: int | None = None    # default: 100 continuing from the active head, 200 from scratch
    embedding_lr: float | None = None      # default: 0.005 continuing, 0.01 from scratch
    qlora: QLoRAConfig = field(default_factory=QLoRAConfig)
    command: str = ""                      # how the run was started, for the model card (no PHI)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}")

    def hyperparams(self) -> dict[str, Any]:
        """What the registry and the observers record about this run."""
        hp: dict[str, Any] = {"source": self.source, "seed": self.seed}
        if self.source == "db":
            hp.update(replay=self.replay_per_protocol, corpus_replay=self.corpus_per_protocol)
        if self.engine == "embedding":
            hp.update(epochs=self.embedding_epochs, lr=self.embedding_lr)
        else:
            q = self.qlora
            hp.update(lora_r=q.lora_r, lora_alpha=q.lora_alpha, lora_dropout=q.lora_dropout, lr=q.learning_rate,
                      epochs=q.epochs, batch_size=q.batch_size, max_length=q.max_length, max_steps=q.max_steps,
                      quantization=q.quantization, device=q.device, optimizer=q.optimizer)
        return {k: v for k, v in hp.items() if v is not None}

    def output_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else trained_models_dir() / self.engine


@dataclass
class TrainedModel:
    version: str
    path: Path
    metrics: dict[str, Any]
    card: dict[str, Any]
    losses: list[float] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # sha256 + size per file, when written


@dataclass
class RunOutcome:
    status: str                            # candidate | failed | cancelled | written (file source, no registry)
    exit_code: int
    version: str | None = None
    path: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: GateResult | None = None
    error: str | None = None


# --------------------------------------------------------------------------- pieces
def compare_on_heldout(heldout: Sequence[LabelledOrder], candidate, active) -> dict[str, Any]:
    """Candidate vs active model on the same held-out decisions: top-1, top-3, ECE, per protocol."""
    from radassist.evaluation import evaluate_predictions

    if not heldout:
        return {"heldout": 0}
    result: dict[str, Any] = {"heldout": len(heldout)}
    per_protocol: dict[str, dict[str, int]] = {}
    for label, engine in (("candidate", candidate), ("active", active)):
        preds = engine.predict_batch([e.order for e in heldout], top_k=3)
        report = evaluate_predictions(heldout, preds)
        result[label] = {"model": engine.model_id, "top1": report.top1, "top3": report.top3, "ece": report.ece}
        for e, p in zip(heldout, preds):
            stats = per_protocol.setdefault(e.code, {"n": 0, "candidate": 0, "active": 0})
            stats["n"] += label == "candidate"
            stats[label] += bool(p.suggestions) and p.suggestions[0].code == e.code
    result["better"] = sorted(c for c, s in per_protocol.items() if s["candidate"] > s["active"])
    result["worse"] = sorted(c for c, s in per_protocol.items() if s["candidate"] < s["active"])
    result["per_protocol"] = per_protocol
    return result


def train_embedding(train: Sequence[LabelledOrder], catalog: Sequence[Protocol], version: str, out_dir: Path,
                    *, start_from: str | Path | None = None, epochs: int | None = None, lr: float | None = None,
                    seed: int = 0, progress: EventFn | None = None, stop_event: threading.Event | None = None,
                    extra_card: Mapping[str, Any] | None = None) -> TrainedModel:
    """Fit an embedding head (seconds) and save it as ``out_dir/version`` (head.json version = ``version``).

    ``start_from``: a head folder to continue from (the active model, when retraining from decisions)."""
    from radassist.engines.embedding import EmbeddingEngine

    engine = EmbeddingEngine(catalog, head_dir=start_from)
    warm = start_from is not None and engine.head is not None
    epochs = epochs or (100 if warm else 200)
    lr = lr or (0.005 if warm else 0.01)
    losses: list[float] = []
    started = time.perf_counter()
    every = max(1, epochs // 50)

    def on_epoch(epoch: int, total: int, loss: float) -> None:
        losses.append(loss)
        if stop_event is not None and stop_event.is_set():
            raise RunStopped
        if progress and (epoch % every == 0 or epoch == total):
            elapsed = time.perf_counter() - started
            progress({"step": epoch, "total": total, "loss": round(loss, 5), "lr": lr,
                      "eta_s": round(elapsed / epoch * (total - epoch), 1)})

    metrics = engine.fit(train, warm_start=warm, epochs=epochs, lr=lr, seed=seed, on_epoch=on_epoch)
    if stop_event is not None and stop_event.is_set():
        raise RunStopped
    out_dir.mkdir(parents=True, exist_ok=True)
    card = {"version": version, "engine": "embedding", "train_size": len(train), "metrics": metrics,
            "started_from": Path(start_from).name if start_from else None,
            "hyperparameters": {"epochs": epochs, "lr": lr, "seed": seed, "warm_start": warm},
            "training": {"steps": len(losses), "loss_curve": [round(x, 4) for x in losses]},
            **(extra_card or {})}
    path = engine.save_head(out_dir / version, extra=card)
    return TrainedModel(version, path, {**metrics, "final_train_loss": round(losses[-1], 4) if losses else None},
                        card, losses)


def train_llm(train: Sequence[LabelledOrder], catalog: Sequence[Protocol], version: str, out_dir: Path,
              config: QLoRAConfig, *, progress: EventFn | None = None,
              stop_event: threading.Event | None = None, command: str = "") -> TrainedModel:
    """QLoRA adapter written as ``out_dir/version`` (see training/qlora.py)."""
    from radassist.training import qlora

    train_set, val_set = qlora.split_examples(list(train), config.val_fraction, config.seed)
    if progress:
        progress({"event": "log", "message": f"training on {len(train_set)} orders, validating on {len(val_set)}"})
    result = qlora.train(config, train_set, val_set, list(catalog), progress=progress, stop_event=stop_event,
                         out_dir=out_dir, command=command, version=version)
    if result.stopped or result.adapter_dir is None:
        raise RunStopped
    card_path = result.adapter_dir / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    metrics = {**result.metrics, "optimizer": result.optimizer, "first_lora_grad_norm": result.first_grad_norm}
    return TrainedModel(version, result.adapter_dir, metrics, card, result.losses)


# --------------------------------------------------------------------------- the run
class TrainingRun:
    """One training run. Call `claim` (or `claim_registered`), then `execute`; or the steps one by one."""

    def __init__(self, db, config: TrainingRunConfig, *, progress: EventFn | None = None,
                 stop_event: threading.Event | None = None, observers: ObserverGroup | None = None,
                 catalog: Sequence[Protocol] | None = None, examples: Sequence[LabelledOrder] | None = None):
        """``db``: the site's database (None for an unregistered file-sourced run); ``catalog`` /
        ``examples``: given directly instead of the database's catalog / the config's data file."""
        self.db = db
        self.config = config
        self._progress = progress
        self.stop_event = stop_event or threading.Event()
        self.actor: Actor | None = None
        self.version: str | None = None
        self.run: registry.ModelVersion | None = None
        self.catalog: list[Protocol] = list(catalog) if catalog is not None else []
        self._given_examples = list(examples) if examples is not None else None
        self.dataset: DecisionDataset | None = None
        self.train_examples: list[LabelledOrder] = []
        self.heldout: list[LabelledOrder] = []
        self.model: TrainedModel | None = None
        self.comparison: dict[str, Any] | None = None
        self.gate_result: GateResult | None = None
        self.settings: SiteSettings | None = None
        self._observers = observers
        self._start_from: str | None = None
        self._t0 = time.perf_counter()

    # --- events ---------------------------------------------------------------------------------
    def emit(self, event: dict) -> None:
        if "step" in event and "event" not in event and self.version is not None:
            self.observers.step(self.run_info, int(event["step"]), float(event.get("loss", math.nan)),
                                event.get("lr"))
        if self._progress:
            self._progress(event)

    def _log(self, message: str) -> None:
        self.emit({"event": "log", "message": message})

    @property
    def registered(self) -> bool:
        return self.run is not None

    @property
    def run_info(self) -> RunInfo:
        return RunInfo(self.config.engine, self.version or "", self.config.qlora.base_model
                       if self.config.engine == "llm" else None, self.actor.username if self.actor else "")

    @property
    def observers(self) -> ObserverGroup:
        if self._observers is None:
            from radassist.settings import SiteSettings

            self._observers = observers_for(self.settings or SiteSettings(), catalog=self.catalog or None)
        return self._observers

    def _load_site(self) -> None:
        from radassist.catalog import default_catalog, ensure_catalog, load_catalog_csv
        from radassist.settings import SiteSettings, load_settings

        given = self.catalog or (load_catalog_csv(self.config.catalog_csv) if self.config.catalog_csv else None)
        if self.db is None:
            self.settings = SiteSettings()
            self.catalog = list(given or default_catalog())
            return
        with self.db.session() as session:
            self.settings = load_settings(session)
            self.catalog = list(given or ensure_catalog(session))

    # --- claim ----------------------------------------------------------------------------------
    def claim(self, actor: Actor) -> registry.ModelVersion:
        """Register a new run as ``actor`` (admins; refused, and audited, for others and while another
        run is in progress)."""
        self._load_site()
        version = registry.new_version_name(self.config.engine)
        with self.db.session() as session:
            self.run = registry.start_run(session, actor, self.config.engine, version, data={},
                                          hyperparams=self.config.hyperparams(),
                                          base_model=self.config.qlora.base_model if self.config.engine == "llm"
                                          else None, pid=os.getpid())
        self.actor, self.version = actor, version
        self.observers.run_started(self.run_info, self.config.hyperparams())
        return self.run

    def claim_registered(self, version: str, token: str | None) -> registry.ModelVersion:
        """Take over a run the app registered for this process (one-time token from the environment).

        Refused (registry.RunClaimRefused, audited) for a crashed or ended run, a used or wrong token,
        no token, or a run registered by another process tree."""
        try:
            with self.db.session() as session:
                run, actor = registry.claim_run(session, version, token)
        except registry.RunClaimRefused as exc:
            with self.db.session() as session:  # the claim's transaction rolled back: reap and audit here
                registry.reap_dead_runs(session)
                registry.record_claim_refusal(session, version, str(exc))
            raise
        self.run, self.actor, self.version = run, actor, version
        if run.engine != self.config.engine:
            reason = f"run {version} was registered for the {run.engine} engine, not {self.config.engine}"
            self._finish_as(registry.FAILED, {"error": reason})
            raise registry.RunClaimRefused(reason)
        self._load_site()
        self.observers.run_started(self.run_info, self.config.hyperparams())
        return run

    # --- data -----------------------------------------------------------------------------------
    def build_data(self) -> None:
        """Decisions (train / held-out by accession) + replay, or the labelled file."""
        if self.settings is None:
            self._load_site()
        if self.config.source == "file":
            from radassist.synthetic import read_labelled_jsonl

            if self._given_examples is not None:
                self.train_examples = list(self._given_examples)
            elif self.config.data_file:
                self.train_examples = read_labelled_jsonl(self.config.data_file)
            else:
                raise ValueError("a file-sourced run needs a data file")
            self.heldout = []
            self._log(f"training set: {len(self.train_examples)} labelled orders from the file")
            return
        from radassist.training.dataset import build_dataset

        with self.db.session() as session:
            self.dataset = build_dataset(session, self.catalog, replay_per_protocol=self.config.replay_per_protocol,
                                         seed=self.config.seed, corpus_per_protocol=self.config.corpus_per_protocol)
            active = registry.active_version(session, self.config.engine)
        self.train_examples, self.heldout = list(self.dataset.train), list(self.dataset.heldout)
        counts = self.dataset.counts()
        self._log(f"training set: {counts['train_decisions']} decisions + {counts['replay']} replay orders; "
                  f"{counts['heldout']} held-out decisions for the comparison "
                  f"({counts['overrides']} overrides, {counts['duplicates_dropped']} duplicates dropped)")
        if self.config.engine == "embedding":  # continue from the model in use, so that it forgets nothing
            from radassist.engines.embedding import default_head_dir

            shipped = default_head_dir()
            self._start_from = active.path if active and active.path else (str(shipped) if shipped else None)

    # --- train ----------------------------------------------------------------------------------
    def train(self) -> TrainedModel:
        version = self.version or registry.new_version_name(self.config.engine)
        self.version = version
        out = self.config.output_dir()
        if self.stop_event.is_set():
            raise RunStopped
        if self.config.engine == "embedding":
            self._log(f"fitting the embedding head on {len(self.train_examples)} orders"
                      + (f", continuing from {Path(self._start_from).name}" if self._start_from else ""))
            self.model = train_embedding(self.train_examples, self.catalog, version, out,
                                         start_from=self._start_from, epochs=self.config.embedding_epochs,
                                         lr=self.config.embedding_lr, seed=self.config.seed, progress=self.emit,
                                         stop_event=self.stop_event,
                                         extra_card={"data": self.dataset.counts() if self.dataset else
                                                     {"train": len(self.train_examples)},
                                                     "command": self.config.command})
        else:
            qcfg = self.config.qlora
            if qcfg.base_model is None and self.settings is not None and self.settings.base_model:
                qcfg = replace(qcfg, base_model=self.settings.base_model)
            self.model = train_llm(self.train_examples, self.catalog, version, out, qcfg, progress=self.emit,
                                   stop_event=self.stop_event, command=self.config.command)
        self.model.metrics["seconds"] = round(time.perf_counter() - self._t0, 1)
        self.model.files = registry.model_files(self.model.path)  # at training time, before anything reads it
        return self.model

    # --- compare and gate -------------------------------------------------------------------------
    def compare(self) -> dict[str, Any]:
        """The candidate vs the ACTIVE model on the held-out decisions, both built by the engine factory."""
        from radassist.engine_factory import engine_for

        assert self.model is not None, "train first"
        if not self.heldout:
            self.comparison = {"heldout": 0}
            return self.comparison
        self._log(f"comparing the candidate with the active model on {len(self.heldout)} held-out decisions")
        with self.db.session() as session:
            candidate = engine_for(session, self.catalog, self.settings, self.config.engine,
                                   model_path=self.model.path)
            active = engine_for(session, self.catalog, self.settings, self.config.engine)
        self.comparison = compare_on_heldout(self.heldout, candidate, active)
        return self.comparison

    def gate(self) -> GateResult:
        gate = self.settings.promotion_gate if self.settings is not None else 0.0
        self.gate_result = evaluate_gate(self.comparison, gate)
        return self.gate_result

    # --- end --------------------------------------------------------------------------------------
    def _finish_as(self, status: str, metrics: dict, path: Path | None = None, files: dict | None = None,
                   actor: Actor | None = None) -> registry.ModelVersion | None:
        version = self.version or (self.run.version if self.run else None)
        acting = actor or self.actor
        if version is None or acting is None:
            return None
        with self.db.session() as session:
            return registry.finish_run(session, acting, version, status,
                                       path=str(path) if path else None, metrics=metrics, files=files)

    def finish(self) -> registry.ModelVersion:
        """Record the candidate: metrics, comparison, gate verdict and the hashes of its files."""
        assert self.model is not None
        files = self.model.files or registry.model_files(self.model.path)
        metrics = {**self.model.metrics, "model_version": self.model.version,
                   "data": self.dataset.counts() if self.dataset else {"train": len(self.train_examples)},
                   "comparison": self.comparison or {"heldout": 0},
                   "gate": self.gate_result.to_json() if self.gate_result else None}
        card_path = self.model.path / ("model_card.json" if self.config.engine == "llm" else "head.json")
        run = self._finish_as(registry.CANDIDATE, metrics, self.model.path, files)
        if run is None:
            raise registry.RegistryError("no registered run to finish")
        self.run = run
        self.observers.run_finished(self.run_info, metrics, self.model.path,
                                    {**self.model.card, "files": files, "card_file": card_path.name})
        return run

    def fail(self, reason: str, status: str = registry.FAILED) -> None:
        if self.registered:
            try:
                self.run = self._finish_as(status, {"error": reason})
            except registry.RegistryError as exc:  # already ended (e.g. reaped meanwhile)
                log.warning("could not record the end of run %s: %s", self.version, exc)
        if self.version is not None:
            self.observers.run_failed(self.run_info, status, reason)

    def cancel(self) -> None:
        self.fail("cancelled", registry.CANCELLED)

    # --- the whole run ----------------------------------------------------------------------------
    def execute(self) -> RunOutcome:
        """Data, train, compare, gate, finish; whatever goes wrong, the run ends in the registry."""
        try:
            self.build_data()
            self.train()
            if self.stop_event.is_set():  # stopped while the model was being written: keep nothing
                import shutil

                assert self.model is not None
                shutil.rmtree(self.model.path, ignore_errors=True)
                raise RunStopped
            if self.registered:
                self.compare()
                gate = self.gate()
                self.finish()
                cmp = self.comparison or {}
                if cmp.get("heldout"):
                    self._log(f"held-out comparison: candidate top-1 {cmp['candidate']['top1']:.1%} / top-3 "
                              f"{cmp['candidate']['top3']:.1%}, active top-1 {cmp['active']['top1']:.1%} / top-3 "
                              f"{cmp['active']['top3']:.1%}")
                self._log(("promotion gate: passes — " if gate.passed else "promotion gate: refuses — ")
                          + gate.summary)
            assert self.model is not None
            metrics = dict(self.run.metrics) if self.run else dict(self.model.metrics)
            self.emit({"event": "done", "version": self.model.version, "adapter": str(self.model.path),
                       "metrics": metrics, "gate": self.gate_result.to_json() if self.gate_result else None,
                       "message": f"model {self.model.version} written to {self.model.path}"})
            return RunOutcome(registry.CANDIDATE if self.registered else "written", OK, self.model.version,
                              self.model.path, metrics, self.gate_result)
        except RunStopped:
            self.cancel()
            steps = len(self.model.losses) if self.model else None
            self.emit({"event": "stopped", "steps": steps, "message": "stopped; no model written"})
            return RunOutcome(registry.CANCELLED, CANCELLED_EXIT, self.version)
        except BaseException as exc:  # noqa: BLE001 - every failure ends the run in the registry
            reason = _describe(exc)
            self.fail(reason)
            self.emit({"event": "error", "message": f"training failed: {reason}"})
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return RunOutcome(registry.FAILED, FAILED_EXIT, self.version, error=reason)


def _describe(exc: BaseException) -> str:
    """A failure in one line, without clinical text (exception types and OS error strings only)."""
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


__all__ = ["RunOutcome", "RunStopped", "TrainedModel", "TrainingRun", "TrainingRunConfig", "compare_on_heldout",
           "decision_stats",
           "train_embedding", "train_llm"]


def decision_stats(session, engine: str) -> dict[str, Any]:
    """What the retraining panel shows before a run: decisions since the active model was trained,
    total, overrides by protocol, the active version and a run in progress (dead runs reaped first)."""
    from collections import Counter
    from datetime import datetime

    from radassist.catalog import catalog_from_db
    from radassist.worklist import latest_decisions

    registry.reap_dead_runs(session)
    active = registry.active_version(session, engine)
    since = datetime.fromisoformat(active.finished_at or active.created_at) if active else None
    latest = latest_decisions(session)
    recent = [d for d in latest if since is None or d.decided_at >= since]
    overrides: dict[str, Counter] = {}
    for d in recent:
        if d.action == "overridden":
            overrides.setdefault(d.final_code, Counter())[d.suggested_code or "—"] += 1
    names = {p.code: p.name for p in catalog_from_db(session)} if overrides else {}
    by_protocol = sorted(((code, names.get(code, ""), sum(c.values()), c.most_common(1)[0][0])
                          for code, c in overrides.items()), key=lambda r: (-r[2], r[0]))
    running = [v for v in registry.list_versions(session) if v.status == registry.RUNNING]
    return {"active": active, "total": len(latest), "since": len(recent),
            "overrides": sum(r[2] for r in by_protocol), "by_protocol": by_protocol,
            "running": running[0] if running else None}
