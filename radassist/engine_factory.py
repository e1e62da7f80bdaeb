"""The one engine factory: which model each engine runs (the registry) and how it is built.

Everything that suggests protocols gets its engine here: the app's inference worker, the
background service, `radassist predict` / `evaluate` / `serve`, and the training run's
candidate-vs-active comparison, so that the comparison measures what production runs.

- Default: the registry's ACTIVE version of the engine (the shipped model when none is).
- ``version``: another registry version by name (``"shipped"``: the shipped model).
- ``model_path``: an explicit model folder (a candidate before it is registered).
- The LLM's shortlist and prior always come from the ACTIVE embedding head, as in production.

It lives outside ``radassist.engines`` because it reads the registry; the engines know nothing
of it.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from radassist.domain import Protocol
from radassist.engines import ENGINE_NAMES, create_embedding_engine
from radassist.engines.base import EngineError, SuggestionEngine
from radassist.settings import SiteSettings

log = logging.getLogger(__name__)

SHIPPED = "shipped"


def active_model_paths(session: Session) -> dict[str, str | None]:
    """Folder of each engine's active registry version (None: the shipped default)."""
    from radassist.registry import active_version

    out: dict[str, str | None] = {}
    for name in ENGINE_NAMES:
        version = active_version(session, name)
        out[name] = version.path if version else None
    return out


def resolve_model_path(session: Session, engine: str, version: str | None = None) -> str | None:
    """The folder ``engine`` should load: the active version, a named one, or None (shipped)."""
    from radassist import registry

    if version is None:
        return active_model_paths(session)[engine]
    if version == SHIPPED:
        return None
    v = registry.get_version(session, version)
    if v.engine != engine:
        raise EngineError(f"model version {version} is a {v.engine} model, not {engine}")
    if v.status not in (registry.CANDIDATE, registry.ACTIVE, registry.RETIRED) or not v.path:
        raise EngineError(f"model version {version} is {v.status}: it has no model to load")
    return v.path


def build_engine(name: str, catalog: Sequence[Protocol], settings: SiteSettings | None = None,
                 model_path: str | Path | None = None, shortlist_path: str | Path | None = None
                 ) -> SuggestionEngine:
    """Construct and load an engine from explicit folders. Slow (loads models): off the GUI thread.

    ``model_path``: the engine's model (None: shipped); ``shortlist_path``: the embedding head
    that shortlists for the LLM (None: shipped). Use `engine_for` unless you hold the folders."""
    settings = settings or SiteSettings()
    if name == "embedding":
        engine = create_embedding_engine(catalog, head_dir=model_path)
        engine.target_precision = settings.target_precision
        return engine
    if name == "llm":
        from radassist.engines.llm import LLMEngine

        shortlist = create_embedding_engine(catalog, head_dir=shortlist_path)
        shortlist.target_precision = settings.target_precision
        return LLMEngine(catalog, base_model=settings.base_model or None,
                         adapter=str(model_path) if model_path else settings.adapter,
                         quantization=settings.quantization, device=settings.device,
                         shortlist_engine=shortlist, shortlist_size=settings.shortlist_size)
    raise EngineError(f"unknown engine {name!r} (known: {', '.join(ENGINE_NAMES)})")


def _with_session(source: Any):
    """(session context) for a Session or a Database."""
    from contextlib import nullcontext

    if isinstance(source, Session):
        return nullcontext(source)
    return source.session()


def engine_for(source: Any, catalog: Sequence[Protocol] | None = None, settings: SiteSettings | None = None,
               engine: str | None = None, version: str | None = None, *,
               model_path: str | Path | None = None) -> SuggestionEngine:
    """The engine production would run: ``source`` is a Session or a Database.

    ``engine``: default the site setting; ``version``: default the active registry version;
    ``catalog``/``settings``: default the database's."""
    from radassist.catalog import ensure_catalog
    from radassist.settings import load_settings

    with _with_session(source) as session:
        catalog = list(catalog) if catalog is not None else ensure_catalog(session)
        settings = settings or load_settings(session)
        name = engine or settings.engine
        if name not in ENGINE_NAMES:
            raise EngineError(f"unknown engine {name!r} (known: {', '.join(ENGINE_NAMES)})")
        path = model_path if model_path is not None else resolve_model_path(session, name, version)
        shortlist = active_model_paths(session)["embedding"] if name == "llm" else None
    return build_engine(name, catalog, settings, path, shortlist)


def engine_with_fallback(source: Any, catalog: Sequence[Protocol] | None = None,
                         settings: SiteSettings | None = None, engine: str | None = None,
                         version: str | None = None) -> tuple[SuggestionEngine, str | None]:
    """`engine_for`, or the (active) embedding engine and the reason when the requested one cannot load."""
    from radassist.catalog import ensure_catalog
    from radassist.settings import load_settings

    with _with_session(source) as session:
        settings = settings or load_settings(session)
        catalog = list(catalog) if catalog is not None else ensure_catalog(session)
    name = engine or settings.engine
    try:
        return engine_for(source, catalog, settings, name, version), None
    except (EngineError, ImportError, OSError, RuntimeError, ValueError) as exc:
        if name == "embedding":
            raise
        reason = f"{name} engine unavailable ({exc}); using the embedding engine"
        log.warning(reason)
        return engine_for(source, catalog, settings, "embedding"), reason


def create_site_engine(db: Any, name: str | None = None, fallback: bool = True
                       ) -> tuple[SuggestionEngine, str | None]:
    """The engine this site is configured for (settings, catalog, active versions from ``db``)."""
    if not fallback:
        return engine_for(db, engine=name), None
    return engine_with_fallback(db, engine=name)


__all__ = ["SHIPPED", "active_model_paths", "build_engine", "create_site_engine", "engine_for",
           "engine_with_fallback", "resolve_model_path"]
