"""What a training run and the registry tell the outside world: an observer interface.

The training-run service (one per run) and the registry's promote/rollback call these hooks;
observers never decide anything and never raise into the run: a failing observer is logged
(without clinical text) and ignored, so an unreachable tracking server cannot fail training.

Implementations: `NullObserver` (the default) and, when the site setting
``mlflow_tracking_uri`` is set and the ``radassist[mlflow]`` extra is installed,
`radassist.tracking.mlflow_observer.MLflowObserver`. `observers_for(settings)` picks them.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunInfo:
    """Identity of one training run, as the registry knows it."""
    engine: str            # "embedding" | "llm"
    version: str           # the registry's version name (the one scheme used everywhere)
    base_model: str | None = None
    started_by: str = ""   # user name of the admin who launched it (never clinical text)


@runtime_checkable
class RunObserver(Protocol):
    def run_started(self, run: RunInfo, params: Mapping[str, Any]) -> None: ...

    def step(self, run: RunInfo, step: int, loss: float, lr: float | None = None) -> None: ...

    def run_finished(self, run: RunInfo, metrics: Mapping[str, Any], model_dir: Path,
                     card: Mapping[str, Any]) -> None: ...

    def run_failed(self, run: RunInfo, status: str, reason: str) -> None: ...

    def model_promoted(self, engine: str, version: str, model_dir: Path | None) -> None: ...

    def model_rolled_back(self, engine: str, from_version: str | None, to_version: str) -> None: ...


class NullObserver:
    """Does nothing; the app's own registry is the source of truth."""

    def run_started(self, run: RunInfo, params: Mapping[str, Any]) -> None:
        pass

    def step(self, run: RunInfo, step: int, loss: float, lr: float | None = None) -> None:
        pass

    def run_finished(self, run: RunInfo, metrics: Mapping[str, Any], model_dir: Path,
                     card: Mapping[str, Any]) -> None:
        pass

    def run_failed(self, run: RunInfo, status: str, reason: str) -> None:
        pass

    def model_promoted(self, engine: str, version: str, model_dir: Path | None) -> None:
        pass

    def model_rolled_back(self, engine: str, from_version: str | None, to_version: str) -> None:
        pass


class ObserverGroup:
    """Fans each hook out to several observers; one failing observer never stops the others or the run."""

    def __init__(self, observers: Iterable[RunObserver] = ()):
        self.observers = list(observers)

    def _call(self, name: str, *args: Any) -> None:
        for observer in self.observers:
            try:
                getattr(observer, name)(*args)
            except Exception as exc:  # noqa: BLE001 - an observer must never fail a run
                log.warning("run observer %s.%s failed: %s", type(observer).__name__, name, type(exc).__name__)

    def run_started(self, run: RunInfo, params: Mapping[str, Any]) -> None:
        self._call("run_started", run, params)

    def step(self, run: RunInfo, step: int, loss: float, lr: float | None = None) -> None:
        self._call("step", run, step, loss, lr)

    def run_finished(self, run: RunInfo, metrics: Mapping[str, Any], model_dir: Path,
                     card: Mapping[str, Any]) -> None:
        self._call("run_finished", run, metrics, model_dir, card)

    def run_failed(self, run: RunInfo, status: str, reason: str) -> None:
        self._call("run_failed", run, status, reason)

    def model_promoted(self, engine: str, version: str, model_dir: Path | None) -> None:
        self._call("model_promoted", engine, version, model_dir)

    def model_rolled_back(self, engine: str, from_version: str | None, to_version: str) -> None:
        self._call("model_rolled_back", engine, from_version, to_version)


def observers_for(settings: Any, catalog: Any = None) -> ObserverGroup:
    """The observers a site's settings ask for (MLflow when ``mlflow_tracking_uri`` is set).

    ``catalog``: the run's protocol catalog, logged with the model so that it reloads the same."""
    uri = getattr(settings, "mlflow_tracking_uri", "") or ""
    observers: list[RunObserver] = []
    if uri:
        try:
            from radassist.tracking.mlflow_observer import MLflowObserver
        except ImportError:
            log.warning("mlflow_tracking_uri is set but the radassist[mlflow] extra is not installed")
        else:
            observers.append(tracking_observer(MLflowObserver, uri, settings, catalog))
    return ObserverGroup(observers)


def tracking_observer(cls: Any, uri: str, settings: Any, catalog: Any) -> Any:
    """``cls(uri, settings, catalog=...)`` in a helper process where there can be one (its imports and
    SQL never hold the training process's interpreter lock: docs/scale.md), else in this process."""
    import functools

    from radassist import child_process

    if not child_process.supported():
        return cls(uri, settings, catalog=catalog)
    from radassist.tracking.observer_process import ObserverProcess

    catalog = list(catalog) if catalog is not None else None
    return ObserverProcess(functools.partial(cls, uri, settings, catalog=catalog), uri=uri, catalog=catalog,
                           observer_class=cls)
