"""The interface every suggestion engine implements."""
from __future__ import annotations

import abc
from collections.abc import Sequence

from radassist.domain import LabelledOrder, Order, Prediction, Protocol


class EngineError(RuntimeError):
    """An engine could not load or run; the message never contains note text."""


class SuggestionEngine(abc.ABC):
    """Suggests catalog protocols for orders, with calibrated probabilities.

    Implementations: ``EmbeddingEngine`` (MiniLM, fast, default fallback) and
    ``LLMEngine`` (4-bit QLoRA causal LM). Both only ever answer catalog codes.
    """

    name: str = "engine"

    @property
    @abc.abstractmethod
    def version(self) -> str:
        """Model version string, e.g. 'embedding/2026-11-27-ab12cd'."""

    @property
    def device(self) -> str:
        return "cpu"

    @abc.abstractmethod
    def set_catalog(self, protocols: Sequence[Protocol]) -> None:
        """Use this catalog from now on (added protocols need no retraining)."""

    @abc.abstractmethod
    def predict_batch(self, orders: Sequence[Order], top_k: int = 3) -> list[Prediction]:
        """Suggestions for each order, sorted by calibrated score, flags filled in."""

    def predict(self, order: Order, top_k: int = 3) -> Prediction:
        return self.predict_batch([order], top_k=top_k)[0]

    def fit(self, examples: Sequence[LabelledOrder], **kwargs) -> dict:
        """Learn from labelled examples; returns training metrics."""
        raise NotImplementedError(f"{self.name} engine cannot be trained in-process")

    @property
    def model_id(self) -> str:
        return f"{self.name}/{self.version}"
