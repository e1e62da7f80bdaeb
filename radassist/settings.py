"""Site settings, stored in the database (window state lives in QSettings, not here)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from radassist.access import Actor, require
from radassist.audit import record_event
from radassist.store.models import SettingRow, utcnow

ENGINES = ("embedding", "llm")
QUANTIZATIONS = ("nf4", "none")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class SiteSettings:
    # The default engine is the one that wins on orders by writers it never saw: embedding (MiniLM +
    # head + lexical scorer trained on the writer corpus) top-1 0.950 on dev_orders2 vs llm 0.900, at
    # 50x less latency (bench/bench_model.py). The llm engine stays selectable.
    engine: str = "embedding"
    base_model: str = ""               # HF folder; empty = bundled SmolLM2-135M-Instruct
    adapter: str = "default"           # LLM adapter version under models/adapters, or "default"
    device: str = "auto"
    quantization: str = "nf4"
    confidence_threshold: float = 0.5  # minimum confidence: below it, always "needs review"
    target_precision: float = 0.98     # pre-selected suggestions are right this often (threshold fitted with the model)
    shortlist_size: int = 6            # candidates the embedding engine hands to the LLM (dev recall@6 = 1.0)
    promotion_gate: float = 0.0        # candidate top-1 may be at most this much worse than active
    idle_lock_minutes: int = 10
    # Optional MLflow tracking (radassist[mlflow] extra): every training run logged, promotions set the
    # registered model's "champion" alias. Empty: the app's own registry only. Keep a sqlite:/// store in a
    # file separate from the app's database, or a server URL.
    mlflow_tracking_uri: str = ""

    def validate(self) -> list[str]:
        problems = []
        if self.engine not in ENGINES:
            problems.append(f"engine must be one of {', '.join(ENGINES)}")
        if self.quantization not in QUANTIZATIONS:
            problems.append(f"quantization must be one of {', '.join(QUANTIZATIONS)}")
        if self.device not in DEVICES:
            problems.append(f"device must be one of {', '.join(DEVICES)}")
        if not 0.0 <= self.confidence_threshold <= 1.0:
            problems.append("confidence threshold must be between 0 and 1")
        if not 0.5 <= self.target_precision <= 0.999:
            problems.append("target precision must be between 50% and 99.9%")
        if not 1 <= self.shortlist_size <= 200:
            problems.append("shortlist size must be between 1 and 200")
        if not 0.0 <= self.promotion_gate <= 0.2:
            problems.append("promotion gate must be between 0 and 0.2")
        if not 1 <= self.idle_lock_minutes <= 240:
            problems.append("idle lock must be between 1 and 240 minutes")
        if self.mlflow_tracking_uri and not self.mlflow_tracking_uri.startswith(
                ("sqlite:///", "http://", "https://", "file:", "databricks")):
            problems.append("MLflow tracking URI must be sqlite:///…, file:…, http(s)://… or databricks")
        return problems


def load_settings(session: Session) -> SiteSettings:
    stored = {row.key: json.loads(row.value_json) for row in session.scalars(select(SettingRow))}
    known = {f.name for f in fields(SiteSettings)}
    return SiteSettings(**{k: v for k, v in stored.items() if k in known})


class SettingsError(ValueError):
    pass


def save_settings(session: Session, actor: Actor, new: SiteSettings) -> dict[str, Any]:
    """Validate and store; returns the changed keys. Admins only; audited."""
    require(actor, "settings.change")
    problems = new.validate()
    if problems:
        raise SettingsError("; ".join(problems))
    old = load_settings(session)
    changed = {k: v for k, v in asdict(new).items() if getattr(old, k) != v}
    for key, value in changed.items():
        row = session.get(SettingRow, key)
        if row is None:
            session.add(SettingRow(key=key, value_json=json.dumps(value), updated_by=actor.username))
        else:
            row.value_json, row.updated_at, row.updated_by = json.dumps(value), utcnow(), actor.username
    record_event(session, actor, "settings.change", entity="settings", details={"changed": changed})
    return changed
