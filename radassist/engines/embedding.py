"""Embedding engine: frozen all-MiniLM-L6-v2 sentences + a small learned scoring head.

score(order, protocol) = s * cos(W e_o, e_p + d_p)       learned projection, per-protocol offset
                       + a * max_i cos(e_o, e_indication_i) zero-shot match to one indication
                       + b_p                               per-protocol prior
                       + f_o^T M g_p                       safety flags / age / sex / ordered modality
                                                           x protocol modality / contrast
A protocol added to the catalog has d_p = 0 and b_p = 0 and is still scored from its own
name, indications and attributes, so it can be suggested without retraining.
Probabilities are a softmax over the catalog with a temperature fitted on held-out data.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from radassist.domain import FLAG_TYPES, MODALITIES, LabelledOrder, Order, Prediction, Protocol
from radassist.engines.base import EngineError, SuggestionEngine
from radassist.engines.sentence_encoder import MiniLMEncoder
from radassist.paths import MODELS_DIR

if TYPE_CHECKING:
    from radassist.engines.lexical import LexicalModel

log = logging.getLogger(__name__)

EMBEDDING_DIR = MODELS_DIR / "embedding"
CONTRAST_KINDS = ("none", "iodinated", "gadolinium", "radiotracer", "intra-articular", "oral")
_EXAM_MODALITY = [
    ("PET", re.compile(r"\bPET\b", re.I)),
    ("NM", re.compile(r"\b(NM|nuclear|scintigraph\w*|bone scan|V/?Q|HIDA)\b", re.I)),
    ("MR", re.compile(r"\b(MRI?|MRA|MRV|MRCP|magnetic)\b", re.I)),
    ("CT", re.compile(r"\b(CTA?|CAT|computed)\b", re.I)),
    ("US", re.compile(r"\b(US|ultrasound|sonogra\w*|duplex|doppler)\b", re.I)),
    ("XR", re.compile(r"\b(XR|x-?ray|radiograph\w*|CXR)\b", re.I)),
]


@functools.lru_cache(maxsize=2)
def load_sentence_encoder(device: str = "cpu") -> MiniLMEncoder:
    """One shared encoder per device: it is read-only at inference, and loading costs seconds."""
    return MiniLMEncoder(device)


def exam_modality(ordered_exam: str) -> str | None:
    for modality, pattern in _EXAM_MODALITY:
        if pattern.search(ordered_exam or ""):
            return modality
    return None


def order_features(order: Order, flag_types: set[str]) -> list[float]:
    """Non-text facts about the order that change the right protocol."""
    age = order.age if order.age is not None else 50
    ordered = exam_modality(order.ordered_exam)
    return (
        [1.0 if t in flag_types else 0.0 for t in FLAG_TYPES]
        + [float(age < 18), float(age >= 65), float(order.sex == "F"), float(order.sex == "M")]
        + [1.0 if ordered == m else 0.0 for m in MODALITIES]
        + [1.0]  # bias: lets M learn a per-modality / per-contrast prior
    )


def protocol_features(p: Protocol) -> list[float]:
    contrast = p.contrast.lower()
    kinds = {
        "none": contrast in ("", "none"),
        "iodinated": p.modality == "CT" and "iv" in contrast,
        "gadolinium": "gadolinium" in contrast,
        "radiotracer": "radiotracer" in contrast,
        "intra-articular": "intra-articular" in contrast,
        "oral": "oral" in contrast,
    }
    return [1.0 if p.modality == m else 0.0 for m in MODALITIES] + [float(kinds[k]) for k in CONTRAST_KINDS]


DEFAULT_LEXICAL_WEIGHT = 1.0  # from-scratch fits on small data; the shipped head carries its fold-chosen weight (6)
N_ORDER_FEATURES = len(FLAG_TYPES) + 4 + len(MODALITIES) + 1
N_PROTOCOL_FEATURES = len(MODALITIES) + len(CONTRAST_KINDS)


class ScoringHead(nn.Module):
    def __init__(self, dim: int, codes: Sequence[str]):
        super().__init__()
        self.codes = list(codes)
        self.proj = nn.Linear(dim, dim, bias=False)
        nn.init.eye_(self.proj.weight)
        self.offsets = nn.Parameter(torch.zeros(len(self.codes), dim))
        self.bias = nn.Parameter(torch.zeros(len(self.codes)))
        self.interaction = nn.Parameter(torch.zeros(N_ORDER_FEATURES, N_PROTOCOL_FEATURES))
        self.log_scale = nn.Parameter(torch.tensor(math.log(20.0)))
        self.indication_weight = nn.Parameter(torch.tensor(5.0))

    def forward(self, order_emb, order_feat, proto_emb, proto_feat, proto_ind_sim, known_index):
        """Logits [orders, protocols]. ``known_index[j]`` is the head's row for protocol j or -1."""
        known = known_index >= 0
        idx = known_index.clamp(min=0)
        offsets = self.offsets[idx] * known[:, None]
        bias = self.bias[idx] * known
        q = nn.functional.normalize(self.proj(order_emb), dim=-1)
        k = nn.functional.normalize(proto_emb + offsets, dim=-1)
        logits = self.log_scale.exp() * q @ k.T
        logits = logits + self.indication_weight * proto_ind_sim + bias
        logits = logits + order_feat @ self.interaction @ proto_feat.T
        return logits


