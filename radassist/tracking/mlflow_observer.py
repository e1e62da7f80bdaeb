"""MLflow tracking and registry for training runs (`RunObserver`, optional extra ``radassist[mlflow]``).

When the site setting ``mlflow_tracking_uri`` is set, `run_events.observers_for` adds an
`MLflowObserver`; the training-run service and the registry call its hooks:

- ``run_started``: experiment ``radassist-<engine>`` (artifacts beside a ``sqlite:///`` store, never in
  the working directory), a run tagged with the app's version name, the hyper-parameters as params.
- ``step``: the per-step loss (buffered, sent with ``log_batch`` every few seconds and at the end, so
  that tracking costs the run almost nothing).
- ``run_finished``: the held-out metrics (nested dicts flattened: ``comparison.candidate.top1``), the model
  card (``model_card.json`` artifact + ``card.*`` tags) and the model as an MLflow pyfunc model:
  the embedding head folder, or the LLM's LoRA adapter folder with a reference to its base model
  (never the base weights), plus the run's catalog. Registered as model ``radassist-<engine>``, the
  version tagged ``radassist_version=<the app's version>``. ``mlflow.pyfunc.load_model(...)`` gives back
  a model whose ``predict(DataFrame of orders)`` returns the `radassist predict` records (dicts).
- ``run_failed``: the run ends FAILED (KILLED when cancelled).
- ``model_promoted``: the registered model's alias ``champion`` moves to the version tagged with the
  promoted app version; ``model_rolled_back`` moves it back (removed when back to the shipped model).

The app's own registry stays the source of truth: every hook catches its errors and logs one clear
warning (no clinical text: only versions, engines and the error), and after a failure the observer
stops sending the rest of that run, so an unreachable server never stalls or fails training.
mlflow is imported lazily: this module imports without the extra.

The hooks of a run only queue their work for one background thread (in order), which imports mlflow
and opens the client while the run builds its data and trains; only ``run_finished`` / ``run_failed``
wait for the queue (at most `FINISH_WAIT_SECONDS`), so that the training process does not exit before
its run is logged. `run_events.observers_for` runs this observer in a helper process
(`tracking.observer_process`): on a thread of the training process, mlflow's Python still held the
interpreter lock the training loop needs after every torch call (docs/scale.md, measured).
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from radassist.training.run_events import RunInfo

log = logging.getLogger(__name__)

ALIAS = "champion"
CHAMPION = ALIAS
VERSION_TAG = "radassist_version"
FLUSH_SECONDS = 5.0
FLUSH_STEPS = 200
FINISH_WAIT_SECONDS = 180.0  # the longest a finished run waits for its logging (an unreachable server: far less)
INSTALL_HINT = "MLflow tracking needs the mlflow extra: pip install 'radassist[mlflow]'"


def experiment_name(engine: str) -> str:
    return f"radassist-{engine}"


def registered_model_name(engine: str) -> str:
    return f"radassist-{engine}"


model_name = registered_model_name


def _key(name: str) -> str:
    """An MLflow metric/param/tag key (letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", name)[:250]


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested metrics as ``a.b.c`` keys (booleans as 0/1; NaN, None and text dropped)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, name + "."))
        elif isinstance(value, bool):
            out[_key(name)] = float(value)
        elif isinstance(value, (int, float)) and math.isfinite(float(value)):
            out[_key(name)] = float(value)
    return out


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a ``sqlite:///`` file (a server decides otherwise)."""
    if uri.startswith("sqlite:///"):
        store = Path(uri[len("sqlite:///"):]).resolve()
        return (store.parent / f"{store.stem}-artifacts").as_uri()
    return None


