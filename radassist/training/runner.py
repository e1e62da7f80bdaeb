"""One training run, start to end: data, the engine's trainer, held-out comparison, registry.

`radassist train` calls this; the app runs that command in a separate process (QProcess) and
reads its JSON progress lines. Only this module knows how both engines are trained.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from radassist.domain import LabelledOrder, Protocol
from radassist.paths import trained_models_dir


def emit(event: dict, json_progress: bool) -> None:
    if json_progress:
        print(json.dumps(event), flush=True)
    elif "message" in event:
        print(event["message"], file=sys.stderr, flush=True)


def train_embedding(train: Sequence[LabelledOrder], catalog: Sequence[Protocol], out_dir: str | Path | None = None,
                    progress: Callable[[dict], None] | None = None, extra_card: dict | None = None,
                    start_from: str | Path | None = None) -> tuple[str, Path, dict]:
    """Fit a new embedding head (seconds) and save it as a versioned folder; returns (version, path, metrics).

    ``start_from``: a head folder to continue from (the active model, when retraining from decisions).
    """
    from radassist.engines.embedding import EmbeddingEngine

    engine = EmbeddingEngine(catalog, head_dir=start_from)
    if progress:
        progress({"step": 0, "total": 1, "loss": float("nan"), "lr": 0.01, "eta_s": 30})
    metrics = engine.fit(train, warm_start=start_from is not None, epochs=100 if start_from else 200,
                         lr=0.005 if start_from else 0.01)
    version = f"embedding-{engine.version}"
    path = Path(out_dir or trained_models_dir() / "embedding") / version
    engine.save_head(path, extra={"train_size": len(train), "metrics": metrics, **(extra_card or {})})
    if progress:
        progress({"step": 1, "total": 1, "loss": metrics["val_loss"], "lr": 0.01, "eta_s": 0})
    return version, path, metrics


def engine_for(name: str, catalog: Sequence[Protocol], path: str | Path | None, settings=None):
    """An engine loaded from a specific model folder (None: the shipped default)."""
    from radassist.engines import create_embedding_engine

    if name == "embedding":
        return create_embedding_engine(catalog, head_dir=path)
    from radassist.engines.llm import LLMEngine
    from radassist.settings import SiteSettings

    s = settings or SiteSettings()
    return LLMEngine(catalog, base_model=s.base_model or None, adapter=str(path) if path else "default",
                     quantization=s.quantization, device=s.device,
                     shortlist_engine=create_embedding_engine(catalog), shortlist_size=s.shortlist_size)


def compare_on_heldout(heldout: Sequence[LabelledOrder], candidate, active) -> dict:
    """Candidate vs active model on the same held-out decisions: top-1, top-3, ECE, per protocol."""
    from radassist.evaluation import evaluate_predictions

    if not heldout:
        return {"heldout": 0}
    result: dict = {"heldout": len(heldout)}
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
