"""LLM suggestion engine: ranks catalog protocols by their likelihood under a (4-bit, LoRA
fine-tuned) causal LM.

For each order the prompt (order text + safety flags) is followed by every candidate protocol
name. Candidates are packed into one sequence as a token trie after the prompt, with a 4D
attention mask so that each trie node sees the prompt and its own ancestors only (positions
continue from the prompt). One forward pass therefore scores all candidates, computing the
prompt once and shared name prefixes ("CT Abdomen Pelvis ...") once. A candidate's score is
the sum or mean log-probability of its name tokens plus end-of-sequence; a temperature fitted
on validation data turns scores into calibrated probabilities. Only catalog codes are ever
returned; candidates come from the whole catalog or from an injected shortlist function
(the embedding engine).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radassist.domain import Order, Prediction, Protocol, SafetyFlag
from radassist.engines.base import EngineError, SuggestionEngine
from radassist.paths import ADAPTERS_DIR

ShortlistFn = Callable[[Sequence[Order], int], list[list[str]]]
SafetyFn = Callable[[str], list[SafetyFlag]]

NORMALIZATIONS = ("mean", "sum")
CALIBRATION_FILE = "calibration.json"
MODEL_CARD_JSON = "model_card.json"
DEFAULT_FILE = "DEFAULT"
MAX_ORDER_CHARS = 700  # longer order text is cut (prompt length bounds latency)


# --------------------------------------------------------------------------- prompt
def format_flags(flags: Sequence[SafetyFlag]) -> str:
    """Current flags with severity and how they are handled; resolved and historical ones are left out."""
    parts = []
    for f in flags:
        if not f.is_current:
            continue
        detail = " ".join(d for d in (f.severity if f.severity != "any" else "", f.kind,
                                      "uncertain" if f.status == "uncertain" else "",
                                      "handled" if f.handled else "") if d)
        parts.append(f"{f.type}{' ' + detail if detail else ''} ({f.evidence})")
    return "; ".join(parts) or "none"


def build_prompt(order: Order, flags: Sequence[SafetyFlag]) -> str:
    """The prompt used for both training and scoring: ordered exam, patient, notes and flags as
    separate fields (de-identified: no name, MRN or accession)."""
    notes = " ".join((order.clinical_notes or "").split())[:MAX_ORDER_CHARS] or "(none)"
    patient = " ".join(p for p in (f"{order.age}y" if order.age is not None else "",
                                   order.sex if order.sex in ("F", "M", "O") else "", order.priority or "") if p)
    return (f"Ordered exam: {' '.join(order.ordered_exam.split())[:120]}\nPatient: {patient or 'unknown'}\n"
            f"Notes: {notes}\nSafety: {format_flags(flags)}\nProtocol:")


def candidate_text(protocol: Protocol) -> str:
    """What the model is trained to write after the prompt (followed by EOS)."""
    return f" {protocol.name}"


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    return list(tokenizer(prompt).input_ids)


def encode_candidate(tokenizer, protocol: Protocol) -> list[int]:
    return list(tokenizer(candidate_text(protocol), add_special_tokens=False).input_ids) + [tokenizer.eos_token_id]


# --------------------------------------------------------------------------- calibration
@dataclass
class Calibration:
    """How raw log-likelihoods become probabilities; stored as calibration.json.

    Without a prior: ``softmax(score / temperature)`` over the candidates. With the shortlist
    engine's probabilities as a prior (``prior_weight`` > 0, a product of experts):
    ``softmax((score / temperature + prior_weight * log p_prior) / fused_temperature)``.
    """

    temperature: float = 1.0
    normalization: str = "mean"
    prior_weight: float = 0.0
    fused_temperature: float = 1.0

    @classmethod
    def load(cls, folder: Path) -> "Calibration":
        path = folder / CALIBRATION_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
            cal = cls(float(data["temperature"]), str(data.get("normalization", "mean")),
                      float(data.get("prior_weight", 0.0)), float(data.get("fused_temperature", 1.0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"invalid {path}: {exc}") from None
        if cal.normalization not in NORMALIZATIONS or not cal.temperature > 0 or not cal.fused_temperature > 0:
            raise EngineError(f"invalid {path}: temperature must be > 0, normalization one of {NORMALIZATIONS}")
        return cal

    def save(self, folder: Path) -> None:
        (folder / CALIBRATION_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    def logits(self, sums: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return normalize(sums, lengths, self.normalization) / self.temperature

    def probabilities(self, sums: np.ndarray, lengths: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
        if prior is None or self.prior_weight <= 0:
            return softmax(self.logits(sums, lengths))
        fused = self.logits(sums, lengths) + self.prior_weight * np.log(np.clip(prior, 1e-9, 1.0))
        return softmax(fused / self.fused_temperature)


def normalize(sums: np.ndarray, lengths: np.ndarray, normalization: str) -> np.ndarray:
    return sums / lengths if normalization == "mean" else sums


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def fit_temperature(scores: Sequence[np.ndarray], gold: Sequence[int]) -> float:
    """Temperature minimising the negative log-likelihood of the gold candidates
    (log-spaced grid, then a finer grid around the best)."""
    pairs = [(s, g) for s, g in zip(scores, gold) if g >= 0 and len(s) > 1]
    if not pairs:
        return 1.0

    def nll(t: float) -> float:
        total = 0.0
        for s, g in pairs:
            z = s / t
            total += float(np.log(np.exp(z - z.max()).sum()) + z.max() - z[g])
        return total / len(pairs)

    grid = np.exp(np.linspace(math.log(0.005), math.log(50.0), 60))
    best = min(grid, key=nll)
    fine = best * np.exp(np.linspace(-0.2, 0.2, 21))
    return float(min(fine, key=nll))


# --------------------------------------------------------------------------- scoring
class CandidateScorer:
    """Log-likelihood of candidate token sequences after prompts, trie-packed (see module doc)."""

    def __init__(self, model, tokenizer, max_batch_tokens: int = 4096):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens

    @staticmethod
    def _trie(candidates: Sequence[Sequence[int]]):
        """Nodes (token, parent index or -1, depth) and each candidate's node path."""
        nodes: list[tuple[int, int, int]] = []
        index: dict[tuple[int, int], int] = {}
        paths = []
        for seq in candidates:
            parent, path = -1, []
            for depth, tok in enumerate(seq, start=1):
                key = (parent, tok)
                if key not in index:
                    index[key] = len(nodes)
                    nodes.append((tok, parent, depth))
                parent = index[key]
                path.append(parent)
            paths.append(path)
        return nodes, paths

    def score(
        self, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[Sequence[int]]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each prompt, (sum log-prob, token count) of each of its candidates."""
        tries = [self._trie(c) for c in candidates]
        results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(tries[i][0]))
        batch: list[int] = []
        for i in order:
            width = len(prompts[i]) + len(tries[i][0])
            if batch and (len(batch) + 1) * width > self.max_batch_tokens:
                self._score_batch(batch, prompts, tries, results)
                batch = []
            batch.append(i)
        if batch:
            self._score_batch(batch, prompts, tries, results)
        return results  # type: ignore[return-value]

    def _score_batch(self, batch, prompts, tries, results) -> None:
        import torch

        p_max = max(len(prompts[i]) for i in batch)
        n_max = max(len(tries[i][0]) for i in batch)
        length = p_max + n_max
        size = len(batch)
        ids = torch.full((size, length), self.tokenizer.pad_token_id, dtype=torch.long)
        pos = torch.zeros((size, length), dtype=torch.long)
        mask = torch.eye(length, dtype=torch.bool).repeat(size, 1, 1)  # padding sees itself only
        for b, i in enumerate(batch):
            prompt, (nodes, _) = prompts[i], tries[i]
            p, off = len(prompt), p_max - len(prompt)
            ids[b, off:p_max] = torch.tensor(prompt)
            pos[b, off:p_max] = torch.arange(p)
            mask[b, off:p_max, off:p_max] = torch.ones(p, p, dtype=torch.bool).tril()
            for j, (tok, parent, depth) in enumerate(nodes):
                row = p_max + j
                ids[b, row] = tok
                pos[b, row] = p - 1 + depth
                if parent >= 0:  # the parent's row already sees the prompt and its ancestors
                    mask[b, row] = mask[b, p_max + parent]
                else:
                    mask[b, row, off:p_max] = True
                mask[b, row, row] = True
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(device),
                attention_mask=mask[:, None].to(device),
                position_ids=pos.to(device),
                logits_to_keep=n_max + 1,  # rows: prompt end, then every trie node
                use_cache=False,
            )
        logits = out.logits.float()
        for b, i in enumerate(batch):
            nodes, paths = tries[i]
            logp = torch.log_softmax(logits[b], dim=-1)
            rows = torch.tensor([0 if parent < 0 else parent + 1 for _, parent, _ in nodes])
            toks = torch.tensor([tok for tok, _, _ in nodes])
            node_lp = logp[rows, toks].cpu().numpy().astype(np.float64)
            sums = np.array([node_lp[path].sum() for path in paths])
            lengths = np.array([len(path) for path in paths], dtype=np.float64)
            results[i] = (sums, lengths)


# --------------------------------------------------------------------------- adapters
def resolve_adapter(adapter: str | Path | None) -> Path | None:
    """None/"base" -> no adapter; "default" -> the folder named in models/adapters/DEFAULT;
    a version name -> models/adapters/<name>; or an explicit folder."""
    if adapter in (None, "", "base"):
        return None
    if str(adapter) == "default":
        pointer = ADAPTERS_DIR / DEFAULT_FILE
        if not pointer.is_file():
            raise EngineError(f"no default LLM adapter: {pointer} is missing")
        adapter = pointer.read_text().strip()
    folder = Path(adapter)
    if not folder.is_absolute() and not folder.exists():
        folder = ADAPTERS_DIR / str(adapter)
    if not (folder / "adapter_config.json").is_file():
        raise EngineError(f"LLM adapter not found or incomplete: {folder} (no adapter_config.json)")
    return folder


def adapter_base_id(folder: Path) -> str | None:
    try:
        return json.loads((folder / MODEL_CARD_JSON).read_text())["base_model"]["id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------- engine
class LLMEngine(SuggestionEngine):
    """Suggests protocols by LLM likelihood (see module doc)."""

    name = "llm"

    def __init__(
        self,
        catalog: Sequence[Protocol],
        *,
        adapter: str | Path | None = "default",
        base_model: str | Path | None = None,
        quantization: str = "nf4",
        device: str = "auto",
        shortlist_engine=None,
        shortlist_size: int = 10,
        safety: SafetyFn | None = None,
        loaded=None,
        max_batch_tokens: int = 4096,
    ):
        """``loaded``: an already loaded ``radassist.engines.llm_model.LoadedModel`` (its model may be
        a peft model); otherwise the base model is loaded from settings and the adapter
        applied. ``shortlist_engine``: an engine with ``shortlist(orders, k)`` (the embedding
        engine) or such a callable; its top ``shortlist_size`` codes are scored. None scores
        the whole catalog. ``safety`` defaults to ``radassist.safety.check_notes``."""
        from radassist.engines.llm_model import load_base_model

        self._adapter_dir = resolve_adapter(adapter)
        self.calibration = Calibration.load(self._adapter_dir) if self._adapter_dir else Calibration()
        self.loaded = loaded or load_base_model(base_model, quantization=quantization, device=device)
        if self._adapter_dir is not None:
            trained_on = adapter_base_id(self._adapter_dir)
            if trained_on and trained_on != self.loaded.base_id:
                raise EngineError(
                    f"adapter {self._adapter_dir.name} was trained on {trained_on}, "
                    f"but the configured base model is {self.loaded.base_id}"
                )
            from peft import PeftModel

            try:
                base: Any = self.loaded.model  # a transformers PreTrainedModel
                self.loaded.model = PeftModel.from_pretrained(base, str(self._adapter_dir))
            except Exception as exc:
                raise EngineError(f"could not load adapter {self._adapter_dir}: {type(exc).__name__}: {exc}") from exc
        model: Any = self.loaded.model
        model.eval()
        self.scorer = CandidateScorer(self.loaded.model, self.loaded.tokenizer, max_batch_tokens)
        self.shortlist_engine = shortlist_engine
        self.shortlist_fn: ShortlistFn | None = getattr(shortlist_engine, "shortlist", shortlist_engine)
        self.shortlist_size = shortlist_size
        self.safety = safety  # None: flags assessed with the site policy (radassist.flag_assessment)
        self.set_catalog(catalog)

    @property
    def version(self) -> str:
        return self._adapter_dir.name if self._adapter_dir else "base"

    @property
    def device(self) -> str:
        return self.loaded.device

    def set_catalog(self, protocols: Sequence[Protocol]) -> None:
        if not protocols:
            raise EngineError("empty protocol catalog")
        from radassist.safety_policy import site_policy

        self.catalog = list(protocols)
        self._by_code = {p.code: p for p in self.catalog}
        self.policy = site_policy(self.catalog)
        tok = self.loaded.tokenizer
        self._cand_ids = {p.code: encode_candidate(tok, p) for p in self.catalog}

    def shortlist_probabilities(self, orders: Sequence[Order],
                                flags: Sequence[Sequence[SafetyFlag]] | None = None) -> np.ndarray | None:
        """The shortlist engine's probabilities over its codes, one row per order, computed once per
        batch (one MiniLM encoding feeds both the shortlist and the prior), or None when the shortlist
        engine offers no ``probabilities``."""
        engine = self.shortlist_engine
        if engine is None or not hasattr(engine, "probabilities"):
            return None
        probs, _ = engine.probabilities(orders, flags=flags)
        return np.asarray(probs.detach().cpu() if hasattr(probs, "detach") else probs, dtype=np.float64)

    def candidates_for(self, orders: Sequence[Order], shortlist_probs: np.ndarray | None = None) -> list[list[str]]:
        """Catalog codes to score per order: the shortlist (filtered to the catalog) or all."""
        all_codes = [p.code for p in self.catalog]
        if self.shortlist_fn is None or self.shortlist_size >= len(all_codes):
            return [all_codes for _ in orders]
        if shortlist_probs is not None:
            codes = self.shortlist_engine.codes
            k = min(self.shortlist_size, len(codes))
            order_idx = np.argsort(-shortlist_probs, axis=1, kind="stable")[:, :k]
            lists = [[codes[j] for j in row] for row in order_idx]
        else:
            lists = self.shortlist_fn(orders, self.shortlist_size)
        out = []
        for codes in lists:
            kept = list(dict.fromkeys(c for c in codes if c in self._by_code))
            out.append(kept or all_codes)
        return out

    def raw_scores(
        self, orders: Sequence[Order], flags: Sequence[Sequence[SafetyFlag]], codes: Sequence[Sequence[str]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(sum log-prob, token count) per candidate code, per order."""
        tok = self.loaded.tokenizer
        prompts = [encode_prompt(tok, build_prompt(o, f)) for o, f in zip(orders, flags)]
        cands = [[self._cand_ids[c] for c in cs] for cs in codes]
        return self.scorer.score(prompts, cands)

    def prior_probabilities(self, orders: Sequence[Order], codes: Sequence[Sequence[str]],
                            shortlist_probs: np.ndarray | None = None) -> list:
        """The shortlist engine's probabilities of each candidate (when the calibration uses
        them as a prior and the engine offers ``probabilities``), else None per order."""
        if self.calibration.prior_weight <= 0:
            return [None] * len(orders)
        probs = shortlist_probs if shortlist_probs is not None else self.shortlist_probabilities(orders)
        if probs is None:
            return [None] * len(orders)
        index = {c: i for i, c in enumerate(self.shortlist_engine.codes)}
        return [np.array([row[index[c]] if c in index else 0.0 for c in cs]) for row, cs in zip(probs, codes)]

    def flags_for(self, orders: Sequence[Order]) -> list[list[SafetyFlag]]:
        """Each order's flags: assessed with the site policy, or from the ``safety`` callable given."""
        if self.safety is None:
            from radassist.flag_assessment import assess_order

            return [assess_order(o, self.policy) for o in orders]
        return [list(self.safety(o.clinical_notes or "")) for o in orders]

    def predict_batch(self, orders: Sequence[Order], top_k: int = 3) -> list[Prediction]:
        from radassist.ranking import suggestions

        started = time.perf_counter()
        flags = self.flags_for(orders)   # assessed once; the shortlist engine reuses them
        shortlist_probs = self.shortlist_probabilities(orders, flags if self.safety is None else None)
        codes = self.candidates_for(orders, shortlist_probs)
        scored = self.raw_scores(orders, flags, codes)
        priors = self.prior_probabilities(orders, codes, shortlist_probs)
        each_ms = (time.perf_counter() - started) * 1000 / max(len(orders), 1)
        preds = []
        for order, fl, cs, (sums, lengths), prior in zip(orders, flags, codes, scored, priors):
            probs = self.calibration.probabilities(sums, lengths, prior)
            ranked = suggestions(order, probs, [self._by_code[c] for c in cs], fl, self.policy, top_k)
            preds.append(Prediction(order.accession, ranked, list(fl), self.model_id, each_ms))
        return preds
