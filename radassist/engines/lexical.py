"""Lexical scorer: hashed word and word-pair counts -> protocol, a linear softmax model.

Sentence embeddings blur the rare, decisive terms of a referral ("D-dimer", "PSA 14", "BRCA",
"Lung-RADS", "probes to bone"); a bag of hashed words and word pairs keeps them. It is trained
with the embedding head and added to its logits with a weight chosen on writer-held-out data.
Protocols it never saw (added to the catalog later) get a neutral score, so they are ranked by the
embedding part alone.
"""
from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from radassist.domain import Order

_TOKEN = re.compile(r"[a-z0-9]+(?:/[a-z0-9]+)?")
DIM = 2 ** 15
UNSEEN_PENALTY = 0.5  # nats below the best known protocol: a new protocol must win on its description


def _demographics(order: Order) -> list[str]:
    """Age band and sex as tokens: a child's abdominal pain is not an adult's."""
    out = []
    if order.age is not None:
        out.append("__age_infant__" if order.age < 2 else "__age_child__" if order.age < 18 else
                   "__age_elderly__" if order.age >= 65 else "__age_adult__")
        if order.age < 18:
            out.append("__age_under18__")
    if order.sex in ("F", "M"):
        out.append(f"__sex_{order.sex}__")
    return out


def _features(text: str, extra: Sequence[str] = ()) -> Counter:
    words = _TOKEN.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])] + list(extra)
    return Counter(zlib.crc32(g.encode()) % DIM for g in grams)


def featurize(orders: Sequence[Order]) -> torch.Tensor:
    """Sparse [n, DIM] matrix of L2-normalised hashed counts of each order's model text."""
    rows, cols, vals = [], [], []
    for i, order in enumerate(orders):
        counts = _features(order.model_text(), _demographics(order))
        norm = sum(v * v for v in counts.values()) ** 0.5 or 1.0
        for k, v in counts.items():
            rows.append(i)
            cols.append(k)
            vals.append(v / norm)
    indices = torch.tensor([rows, cols], dtype=torch.long)
    # indices are in range by construction (k < DIM): no invariant check needed
    return torch.sparse_coo_tensor(indices, torch.tensor(vals, dtype=torch.float32), (len(orders), DIM),
                                   check_invariants=False).coalesce()


class LexicalModel:
    def __init__(self, codes: Sequence[str], weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        self.codes = list(codes)
        self.weight = weight if weight is not None else torch.zeros(DIM, len(self.codes))
        self.bias = bias if bias is not None else torch.zeros(len(self.codes))

    @classmethod
    def fit(cls, orders: Sequence[Order], labels: Sequence[str], codes: Sequence[str], epochs: int = 60,
            lr: float = 0.05, l2: float = 1e-5, seed: int = 0) -> "LexicalModel":
        torch.manual_seed(seed)
        index = {c: i for i, c in enumerate(codes)}
        x = featurize(orders)
        y = torch.tensor([index[c] for c in labels])
        w = torch.zeros(DIM, len(codes), requires_grad=True)
        b = torch.zeros(len(codes), requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=lr)
        for _ in range(epochs):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(torch.sparse.mm(x, w) + b, y) + l2 * (w * w).sum()
            loss.backward()
            opt.step()
        # float16 is how it is stored: round now so that a saved and reloaded model scores identically
        return cls(codes, w.detach().half().float(), b.detach())

    def log_probs(self, orders: Sequence[Order], catalog_codes: Sequence[str]) -> torch.Tensor:
        """[n, len(catalog_codes)] log-probabilities. A code it never saw (a protocol added to the catalog
        after training) gets the row's best value: the words cannot rule it out, so the embedding part,
        which reads the new protocol's name and indications, decides."""
        if not orders:
            return torch.zeros(0, len(catalog_codes))
        logp = torch.log_softmax(torch.sparse.mm(featurize(orders), self.weight) + self.bias, dim=-1)
        index = {c: i for i, c in enumerate(self.codes)}
        cols = [index.get(c, -1) for c in catalog_codes]
        known = torch.tensor([c >= 0 for c in cols])
        out = logp[:, torch.tensor([max(c, 0) for c in cols])]
        if not bool(known.all()):
            best = out[:, known].max(dim=1, keepdim=True).values if bool(known.any()) else torch.zeros(len(orders), 1)
            out = torch.where(known[None, :], out, best - UNSEEN_PENALTY)
        return out

    def save(self, folder: Path) -> None:
        """Only the rows of features seen in training, in float16 (a few MB)."""
        rows = torch.nonzero(self.weight.abs().sum(dim=1) > 0).flatten()
        torch.save({"codes": self.codes, "rows": rows, "weight": self.weight[rows].half(), "bias": self.bias},
                   folder / "lexical.pt")

    @classmethod
    def load(cls, folder: Path) -> "LexicalModel | None":
        path = folder / "lexical.pt"
        if not path.exists():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        weight = torch.zeros(DIM, len(state["codes"]))
        weight[state["rows"]] = state["weight"].float()
        return cls(state["codes"], weight, state["bias"])
