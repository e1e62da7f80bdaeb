"""Suggestion engines and the factory that builds the configured one (with fallback)."""
from __future__ import annotations

import logging
from collections.abc import Sequence

from radassist.domain import Protocol
from radassist.engines.base import EngineError, SuggestionEngine

log = logging.getLogger(__name__)

ENGINE_NAMES = ("embedding", "llm")


def create_embedding_engine(catalog: Sequence[Protocol], head_dir=None, device: str = "cpu"):
    """The embedding engine with its active head (trained from synthetic data if none is shipped)."""
    from radassist.engines.embedding import EmbeddingEngine, default_head_dir

    engine = EmbeddingEngine(catalog, head_dir=head_dir or default_head_dir(), device=device)
    if engine.head is None:
        from radassist.synthetic import generate

        log.warning("no trained embedding head found; training one from synthetic data")
        engine.fit(generate(catalog, per_protocol=40, seed=1))
    return engine


def create_engine(name: str, catalog: Sequence[Protocol], settings=None, model_path=None,
                  shortlist_path=None) -> SuggestionEngine:
    """Build and load an engine by name. Slow (loads models): call it off the GUI thread.

    ``model_path``: the engine's model folder (the registry's active version); None = shipped.
    """
    from radassist.settings import SiteSettings

    settings = settings or SiteSettings()
    if name == "embedding":
        engine = create_embedding_engine(catalog, head_dir=model_path)
        engine.target_precision = settings.target_precision
        return engine
    if name == "llm":
        from radassist.engines.llm import LLMEngine

        shortlist = create_embedding_engine(catalog, head_dir=shortlist_path)
        return LLMEngine(catalog, base_model=settings.base_model or None, adapter=model_path or settings.adapter,
                         quantization=settings.quantization, device=settings.device,
                         shortlist_engine=shortlist, shortlist_size=settings.shortlist_size)
    raise EngineError(f"unknown engine {name!r} (known: {', '.join(ENGINE_NAMES)})")


def create_engine_with_fallback(name: str, catalog: Sequence[Protocol], settings=None, model_path=None,
                                shortlist_path=None) -> tuple[SuggestionEngine, str | None]:
    """The requested engine, or the embedding engine and the reason when it cannot load."""
    try:
        return create_engine(name, catalog, settings, model_path, shortlist_path), None
    except (EngineError, ImportError, OSError, RuntimeError, ValueError) as exc:
        if name == "embedding":
            raise
        reason = f"{name} engine unavailable ({exc}); using the embedding engine"
        log.warning(reason)
        return create_engine("embedding", catalog, settings, shortlist_path), reason


def active_model_paths(session) -> dict[str, str | None]:
    """Folder of each engine's active registry version (None: the shipped default)."""
    from radassist.registry import active_version

    out = {}
    for name in ENGINE_NAMES:
        version = active_version(session, name)
        out[name] = version.path if version else None
    return out


def create_site_engine(db, name: str | None = None, fallback: bool = True) -> tuple[SuggestionEngine, str | None]:
    """The engine this site is configured for: settings, catalog and active versions from ``db``."""
    from radassist.catalog import ensure_catalog
    from radassist.settings import load_settings

    with db.session() as session:
        catalog = ensure_catalog(session)
        settings = load_settings(session)
        paths = active_model_paths(session)
    name = name or settings.engine
    if not fallback:
        return create_engine(name, catalog, settings, paths.get(name), paths.get("embedding")), None
    return create_engine_with_fallback(name, catalog, settings, paths.get(name), paths.get("embedding"))


__all__ = ["ENGINE_NAMES", "EngineError", "SuggestionEngine", "active_model_paths", "create_embedding_engine",
           "create_engine", "create_engine_with_fallback", "create_site_engine"]
