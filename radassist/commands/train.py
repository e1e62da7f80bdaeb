"""`radassist train`: fit the embedding head or a QLoRA adapter, from a file or from decisions.

    radassist train --engine embedding --data synth.jsonl            # a model folder, no registry
    radassist train --engine llm --from-db --user admin              # decisions + replay; registered
    radassist train --engine llm --from-db --run-id VERSION          # the app's pre-authorized run
    radassist train export-data --out decisions.jsonl --user admin   # the de-identified training set
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

from radassist.commands import db_parent, open_db
from radassist.commands._common import add_auth_arguments, authenticate_cli, site_settings


def register(sub) -> None:
    p = sub.add_parser("train", parents=[db_parent()], help="train a model (admins, when from the database)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", choices=("run", "export-data"), default="run")
    p.add_argument("--engine", choices=("embedding", "llm"), default="embedding")
    p.add_argument("--data", metavar="FILE", help="labelled JSONL (synthetic or exported decisions)")
    p.add_argument("--from-db", action="store_true", help="train on the decisions in the database (+ replay)")
    p.add_argument("--replay", type=int, default=8, metavar="N", help="synthetic orders per protocol mixed in")
    p.add_argument("--corpus-replay", type=int, default=20, metavar="N",
                   help="writer-corpus orders per protocol mixed in (0: none)")
    p.add_argument("--run-id", metavar="VERSION", help="a run registered by the app (internal)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: models/adapters or models/embedding)")
    p.add_argument("--json-progress", action="store_true", help="one JSON object per step on stdout")
    add_auth_arguments(p)
    from radassist.training.qlora import add_train_arguments

    add_train_arguments(p)
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    if args.action == "export-data":
        return _export_data(args)
    if not args.data and not args.from_db:
        print("radassist: error: give --data FILE or --from-db", file=sys.stderr)
        return 2
    if args.from_db or args.run_id:
        return _train_registered(args)
    from radassist.catalog import default_catalog
    from radassist.synthetic import read_labelled_jsonl

    return _train(args, read_labelled_jsonl(args.data), [], default_catalog())


def _train(args, train, heldout, catalog, on_done=None) -> int:
    """Train one engine; ``on_done(version, path, metrics)`` when a model was written. Returns exit code."""
    from radassist.training.runner import emit, train_embedding

    if args.engine == "embedding":
        t0 = time.perf_counter()
        emit({"event": "log", "message": f"fitting the embedding head on {len(train)} orders"}, args.json_progress)
        report = (lambda p: print(json.dumps(p), flush=True)) if args.json_progress else None
        version, path, metrics = train_embedding(train, catalog, args.out, progress=report,
                                                 start_from=getattr(args, "start_from", None))
        metrics["seconds"] = round(time.perf_counter() - t0, 1)
        if on_done:
            on_done(version, path, metrics)
        emit({"event": "done", "version": version, "adapter": str(path), "metrics": metrics,
              "message": f"head written to {path}"}, args.json_progress)
        return 0
    from radassist.training import qlora

    if on_done is None:
        return qlora.run_training(args, list(train), list(catalog))
    config = qlora.config_from_args(args)
    train_set, val_set = qlora.split_examples(list(train), config.val_fraction, config.seed)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def report(p: dict) -> None:
        emit(p if args.json_progress else {**p, "message": f"step {p['step']}/{p['total']} loss {p['loss']:.4f}"},
             args.json_progress)

    result = qlora.train(config, train_set, val_set, list(catalog), progress=report, stop_event=stop,
                         out_dir=args.out, command="radassist train --engine llm --from-db")
    if result.stopped:
        emit({"event": "stopped", "steps": result.steps, "message": "stopped; no adapter written"},
             args.json_progress)
        return 143
    on_done(result.adapter_dir.name, result.adapter_dir, result.metrics)
    emit({"event": "done", "version": result.adapter_dir.name, "adapter": str(result.adapter_dir),
          "metrics": result.metrics, "message": f"adapter written to {result.adapter_dir}"}, args.json_progress)
    return 0


def _train_registered(args) -> int:
    """Decisions + replay -> a candidate in the registry, compared with the active model."""
    from radassist import registry
    from radassist.access import Actor
    from radassist.catalog import ensure_catalog
    from radassist.training.dataset import build_dataset
    from radassist.training.runner import compare_on_heldout, emit, engine_for

    db = open_db(args)
    with db.session() as session:
        catalog = ensure_catalog(session)
        if args.run_id:  # the app registered this run as an admin; claim it
            run = registry.get_version(session, args.run_id)
            if run.status != registry.RUNNING:
                print(f"radassist: error: run {args.run_id} is {run.status}", file=sys.stderr)
                return 2
            registry.attach_process(session, args.run_id, os.getpid())
            actor = Actor(run.created_by, "admin")
            version = run.version
        else:
            actor = authenticate_cli(args, session)
        dataset = build_dataset(session, catalog, replay_per_protocol=args.replay,
                                corpus_per_protocol=args.corpus_replay)
        if not args.run_id:
            version = f"{args.engine}-run-{time.strftime('%Y%m%d-%H%M%S')}"
            registry.start_run(session, actor, args.engine, version, data=dataset.counts(),
                               hyperparams=_hyperparams(args), pid=os.getpid())
        active = registry.active_version(session, args.engine)
    if args.engine == "embedding":  # continue from the model in use, so that it forgets nothing
        from radassist.engines.embedding import default_head_dir

        args.start_from = active.path if active else default_head_dir()
    emit({"event": "log", "message": f"training set: {dataset.counts()}"}, args.json_progress)
    outcome = {"status": registry.FAILED, "path": None, "metrics": {}}

    def on_done(model_version, path, metrics):
        candidate = engine_for(args.engine, catalog, path, site_settings(args))
        current = engine_for(args.engine, catalog, active.path if active else None, site_settings(args))
        outcome.update(status=registry.CANDIDATE, path=str(path),
                       metrics={**metrics, "model_version": model_version, "data": dataset.counts(),
                                "comparison": compare_on_heldout(dataset.heldout, candidate, current)})

    try:
        code = _train(args, dataset.train, dataset.heldout, catalog, on_done=on_done)
        if code == 143:
            outcome["status"] = registry.CANCELLED
    except MemoryError:
        outcome["metrics"] = {"error": "out of memory"}
        code = 1
    except OSError as exc:
        outcome["metrics"] = {"error": f"{type(exc).__name__}: {exc.strerror or exc}"}
        code = 1
    except Exception as exc:
        outcome["metrics"] = {"error": f"{type(exc).__name__}: {exc}"}
        code = 1
    with db.session() as session:
        registry.finish_run(session, actor, version, outcome["status"], path=outcome["path"],
                            metrics=outcome["metrics"])
    if code == 1:
        emit({"event": "error", "message": f"training failed: {outcome['metrics'].get('error')}"}, True)
    return code


def _hyperparams(args) -> dict:
    keys = ("replay", "corpus_replay", "lora_r", "lora_alpha", "lora_dropout", "lr", "epochs", "batch_size", "max_length", "seed")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _export_data(args) -> int:
    from radassist.audit import record_event
    from radassist.access import require
    from radassist.catalog import ensure_catalog
    from radassist.training.dataset import build_dataset, export_dataset

    if not args.out:
        print("radassist: error: export-data needs --out FILE", file=sys.stderr)
        return 2
    db = open_db(args)
    with db.session() as session:
        actor = authenticate_cli(args, session)
        require(actor, "training.start")
        dataset = build_dataset(session, ensure_catalog(session), replay_per_protocol=args.replay,
                                corpus_per_protocol=getattr(args, "corpus_replay", 20))
        n = export_dataset(dataset, args.out)
        record_event(session, actor, "training.export_data", entity="decisions", details=dataset.counts())
    print(f"wrote {n} de-identified examples to {args.out} ({dataset.counts()})")
    return 0
