"""`radassist train`: fit the embedding head or a QLoRA adapter, from a file or from decisions.

    radassist train --engine embedding --data synth.jsonl            # a model folder, no registry
    radassist train --engine llm --from-db --user admin              # decisions + replay; registered
    radassist train --engine llm --from-db --run-id VERSION          # the app's run (token in the environment)
    radassist train export-data --out decisions.jsonl --user admin   # the de-identified training set

A thin adapter: the arguments become a `TrainingRunConfig` and `radassist.training.run_service`
does the run. ``--run-id`` claims a run that the app registered for this process: its one-time
token comes in the environment (RADASSIST_RUN_TOKEN), never on the command line.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from radassist.commands import db_parent, open_db
from radassist.commands._common import add_auth_arguments, authenticate_cli


def register(sub) -> None:
    from radassist.training.qlora import QLoRAConfig

    d = QLoRAConfig()
    p = sub.add_parser("train", parents=[db_parent()], help="train a model (admins, when from the database)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", choices=("run", "export-data"), default="run")
    p.add_argument("--engine", choices=("embedding", "llm"), default="embedding")
    p.add_argument("--data", metavar="FILE", help="labelled JSONL (synthetic or exported decisions)")
    p.add_argument("--catalog", metavar="CSV", help="with --data: protocol catalog (default: the shipped one)")
    p.add_argument("--from-db", action="store_true", help="train on the decisions in the database (+ replay)")
    p.add_argument("--replay", type=int, default=8, metavar="N", help="synthetic orders per protocol mixed in")
    p.add_argument("--corpus-replay", type=int, default=20, metavar="N",
                   help="writer-corpus orders per protocol mixed in (0: none)")
    p.add_argument("--run-id", metavar="VERSION", help="a run registered by the app for this process (internal)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: the user's data folder, models/<engine>)")
    p.add_argument("--json-progress", action="store_true", help="one JSON object per step/event on stdout")
    p.add_argument("--seed", type=int, default=d.seed)
    add_auth_arguments(p)
    g = p.add_argument_group("embedding engine")
    g.add_argument("--embedding-epochs", type=int, default=None, metavar="N",
                   help="default: 100 continuing from the active head, 200 from scratch")
    q = p.add_argument_group("LLM engine (QLoRA)")
    q.add_argument("--base-model", default=d.base_model, metavar="DIR",
                   help="HF model folder (default: the site setting, else models/meditron-7b, else SmolLM2)")
    q.add_argument("--quantization", choices=("nf4", "none"), default=d.quantization)
    q.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device)
    q.add_argument("--lora-r", type=int, default=d.lora_r, help=f"LoRA rank (default {d.lora_r})")
    q.add_argument("--lora-alpha", type=int, default=d.lora_alpha, help=f"default {d.lora_alpha}")
    q.add_argument("--lora-dropout", type=float, default=d.lora_dropout, help=f"default {d.lora_dropout}")
    q.add_argument("--target-modules", default=",".join(d.target_modules), help="comma-separated module names")
    q.add_argument("--lr", type=float, default=None, help=f"learning rate (LLM default {d.learning_rate})")
    q.add_argument("--epochs", type=float, default=d.epochs, help=f"default {d.epochs}")
    q.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    q.add_argument("--max-length", type=int, default=d.max_length, help=f"tokens per example (default {d.max_length})")
    q.add_argument("--val-fraction", type=float, default=d.val_fraction, help=f"default {d.val_fraction}")
    q.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="default: on for models above 1B parameters")
    q.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    q.add_argument("--optimizer", choices=("paged_adamw_8bit", "adamw"), default=d.optimizer)
    p.set_defaults(func=run_train)


def config_from_args(args):
    """The only place arguments become a run's configuration."""
    from radassist.training.qlora import QLoRAConfig
    from radassist.training.run_service import TrainingRunConfig

    d = QLoRAConfig()
    qlora = QLoRAConfig(
        base_model=args.base_model or None, quantization=args.quantization, device=args.device,
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        target_modules=tuple(m.strip() for m in args.target_modules.split(",") if m.strip()),
        learning_rate=args.lr if args.lr is not None else d.learning_rate, epochs=args.epochs,
        batch_size=args.batch_size, max_length=args.max_length, seed=args.seed, val_fraction=args.val_fraction,
        gradient_checkpointing=args.gradient_checkpointing, max_steps=args.max_steps, optimizer=args.optimizer)
    from_db = bool(args.from_db or args.run_id)
    return TrainingRunConfig(
        engine=args.engine, source="db" if from_db else "file",
        data_file=Path(args.data) if args.data and not from_db else None,
        catalog_csv=Path(args.catalog) if args.catalog else None,
        replay_per_protocol=args.replay, corpus_per_protocol=args.corpus_replay,
        out_dir=Path(args.out) if args.out else None, seed=args.seed,
        embedding_epochs=args.embedding_epochs, embedding_lr=args.lr if args.engine == "embedding" else None,
        qlora=qlora, command=shlex.join(["radassist", *sys.argv[1:]]) if sys.argv[1:2] == ["train"] else
        "radassist train")


def printer(json_progress: bool):
    """Events to stdout as JSON lines (the app reads them), or as text on stderr."""
    def show(event: dict) -> None:
        if json_progress:
            print(json.dumps(event, default=str), flush=True)
        elif "step" in event and "event" not in event:
            print(f"step {event['step']}/{event['total']} loss {event['loss']:.4f} "
                  f"eta {event.get('eta_s') or 0:.0f}s", file=sys.stderr, flush=True)
        elif event.get("message"):
            print(event["message"], file=sys.stderr, flush=True)
    return show


def run_train(args) -> int:
    if args.action == "export-data":
        return _export_data(args)
    if not args.data and not args.from_db and not args.run_id:
        print("radassist: error: give --data FILE or --from-db", file=sys.stderr)
        return 2
    from radassist import registry
    from radassist.training.run_service import REFUSED_EXIT, TrainingRun

    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"radassist: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = (signal.signal(signal.SIGTERM, lambda *_: stop.set())
                if threading.current_thread() is threading.main_thread() else None)
    try:
        if config.source == "file":
            run = TrainingRun(None, config, progress=printer(args.json_progress), stop_event=stop)
        else:
            db = open_db(args)
            run = TrainingRun(db, config, progress=printer(args.json_progress), stop_event=stop)
            if args.run_id:
                token = os.environ.pop(registry.RUN_TOKEN_ENV, None)  # not passed on to anything this starts
                try:
                    run.claim_registered(args.run_id, token)
                except registry.RunClaimRefused as exc:
                    print(f"radassist: refused: {exc}", file=sys.stderr)
                    return REFUSED_EXIT
            else:
                with db.session() as session:
                    actor = authenticate_cli(args, session)
                run.claim(actor)
        return run.execute().exit_code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _export_data(args) -> int:
    from radassist.access import require
    from radassist.audit import record_event
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
                                corpus_per_protocol=args.corpus_replay)
        n = export_dataset(dataset, args.out)
        record_event(session, actor, "training.export_data", entity="decisions", details=dataset.counts())
    print(f"wrote {n} de-identified examples to {args.out} ({dataset.counts()})")
    return 0
