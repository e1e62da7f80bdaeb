"""Command-line groups of `radassist`; each module has register(subparsers)."""
import argparse


def db_parent() -> argparse.ArgumentParser:
    """Parent parser so that `--db` works after the sub-command too."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                        help="database file (default: the user's data folder)")
    return parent


def open_db(args):
    from radassist.store import open_database

    return open_database(getattr(args, "db", None))
