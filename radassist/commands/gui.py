"""`radassist gui [--demo] [--db PATH] [--screenshot PNG]`: the desktop app."""
from __future__ import annotations

import argparse

from radassist.commands import db_parent


def register(sub) -> None:
    parser = sub.add_parser("gui", parents=[db_parent()], help="open the worklist app (the default command)",
                            description="Open the RadAssist desktop app.")
    parser.add_argument("--demo", action="store_true",
                        help="use a demo database with realistic orders and users (in the data folder unless --db)")
    parser.add_argument("--screenshot", metavar="PNG",
                        help="render the main window with an order and its suggestions, save it and exit")
    parser.add_argument("--engine", metavar="NAME", help="engine to use instead of the site setting (embedding, llm)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S",
                        help="with --screenshot: how long to wait for the suggestions (default 120 s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radassist.gui.app import run_gui  # PySide6 is imported only here, never by the core

    return run_gui(db_path=getattr(args, "db", None), demo=args.demo, screenshot=args.screenshot,
                   engine=args.engine, timeout_s=args.timeout)
