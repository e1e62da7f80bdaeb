"""Writer-held-out training of the embedding engine: hold out each writer style, then ship.

A model trained and checked on one writer's notes learns that writer. Here every writer style of
the corpus (``style`` field) is held out in turn: the engine is trained on the other styles (plus
any replay data, e.g. the synthetic generator) and predicts the held-out one. Those out-of-fold
predictions choose the lexical weight, fit the temperature and the review threshold for the target
precision, and give the table that says whether training beats the untrained cosine baseline on
every style. Then the engine is trained on everything and carries those calibrations.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from radassist.confidence import DEFAULT_TARGET_PRECISION, fit_calibration
from radassist.domain import LabelledOrder, Protocol

LEXICAL_WEIGHTS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0)


@dataclass
class StyleRow:
    style: str
    n: int
    baseline_top1: float
    top1: float
    top3: float


@dataclass
class FoldReport:
    rows: list[StyleRow] = field(default_factory=list)
    category_rows: list[StyleRow] = field(default_factory=list)  # the same, pooled by category
    lexical_weight: float = 0.0
    temperature: float = 1.0
    calibration: dict = field(default_factory=dict)
    seconds: float = 0.0

    def table(self) -> str:
        lines = ["held-out style      n   untrained top-1   trained top-1   trained top-3",
                 "-" * 72]
        for r in self.rows:
            mark = "" if r.top1 >= r.baseline_top1 else "   <-- below baseline"
            lines.append(f"{r.style:<16} {r.n:>4}   {r.baseline_top1:>15.3f}   {r.top1:>13.3f}   {r.top3:>13.3f}{mark}")
        n = sum(r.n for r in self.rows)
        if n:
            def avg(attr):
                return sum(getattr(r, attr) * r.n for r in self.rows) / n
            lines.append(f"{'all (pooled)':<16} {n:>4}   {avg('baseline_top1'):>15.3f}   {avg('top1'):>13.3f}   "
                         f"{avg('top3'):>13.3f}")
        if self.category_rows:
            lines.append("")
            lines.append("category (pooled)   n   untrained top-1   trained top-1   trained top-3")
            for r in self.category_rows:
                mark = "" if r.top1 >= r.baseline_top1 else "   <-- below baseline"
                lines.append(f"{r.style:<16} {r.n:>4}   {r.baseline_top1:>15.3f}   {r.top1:>13.3f}   "
                             f"{r.top3:>13.3f}{mark}")
        lines.append(f"lexical weight {self.lexical_weight}, temperature {self.temperature:.3f}, "
                     f"review threshold {self.calibration.get('review_threshold')} for "
                     f"{self.calibration.get('target_precision', DEFAULT_TARGET_PRECISION):.0%} precision "
                     f"(held-out coverage {self.calibration.get('heldout_coverage')})")
        return "\n".join(lines)


def _hit(example: LabelledOrder, code: str) -> bool:
    return code == example.code or code in example.acceptable


def _steered(engine, examples, logits, temperature, flags):
    from radassist.ranking import suggestions

    probs = torch.softmax(logits / temperature, dim=-1).numpy()
    return [suggestions(e.order, probs[i], engine.catalog, flags[i], engine.policy, 3) for i, e in enumerate(examples)]


def train_by_style(catalog: Sequence[Protocol], corpus: Sequence[LabelledOrder],
                   replay: Sequence[LabelledOrder] = (), target_precision: float = DEFAULT_TARGET_PRECISION,
                   progress: Callable[[str], None] | None = None, encoder=None):
    """Out-of-fold evaluation by writer style, then the final engine on all data. Returns (engine, report)."""
    from radassist.engines.embedding import EmbeddingEngine, fit_temperature

    t0 = time.perf_counter()
    say = progress or (lambda _m: None)
    cache: dict = {}
    styles = sorted({e.style for e in corpus if e.style})
    if len(styles) < 2:
        raise ValueError("writer-held-out training needs a corpus with at least two styles")
    untrained = EmbeddingEngine(catalog, encoder=encoder)
    untrained.emb_cache = cache
    code_index = {c: i for i, c in enumerate(untrained.codes)}
    held: list[LabelledOrder] = []
    head_logits, lex_logp, flags_all, familiar, baseline_hits = [], [], [], [], []
    for style in styles:
        test = [e for e in corpus if e.style == style and e.code in code_index]
        train = [e for e in corpus if e.style != style] + list(replay)
        engine = EmbeddingEngine(catalog, encoder=untrained.encoder)
        engine.emb_cache = cache
        engine.fit(train, val_fraction=0.1, lexical_weight=1.0)
        orders = [e.order for e in test]
        emb, feat, ind_sim, flags = engine._inputs(orders)
        weight = engine.lexical_weight
        engine.lexical_weight = 0.0
        head_logits.append(engine._logits(emb, feat, ind_sim, orders))
        engine.lexical_weight = weight
        assert engine.lexical is not None  # fitted with lexical_weight > 0
        lex_logp.append(engine.lexical.log_probs(orders, engine.codes))
        familiar += engine.familiarity(emb).tolist()
        flags_all += flags
        base = untrained.predict_batch(orders, top_k=1)
        baseline_hits += [bool(p.suggestions) and _hit(e, p.suggestions[0].code) for e, p in zip(test, base)]
        held += test
        say(f"held out {style}: {len(test)} orders")
    head_l, lex_l = torch.cat(head_logits), torch.cat(lex_logp)
    y = torch.tensor([code_index[e.code] for e in held])

    best: tuple | None = None
    for w in LEXICAL_WEIGHTS:
        logits = head_l + w * lex_l
        temp = fit_temperature(logits, y)
        ranked = _steered(untrained, held, logits, temp, flags_all)
        top1 = np.mean([bool(r) and _hit(e, r[0].code) for e, r in zip(held, ranked)])
        nll = float(torch.nn.functional.cross_entropy(logits / temp, y))
        say(f"lexical weight {w}: held-out top-1 {top1:.3f}, NLL {nll:.3f}")
        if best is None or (top1, -nll) > (best[1], -best[2]):
            best = (w, top1, nll, temp, ranked)
    assert best is not None  # LEXICAL_WEIGHTS is not empty
    w, _, _, temp, ranked = best
    conf = [r[0].score if r else 0.0 for r in ranked]
    correct = [bool(r) and _hit(e, r[0].code) for e, r in zip(held, ranked)]
    margins = [r[0].score - (r[1].score if len(r) > 1 else 0.0) if r else 0.0 for r in ranked]
    calibration = fit_calibration(conf, correct, familiar, target_precision, margins=margins)

    report = FoldReport(lexical_weight=w, temperature=temp, calibration=calibration)
    for attr, out in (("style", report.rows), ("category", report.category_rows)):
        for key in sorted({getattr(e, attr) for e in held}):
            idx = [i for i, e in enumerate(held) if getattr(e, attr) == key]
            top3 = [any(_hit(held[i], s.code) for s in ranked[i][:3]) for i in idx]
            out.append(StyleRow(key or "(none)", len(idx), float(np.mean([baseline_hits[i] for i in idx])),
                                float(np.mean([correct[i] for i in idx])), float(np.mean(top3))))

    final = EmbeddingEngine(catalog, encoder=untrained.encoder)
    final.emb_cache = cache
    final.fit(list(corpus) + list(replay), val_fraction=0.0, lexical_weight=w)
    final.temperature = temp
    final.calibration = calibration
    final.emb_cache = None
    report.seconds = time.perf_counter() - t0
    return final, report


def load_corpus(folder) -> list[LabelledOrder]:
    """Every ``*.jsonl`` file of a corpus folder (one per writer style)."""
    from pathlib import Path

    from radassist.synthetic import read_labelled_jsonl

    files = sorted(Path(folder).glob("*.jsonl"))
    if not files:
        raise ValueError(f"no .jsonl files in {folder}")
    return [e for f in files for e in read_labelled_jsonl(f)]


def main(argv: Sequence[str] | None = None) -> int:
    """Train the shipped embedding head from the corpus: style folds, table, then save."""
    import argparse
    from pathlib import Path

    from radassist.catalog import default_catalog
    from radassist.paths import PROJECT_DIR
    from radassist.synthetic import generate

    ap = argparse.ArgumentParser(prog="python -m radassist.training.style_folds", description=main.__doc__)
    ap.add_argument("--corpus", default=str(PROJECT_DIR / "data" / "corpus"))
    ap.add_argument("--replay-per-protocol", type=int, default=40, help="synthetic generator orders per protocol")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="save the final head in this folder (a version folder under models/embedding)")
    args = ap.parse_args(argv)
    catalog = default_catalog()
    corpus = load_corpus(args.corpus)
    replay = generate(catalog, per_protocol=args.replay_per_protocol, seed=args.seed) if args.replay_per_protocol else []
    engine, report = train_by_style(catalog, corpus, replay, progress=lambda m: print(m, flush=True))
    print(report.table())
    if args.out:
        path = engine.save_head(Path(args.out), extra={
            "train_size": len(corpus) + len(replay), "corpus_orders": len(corpus), "replay_orders": len(replay),
            "styles": sorted({e.style for e in corpus}), "style_folds": [r.__dict__ for r in report.rows]})
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