class MLflowObserver:
    """`RunObserver` that mirrors training runs and promotions into MLflow (see the module docstring)."""

    def __init__(self, uri: str, settings: Any = None, *, catalog=None):
        self.uri = uri
        self.settings = settings
        self.catalog = list(catalog) if catalog is not None else None
        self._client: Any = None
        self._runs: dict[str, str] = {}           # app version -> MLflow run id
        self._pending: dict[str, list] = {}       # app version -> buffered Metric objects
        self._last_flush: dict[str, float] = {}
        self._broken: set[str] = set()            # versions whose tracking failed: skip the rest of the run
        self._executor: ThreadPoolExecutor | None = None  # one thread: the run's MLflow calls, in order
        self._last: Future | None = None
        self._lock = threading.Lock()
        # An unreachable server must not stall training: few retries, short timeouts.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

    # --- the background thread ------------------------------------------------------------------------
    def _submit(self, fn, *args) -> Future:
        """Run ``fn(*args)`` on the observer's thread, after everything submitted before (never raises)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="radassist-mlflow")
            self._last = self._executor.submit(fn, *args)
            return self._last

    def prepare(self) -> None:
        """Import mlflow (and its pyfunc flavour) in the background (seconds), while the run builds its data."""
        self._submit(self._prepare)

    def _prepare(self) -> None:
        try:
            self.client  # noqa: B018 - imports mlflow.tracking and opens the store
            import mlflow.entities  # noqa: F401
            import mlflow.pyfunc  # noqa: F401 - the model is saved with it at the end of the run
        except Exception as exc:  # noqa: BLE001 - reported by the first hook that needs it
            log.debug("MLflow import in the background failed: %s", type(exc).__name__)

    def wait(self, timeout: float | None = FINISH_WAIT_SECONDS) -> bool:
        """Wait until everything queued so far is sent; False (and a warning) if that took over ``timeout``."""
        last = self._last
        if last is None:
            return True
        try:
            last.result(timeout=timeout)
        except TimeoutError:
            log.warning("MLflow logging still busy after %.0f s; the run goes on without waiting", timeout or 0)
            return False
        except Exception:  # noqa: BLE001 - _safe already logged it
            pass
        return True

    # --- plumbing -------------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            try:
                from mlflow.tracking import MlflowClient
            except ImportError as exc:
                raise RuntimeError(INSTALL_HINT) from exc
            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    def _safe(self, what: str, version: str | None, fn, *args) -> Any:
        if version is not None and version in self._broken:
            return None
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - tracking never fails a run or a promotion
            if version is not None:
                self._broken.add(version)
            log.warning("MLflow %s for %s failed (%s: %s); the app's registry is unaffected%s", what,
                        version or "-", type(exc).__name__, str(exc)[:200],
                        "; no more MLflow logging for this run" if version else "")
            return None

    def _experiment_id(self, engine: str) -> str:
        name = experiment_name(engine)
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifact_location(self.uri))
        except Exception:  # created meanwhile by another process
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def run_id(self, engine: str, version: str) -> str | None:
        """The MLflow run of an app version (this process's, else found by its tag)."""
        if not threading.current_thread().name.startswith("radassist-mlflow"):
            self.wait()
        return self._run_id(engine, version)

    def _run_id(self, engine: str, version: str) -> str | None:
        if version in self._runs:
            return self._runs[version]
        found = self.client.get_experiment_by_name(experiment_name(engine))
        if found is None:
            return None
        runs = self.client.search_runs([found.experiment_id],
                                       filter_string=f"tags.{VERSION_TAG} = '{_quote(version)}'", max_results=1)
        if not runs:
            return None
        self._runs[version] = runs[0].info.run_id
        return self._runs[version]

    # --- hooks ------------------------------------------------------------------------------------------
    def run_started(self, run: RunInfo, params: Mapping[str, Any]) -> None:
        self._submit(self._safe, "run_started", run.version, self._run_started, run, dict(params))
        self.prepare()  # mlflow.pyfunc too, while the run trains

    def _run_started(self, run: RunInfo, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        tags = {VERSION_TAG: run.version, "radassist_engine": run.engine}
        if run.started_by:
            tags["radassist_started_by"] = run.started_by
        if run.base_model:
            tags["radassist_base_model"] = str(run.base_model)
        created = self.client.create_run(self._experiment_id(run.engine), tags=tags, run_name=run.version)
        run_id = created.info.run_id
        self._runs[run.version] = run_id
        values = {**params, **({"base_model": run.base_model} if run.base_model else {})}
        if values:
            self.client.log_batch(run_id, params=[Param(_key(str(k)), str(v)[:6000]) for k, v in values.items()])

    def step(self, run: RunInfo, step: int, loss: float, lr: float | None = None) -> None:
        """Buffered in the caller's thread (no mlflow call); sent in batches by the observer's thread."""
        if run.version in self._broken:
            return
        now = int(time.time() * 1000)
        with self._lock:
            pending = self._pending.setdefault(run.version, [])
            if loss is not None and math.isfinite(loss):
                pending.append(("loss", float(loss), now, int(step)))
            if lr is not None and math.isfinite(float(lr)):
                pending.append(("lr", float(lr), now, int(step)))
            last = self._last_flush.setdefault(run.version, time.monotonic())
            due = len(pending) >= FLUSH_STEPS or time.monotonic() - last >= FLUSH_SECONDS
            if due:
                self._last_flush[run.version] = time.monotonic()
        if due:
            self._submit(self._safe, "step", run.version, self._flush, run)

    def _flush(self, run: RunInfo) -> None:
        from mlflow.entities import Metric

        with self._lock:
            pending = self._pending.pop(run.version, [])
            self._last_flush[run.version] = time.monotonic()
        run_id = self._run_id(run.engine, run.version)
        if pending and run_id:
            metrics = [Metric(*m) for m in pending]
            for start in range(0, len(metrics), 1000):  # MLflow's log_batch limit
                self.client.log_batch(run_id, metrics=metrics[start:start + 1000])

    def run_finished(self, run: RunInfo, metrics: Mapping[str, Any], model_dir: Path,
                     card: Mapping[str, Any]) -> None:
        self._submit(self._safe, "run_finished", run.version, self._run_finished, run, dict(metrics),
                     Path(model_dir), dict(card))
        self._submit(self._end, run.version, "FINISHED")
        self.wait()  # the training process exits next: the run must be logged by then

    def _run_finished(self, run: RunInfo, metrics: Mapping[str, Any], model_dir: Path,
                      card: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric, RunTag

        self._flush(run)
        run_id = self._run_id(run.engine, run.version)
        if run_id is None:  # started before tracking was configured: a run of its own now
            self._run_started(run, {})
            run_id = self._runs[run.version]
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, 0) for k, v in flatten_metrics(metrics).items()]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[start:start + 1000])
        self.client.log_dict(run_id, _jsonable(card), "model_card.json")
        tags = [RunTag(_key(f"card.{k}"), str(v)[:500]) for k, v in card.items()
                if isinstance(v, (str, int, float, bool)) and k != "command"]
        if tags:
            self.client.log_batch(run_id, tags=tags)
        with tempfile.TemporaryDirectory(prefix="radassist-mlflow-") as tmp:
            model_path = Path(tmp) / "model"
            save_pyfunc_model(model_path, run.engine, model_dir, catalog=self._catalog(),
                              base_model=run.base_model or getattr(self.settings, "base_model", "") or "",
                              settings=self.settings)
            self.client.log_artifacts(run_id, str(model_path), "model")
        name = registered_model_name(run.engine)
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            self.client.create_registered_model(name, description=f"RadAssist {run.engine} engine")
        source = f"{self.client.get_run(run_id).info.artifact_uri}/model"
        self.client.create_model_version(name, source, run_id=run_id, tags={VERSION_TAG: run.version},
                                         description=f"RadAssist {run.engine} version {run.version}")

    def run_failed(self, run: RunInfo, status: str, reason: str) -> None:
        def fail():
            run_id = self._run_id(run.engine, run.version)
            if run_id is None:
                return
            self._flush(run)
            self.client.set_tag(run_id, "radassist_status", status)
            self.client.set_tag(run_id, "radassist_failure", str(reason)[:500])  # run_service's words: no PHI

        self._submit(self._safe, "run_failed", run.version, fail)
        self._submit(self._end, run.version, "KILLED" if status in ("cancelled", "stopped") else "FAILED", True)
        self.wait()

    def _end(self, version: str, status: str, force: bool = False) -> None:
        run_id = self._runs.get(version)
        if run_id is None:
            return
        if version in self._broken and not force:
            status = "FAILED"
        try:
            self.client.set_terminated(run_id, status=status)
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow could not end the run of %s (%s)", version, type(exc).__name__)
        self._pending.pop(version, None)

    def model_promoted(self, engine: str, version: str, model_dir: Path | None) -> None:
        self.wait()  # after any run this observer is still sending
        self._safe("model_promoted", None, self._set_champion, engine, version)

    def model_rolled_back(self, engine: str, from_version: str | None, to_version: str) -> None:
        self.wait()
        self._safe("model_rolled_back", None, self._set_champion, engine, to_version)

    def _set_champion(self, engine: str, version: str) -> None:
        from mlflow.exceptions import MlflowException

        name = registered_model_name(engine)
        try:
            self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":  # no run of this engine was ever tracked
                log.info("MLflow has no registered model %s: no alias to move", name)
                return
            raise
        target = self.model_version(engine, version)
        if target is not None:
            self.client.set_registered_model_alias(name, ALIAS, target)
            return
        try:  # back to a model MLflow never saw (the shipped one): no champion
            self.client.delete_registered_model_alias(name, ALIAS)
        except MlflowException:  # no alias to remove
            pass
        if version != "shipped":
            log.warning("MLflow has no version of %s tagged %s; alias %s removed", name, version, ALIAS)

    def model_version(self, engine: str, version: str) -> str | None:
        """The registered model version number tagged with app ``version``, or None."""
        name = registered_model_name(engine)
        for mv in self.client.search_model_versions(f"name = '{_quote(name)}'"):
            if (mv.tags or {}).get(VERSION_TAG) == version:
                return str(mv.version)
        return None

    model_version_for = model_version

    def _catalog(self):
        if self.catalog is not None:
            return self.catalog
        from radassist.catalog import default_catalog

        return default_catalog()


