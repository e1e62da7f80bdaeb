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


def create_engine(name: str, catalog: Sequence[Protocol], settings=None) -> SuggestionEngine:
    """Build and load an engine by name. Slow (loads models): call it off the GUI thread."""
    from radassist.settings import SiteSettings

    settings = settings or SiteSettings()
    if name == "embedding":
        return create_embedding_engine(catalog)
    if name == "llm":
        from radassist.engines.llm import LLMEngine

        shortlist = create_embedding_engine(catalog)
        return LLMEngine(catalog, base_model=settings.base_model or None, adapter=settings.adapter,
                         quantization=settings.quantization, device=settings.device,
                         shortlist_engine=shortlist, shortlist_size=settings.shortlist_size)
    raise EngineError(f"unknown engine {name!r} (known: {', '.join(ENGINE_NAMES)})")


def create_engine_with_fallback(name: str, catalog: Sequence[Protocol], settings=None
                                ) -> tuple[SuggestionEngine, str | None]:
    """The requested engine, or the embedding engine and the reason when it cannot load."""
    try:
        return create_engine(name, catalog, settings), None
    except (EngineError, ImportError, OSError, RuntimeError, ValueError) as exc:
        if name == "embedding":
            raise
        reason = f"{name} engine unavailable ({exc}); using the embedding engine"
        log.warning(reason)
        return create_engine("embedding", catalog, settings), reason


__all__ = ["ENGINE_NAMES", "EngineError", "SuggestionEngine", "create_engine", "create_engine_with_fallback",
           "create_embedding_engine"]