@dataclass
class FitResult:
    train_size: int
    val_size: int
    val_top1: float
    val_top3: float
    val_loss: float
    temperature: float
    seconds: float

    def to_json(self) -> dict:
        return self.__dict__.copy()


class EmbeddingEngine(SuggestionEngine):
    name = "embedding"

    def __init__(self, catalog: Sequence[Protocol], head_dir: str | Path | None = None, encoder=None,
                 device: str = "cpu"):
        t0 = time.perf_counter()
        self._device = device
        self.encoder = encoder or load_sentence_encoder(device)
        self.dim = self.encoder.get_embedding_dimension()
        self.head: ScoringHead | None = None
        self.temperature = 1.0
        self.lexical: LexicalModel | None = None  # trained with the head
        self.lexical_weight = 0.0
        self.calibration: dict = {}    # review threshold, OOD threshold, target precision (fitted by style)
        self.target_precision: float | None = None  # the site's setting; None: the one fitted
        self.train_emb: torch.Tensor | None = None  # training orders' embeddings, for the OOD check
        self.emb_cache: dict[str, torch.Tensor] | None = None  # set during training runs: texts seen again
        self._version = "untrained"
        self.set_catalog(catalog)
        if head_dir is not None:
            self.load_head(head_dir)
        self.load_seconds = time.perf_counter() - t0

    # --- catalog -------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self._version

    @property
    def device(self) -> str:
        return self._device

    def set_catalog(self, protocols: Sequence[Protocol]) -> None:
        if not protocols:
            raise EngineError("the catalog is empty")
        from radassist.safety_policy import site_policy

        self.catalog = list(protocols)
        self.codes = [p.code for p in self.catalog]
        self.policy = site_policy(self.catalog)
        self.proto_feat = torch.tensor([protocol_features(p) for p in self.catalog])
        # One embedding per indication phrase (and the name), for the zero-shot max-similarity term.
        phrases, owner = [], []
        for j, p in enumerate(self.catalog):
            for phrase in [p.name, *p.indication_list]:
                phrases.append(phrase)
                owner.append(j)
        descriptions = [p.describe() for p in self.catalog]
        both = self._encode_cached(descriptions + phrases)
        self.proto_emb, self.phrase_emb = both[: len(descriptions)], both[len(descriptions):]
        self.phrase_owner = torch.tensor(owner)
        self._refresh_known_index()

    def _encode_cached(self, texts: list[str]) -> torch.Tensor:
        """Catalog embeddings are the same at every start: keep them in the cache folder (saves ~1 s).
        They are computed in float32 on one thread (``encode_reference``), so that every process (the app,
        `radassist predict`, each Spark worker with its own thread count, with or without bfloat16) scores
        orders against the same vectors and gives the same suggestions."""
        from radassist.paths import cache_dir

        key = hashlib.sha256(json.dumps(["float32, one thread", texts]).encode()).hexdigest()[:16]
        path = cache_dir() / f"catalog-embeddings-{key}.pt"
        try:
            cached = torch.load(path, weights_only=True)
            if cached.shape[0] == len(texts):
                return cached
        except (OSError, RuntimeError, EOFError):
            pass
        emb = self.encoder.encode_reference(texts)
        try:
            tmp = path.with_suffix(".tmp")
            torch.save(emb, tmp)
            os.replace(tmp, path)
        except OSError:  # a read-only cache only costs the second
            log.debug("catalog embedding cache not writable")
        return emb

    def _refresh_known_index(self) -> None:
        rows = {c: i for i, c in enumerate(self.head.codes)} if self.head else {}
        self.known_index = torch.tensor([rows.get(c, -1) for c in self.codes])

    # --- encoding -----------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        if self.emb_cache is None:
            return self.encoder.encode(texts, batch_size=batch_size)
        missing = [t for t in dict.fromkeys(texts) if t not in self.emb_cache]
        if missing:
            for t, v in zip(missing, self.encoder.encode(missing, batch_size=batch_size)):
                self.emb_cache[t] = v
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self.emb_cache[t] for t in texts])

    def _indication_similarity(self, order_emb: torch.Tensor) -> torch.Tensor:
        sims = order_emb @ self.phrase_emb.T  # [n, phrases]
        out = torch.full((order_emb.shape[0], len(self.catalog)), -1.0)
        return out.scatter_reduce(1, self.phrase_owner.expand(order_emb.shape[0], -1), sims, reduce="amax")

    def _inputs(self, orders: Sequence[Order], flags=None):
        from radassist.flag_assessment import assess_order

        if flags is None:
            flags = [assess_order(o, self.policy) for o in orders]
        emb = self.encode([o.model_text() for o in orders])
        feat = torch.tensor([order_features(o, {f.type for f in fl if f.is_current})
                             for o, fl in zip(orders, flags)])
        return emb, feat, self._indication_similarity(emb), flags

    def _logits(self, emb, feat, ind_sim, orders: Sequence[Order] | None = None) -> torch.Tensor:
        if self.head is None:  # untrained: plain cosine similarity, still a usable ranking
            return 20.0 * (emb @ self.proto_emb.T) + 5.0 * ind_sim
        with torch.inference_mode():
            logits = self.head(emb, feat, self.proto_emb, self.proto_feat, ind_sim, self.known_index)
            if self.lexical is not None and self.lexical_weight > 0 and orders is not None:
                logits = logits + self.lexical_weight * self.lexical.log_probs(orders, self.codes)
            return logits

    # --- prediction ---------------------------------------------------------------------------
    def probabilities(self, orders: Sequence[Order], flags=None, with_embeddings: bool = False):
        """Model probabilities over the catalog (before flag steering) and each order's flags."""
        emb, feat, ind_sim, flags = self._inputs(orders, flags)
        probs = torch.softmax(self._logits(emb, feat, ind_sim, orders) / self.temperature, dim=-1)
        if with_embeddings:
            return probs, flags, emb
        return probs, flags

    def familiarity(self, emb: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each order to its nearest training order (1.0 when none are stored)."""
        if self.train_emb is None or not len(self.train_emb):
            return torch.ones(emb.shape[0])
        sims = emb @ self.train_emb.float().T
        return sims.max(dim=1).values

    def review_reason(self, suggestions, familiarity: float) -> str:
        """Why an order should not be pre-selected, or "" (see ``radassist.confidence``)."""
        from radassist.confidence import review_reason

        if suggestions and self.head is not None and suggestions[0].code not in self.head.codes:
            return "protocol added to the catalog after the model was trained"
        return review_reason(suggestions, familiarity, self.calibration, self.policy, self.target_precision)

    def predict_batch(self, orders: Sequence[Order], top_k: int = 3) -> list[Prediction]:
        if not orders:
            return []
        t0 = time.perf_counter()
        probs, flags, emb = self.probabilities(orders, with_embeddings=True)
        familiar = self.familiarity(emb).tolist()
        from radassist.ranking import suggestions

        rows = probs.numpy()
        out = []
        for i, order in enumerate(orders):
            ranked = suggestions(order, rows[i], self.catalog, flags[i], self.policy, top_k)
            reason = self.review_reason(ranked, familiar[i])
            out.append(Prediction(order.accession, ranked, flags[i], self.model_id, 0.0, bool(reason), reason))
        per_order_ms = (time.perf_counter() - t0) * 1000 / len(orders)
        for p in out:
            p.latency_ms = per_order_ms
        return out

    def shortlist(self, orders: Sequence[Order], k: int) -> list[list[str]]:
        """Candidate codes for the LLM engine, best first."""
        probs, _ = self.probabilities(orders)
        idx = probs.topk(min(k, len(self.codes)), dim=-1).indices
        return [[self.codes[j] for j in row] for row in idx.tolist()]

    # --- learning -----------------------------------------------------------------------------
    def fit(self, examples: Sequence[LabelledOrder], val_fraction: float = 0.15, epochs: int = 200,
            lr: float = 0.01, weight_decay: float = 1e-4, seed: int = 0, warm_start: bool = False,
            lexical_weight: float | None = None, on_epoch=None, **_) -> dict:
        """Train the head on labelled orders (seconds on a CPU); fits the temperature on a held-out split.

        ``warm_start``: start from the loaded head (retraining from decisions) instead of from scratch.
        ``on_epoch(epoch, epochs, loss)``: called after each epoch (training-run progress; may raise to stop).
        """
        t0 = time.perf_counter()
        examples = [e for e in examples if e.code in set(self.codes)]
        if len(examples) < 10:
            raise EngineError(f"need at least 10 labelled orders in the catalog, got {len(examples)}")
        rng = np.random.default_rng(seed)
        order_idx = rng.permutation(len(examples))
        n_val = max(1, int(len(examples) * val_fraction)) if val_fraction > 0 else 0
        val_ids, train_ids = order_idx[:n_val], order_idx[n_val:]
        emb, feat, ind_sim, _ = self._inputs([e.order for e in examples])
        code_index = {c: i for i, c in enumerate(self.codes)}
        y = torch.tensor([code_index[e.code] for e in examples])

        torch.manual_seed(seed)
        previous = self.head
        self.head = ScoringHead(self.dim, self.codes)
        if warm_start and previous is not None:
            # Continue from the current head: what it knew survives, the new examples adjust it.
            state = previous.state_dict()
            rows = {c: i for i, c in enumerate(previous.codes)}
            for j, code in enumerate(self.codes):
                if code in rows:
                    state_row = rows[code]
                    self.head.offsets.data[j] = state["offsets"][state_row]
                    self.head.bias.data[j] = state["bias"][state_row]
            for name in ("proj.weight", "interaction", "log_scale", "indication_weight"):
                self.head.state_dict()[name].copy_(state[name])
        self._refresh_known_index()
        opt = torch.optim.AdamW(self.head.parameters(), lr=lr, weight_decay=weight_decay)
        tr = torch.as_tensor(train_ids)
        for epoch in range(epochs):
            opt.zero_grad()
            logits = self.head(emb[tr], feat[tr], self.proto_emb, self.proto_feat, ind_sim[tr], self.known_index)
            loss = nn.functional.cross_entropy(logits, y[tr], label_smoothing=0.05)
            loss.backward()
            opt.step()
            if on_epoch is not None:
                on_epoch(epoch + 1, epochs, float(loss.detach()))
        self.head.eval()
        from radassist.engines.lexical import LexicalModel

        if lexical_weight is None:
            lexical_weight = self.lexical_weight if warm_start else DEFAULT_LEXICAL_WEIGHT
        self.lexical_weight = lexical_weight
        self.lexical = None
        if lexical_weight > 0:
            self.lexical = LexicalModel.fit([examples[i].order for i in train_ids],
                                            [examples[i].code for i in train_ids], self.codes, seed=seed)
        self.train_emb = emb[torch.as_tensor(train_ids)].half()
        result = FitResult(len(train_ids), n_val, float("nan"), float("nan"), float("nan"), 1.0, 0.0)
        if n_val:
            va = torch.as_tensor(val_ids)
            logits = self._logits(emb[va], feat[va], ind_sim[va], [examples[i].order for i in val_ids])
            self.temperature = fit_temperature(logits, y[va])
            result.temperature = self.temperature
            result.val_loss = float(nn.functional.cross_entropy(logits / self.temperature, y[va]))
            top3 = logits.topk(min(3, logits.shape[1]), dim=-1).indices
            result.val_top1 = float((top3[:, 0] == y[va]).float().mean())
            result.val_top3 = float((top3 == y[va, None]).any(-1).float().mean())
        result.seconds = time.perf_counter() - t0
        digest = hashlib.sha1(json.dumps([(e.order.model_text(), e.code) for e in examples]).encode()).hexdigest()
        self._version = time.strftime("%Y%m%d-%H%M%S") + "-" + digest[:6]
        return result.to_json()

    # --- persistence --------------------------------------------------------------------------
    def save_head(self, folder: str | Path, extra: dict | None = None) -> Path:
        if self.head is None:
            raise EngineError("nothing to save: the engine is untrained")
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        torch.save(self.head.state_dict(), tmp / "head.pt")
        if self.lexical is not None:
            self.lexical.save(tmp)
        if self.train_emb is not None:
            torch.save(self.train_emb.half(), tmp / "train_embeddings.pt")
        meta = {"version": self._version, "codes": self.head.codes, "temperature": self.temperature,
                "dim": self.dim, "encoder": "all-MiniLM-L6-v2", "lexical_weight": self.lexical_weight,
                "calibration": self.calibration, **(extra or {})}
        (tmp / "head.json").write_text(json.dumps(meta, indent=2))
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)
        return folder

    def load_head(self, folder: str | Path) -> None:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "head.json").read_text())
            state = torch.load(folder / "head.pt", map_location="cpu", weights_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise EngineError(f"cannot load embedding head from {folder}: {exc}") from None
        head = ScoringHead(meta["dim"], meta["codes"])
        head.load_state_dict(state)
        head.eval()
        self.head = head
        self.temperature = float(meta.get("temperature", 1.0))
        self.lexical_weight = float(meta.get("lexical_weight", 0.0))
        self.calibration = dict(meta.get("calibration") or {})
        from radassist.engines.lexical import LexicalModel

        try:
            self.lexical = LexicalModel.load(folder)
            emb_path = folder / "train_embeddings.pt"
            self.train_emb = torch.load(emb_path, map_location="cpu", weights_only=True) if emb_path.exists() else None
        except (OSError, RuntimeError, KeyError) as exc:
            raise EngineError(f"cannot load embedding head from {folder}: {exc}") from None
        self._version = meta["version"]
        self._refresh_known_index()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature scaling (Guo et al. 2017): one scalar minimizing held-out NLL."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)
    logits = logits.detach().clone()

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def default_head_dir() -> Path | None:
    """The active embedding head: models/embedding/DEFAULT names a folder beside it."""
    pointer = EMBEDDING_DIR / "DEFAULT"
    if pointer.exists():
        folder = EMBEDDING_DIR / pointer.read_text().strip()
        if folder.exists():
            return folder
    return None