def _native(key: str, value: Any) -> Any:
    """A pandas cell as the order contract expects it (NaN -> missing, numpy scalars -> Python, age 54.0 -> 54)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if key == "age" and value.is_integer():
            return int(value)
    return value


def _quote(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# --- the logged model ----------------------------------------------------------------------------------
def _catalog_csv(catalog, path: Path) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["code", "name", "modality", "body_region", "contrast", "indications"])
        for p in catalog:
            writer.writerow([p.code, p.name, p.modality, p.body_region, p.contrast, p.indications])
    return path


def save_pyfunc_model(path: Path, engine: str, model_dir: Path, *, catalog, base_model: str = "",
                      settings: Any = None) -> Path:
    """An MLflow pyfunc model folder: the engine's own model folder + the catalog as artifacts, the
    LLM's base model by reference (path or id) in the model config, never its weights."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="radassist-catalog-") as tmp:
        csv_path = _catalog_csv(catalog, Path(tmp) / "catalog.csv")
        config: dict[str, Any] = {"engine": engine,
                                  "target_precision": float(getattr(settings, "target_precision", 0.98) or 0.98)}
        if engine == "llm":
            config.update(base_model=str(base_model or ""),
                          quantization=str(getattr(settings, "quantization", "nf4") or "nf4"),
                          device=str(getattr(settings, "device", "auto") or "auto"),
                          shortlist_size=int(getattr(settings, "shortlist_size", 6) or 6))
        mlflow.pyfunc.save_model(str(path), python_model=RadAssistModel(),
                                 artifacts={"model": str(model_dir), "catalog": str(csv_path)},
                                 model_config=config, pip_requirements=["radassist"])
    return path


