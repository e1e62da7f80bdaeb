"""`radassist predict` and `radassist evaluate` (design: prediction output contract)."""
from __future__ import annotations

import json
import os
import sys
import time

from radassist.commands import db_parent
from radassist.commands._common import add_engine_arguments, build_engine, progress, resolve_catalog

BATCH = 64


def register(sub) -> None:
    p = sub.add_parser("predict", parents=[db_parent()], help="suggest protocols for orders (JSONL in, JSONL out)")
    p.add_argument("--input", required=True, metavar="FILE", help="orders, one JSON object per line ('-' = stdin)")
    p.add_argument("--output", required=True, metavar="FILE", help="predictions ('-' = stdout)")
    p.add_argument("--top-k", type=int, default=3, metavar="N")
    add_engine_arguments(p)
    p.set_defaults(func=run_predict)

    e = sub.add_parser("evaluate", parents=[db_parent()], help="accuracy and calibration on labelled orders")
    e.add_argument("--data", required=True, metavar="FILE", help="JSONL orders with 'expected' (and 'acceptable')")
    e.add_argument("--threshold", type=float, default=None, help="confidence threshold (default: site setting)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_engine_arguments(e)
    e.set_defaults(func=run_evaluate)


def _open(path: str, mode: str):
    if path == "-":
        return sys.stdin.buffer if "r" in mode else sys.stdout
    if "w" in mode:  # the output quotes note text (safety-flag evidence): owner-only, like the database
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        return open(fd, mode, encoding="utf-8")
    return open(path, mode) if "b" in mode else open(path, mode, encoding="utf-8")


def _parse_lines(data: bytes):
    """(accession or None, Order or None, error or None) per non-blank input line, in order."""
    from radassist.ingest import OrderFormatError, iter_jsonl_records, order_from_record

    for number, record, error in iter_jsonl_records(data):
        accession = record.get("accession") if isinstance(record, dict) else None
        if error is None and isinstance(record, dict):
            try:
                yield accession, order_from_record(record), None
                continue
            except OrderFormatError as exc:
                error = str(exc)
        yield accession, None, f"line {number}: {error or 'not a JSON object'}"


def run_predict(args) -> int:
    t_load = time.perf_counter()
    catalog = resolve_catalog(args)
    engine, _ = build_engine(args, catalog)
    print(f"loaded {engine.model_id} in {time.perf_counter() - t_load:.1f} s", file=sys.stderr)
    with _open(args.input, "rb") as f:
        items = list(_parse_lines(f.read()))
    errors = 0
    out = _open(args.output, "w")
    try:
        bar = progress(total=len(items), desc="predict")
        for start in range(0, len(items), BATCH):
            chunk = items[start:start + BATCH]
            orders = [o for _, o, _ in chunk if o is not None]
            try:
                predictions = iter(engine.predict_batch(orders, top_k=args.top_k))
                batch_error = None
            except Exception as exc:  # the run goes on; the message carries no note text
                predictions, batch_error = iter(()), f"engine error: {type(exc).__name__}"
            for accession, order, error in chunk:
                if order is not None and batch_error is None:
                    line = next(predictions).to_json()
                else:
                    errors += 1
                    line = {"accession": accession if isinstance(accession, str) else None,
                            "error": error or batch_error}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
            bar.update(len(chunk))
        bar.close()
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"{len(items) - errors} predicted, {errors} errors", file=sys.stderr)
    return 0 if errors == 0 else 1


def run_evaluate(args) -> int:
    from radassist.evaluation import evaluate_predictions
    from radassist.synthetic import read_labelled_jsonl

    catalog = resolve_catalog(args)
    engine, settings = build_engine(args, catalog)
    examples = read_labelled_jsonl(args.data)
    predictions = []
    bar = progress(total=len(examples), desc="evaluate")
    for start in range(0, len(examples), BATCH):
        chunk = examples[start:start + BATCH]
        predictions.extend(engine.predict_batch([e.order for e in chunk], top_k=3))
        bar.update(len(chunk))
    bar.close()
    threshold = settings.confidence_threshold if args.threshold is None else args.threshold
    report = evaluate_predictions(examples, predictions, threshold=threshold,
                                  name_similarity=_name_similarity(engine),
                                  names={p.code: p.name for p in catalog}, model=engine.model_id)
    print(json.dumps(report.to_json()) if args.json else report.table())
    return 0


def _name_similarity(engine):
    """Cosine similarity of MiniLM embeddings of predicted vs true protocol names."""
    encoder = getattr(engine, "encoder", None) or getattr(getattr(engine, "shortlist_engine", None), "encoder", None)
    if encoder is None:
        from radassist.engines.embedding import load_sentence_encoder

        encoder = load_sentence_encoder()

    def similarity(pred_names, true_names):
        return (encoder.encode(pred_names) * encoder.encode(true_names)).sum(dim=1).tolist()

    return similarity
