"""Suggestion engines. Which model an engine runs (the registry's active version) and building it
is `radassist.engine_factory`'s job: this package imports nothing above it."""
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


__all__ = ["ENGINE_NAMES", "EngineError", "SuggestionEngine", "create_embedding_engine"]