def _python_model_base():
    try:
        import mlflow.pyfunc

        return mlflow.pyfunc.PythonModel
    except ImportError:  # the module must import without the extra (observers_for checks)
        return object


class RadAssistModel(_python_model_base()):  # type: ignore[misc]
    """pyfunc: ``predict(DataFrame of orders)`` -> the `radassist predict` records (dicts), one per row."""

    def load_context(self, context) -> None:
        from radassist import engine_factory
        from radassist.catalog import load_catalog_csv
        from radassist.settings import SiteSettings

        config = dict(context.model_config or {})
        catalog = load_catalog_csv(context.artifacts["catalog"])
        name = config.get("engine", "embedding")
        settings = SiteSettings(engine=name, target_precision=float(config.get("target_precision", 0.98)))
        if name == "llm":
            settings = SiteSettings(engine=name, base_model=config.get("base_model", ""),
                                    quantization=config.get("quantization", "nf4"),
                                    device=config.get("device", "auto"),
                                    shortlist_size=int(config.get("shortlist_size", 6)),
                                    target_precision=settings.target_precision)
        self.top_k = 3
        self.engine = engine_factory.build_engine(name, catalog, settings, context.artifacts["model"])

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would validate a list input
        from radassist.ingest import OrderFormatError, order_from_record

        records = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        top_k = int((params or {}).get("top_k", self.top_k))
        parsed = []
        for record in records:
            record = {k: _native(k, v) for k, v in record.items()}
            try:
                parsed.append((record.get("accession"), order_from_record(record), None))
            except OrderFormatError as exc:
                parsed.append((record.get("accession"), None, str(exc)))
        predictions = iter(self.engine.predict_batch([o for _, o, _ in parsed if o is not None], top_k=top_k))
        return [next(predictions).to_json() if order is not None else {"accession": accession, "error": error}
                for accession, order, error in parsed]


__all__ = ["ALIAS", "CHAMPION", "VERSION_TAG", "MLflowObserver", "RadAssistModel", "experiment_name",
           "flatten_metrics", "model_name", "registered_model_name", "save_pyfunc_model"]
