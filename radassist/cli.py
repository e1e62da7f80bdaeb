"""The `radassist` command: one entry point, one module per command group in radassist.commands."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Patient data never leaves the workstation: no model hub, ever.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Each module defines register(subparsers) and sets `func` (args -> exit code) on its parsers.
COMMAND_MODULES = (
    "radassist.commands.gui",
    "radassist.commands.orders",
    "radassist.commands.predict",
    "radassist.commands.catalog",
    "radassist.commands.train",
    "radassist.commands.models",
    "radassist.commands.users",
    "radassist.commands.audit",
    "radassist.commands.synth",
    "radassist.commands.interfaces",
    "radassist.commands.spark",
)


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="PATH", help="database file (default: the user's data folder)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radassist", description="Imaging protocol assistant")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    add_db_argument(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command group not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv or ["gui"])
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # bitsandbytes warns on every CPU load that an optional kernels package is absent.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a clear message, never a traceback with patient data
        from radassist.access import PermissionDenied
        from radassist.users import AuthenticationError

        if isinstance(exc, (PermissionDenied, AuthenticationError)):
            print(f"radassist: refused: {exc}", file=sys.stderr)
            return 3
        if args.verbose:
            raise
        print(f"radassist: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
