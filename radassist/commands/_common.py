"""Helpers shared by command modules: catalog and engine resolution, progress bars."""
from __future__ import annotations

import sys
from pathlib import Path

from radassist.paths import default_db_path


def add_engine_arguments(parser) -> None:
    parser.add_argument("--engine", choices=("embedding", "llm"), default=None,
                        help="suggestion engine (default: the site setting, else embedding)")
    parser.add_argument("--catalog", metavar="CSV", help="protocol catalog (default: the database's)")


def site_settings(args):
    """Site settings from the database when one exists; defaults otherwise (nothing is created)."""
    from radassist.settings import SiteSettings, load_settings

    path = Path(getattr(args, "db", None) or default_db_path())
    if not path.exists():
        return SiteSettings()
    from radassist.store import open_database

    db = open_database(path)
    with db.session() as session:
        return load_settings(session)


def resolve_catalog(args):
    from radassist.catalog import default_catalog, ensure_catalog, load_catalog_csv

    if getattr(args, "catalog", None):
        return load_catalog_csv(args.catalog)
    path = Path(getattr(args, "db", None) or default_db_path())
    if path.exists():
        from radassist.store import open_database

        with open_database(path).session() as session:
            return ensure_catalog(session)
    return default_catalog()


def build_engine(args, catalog):
    """The engine named on the command line or in the settings; says so on stderr when it falls back."""
    from radassist.engines import create_engine_with_fallback

    settings = site_settings(args)
    name = args.engine or settings.engine
    engine, warning = create_engine_with_fallback(name, catalog, settings)
    if warning:
        print(f"radassist: warning: {warning}", file=sys.stderr)
    return engine, settings


def progress(iterable=None, total=None, desc="", disable=None):
    from tqdm import tqdm

    if disable is None:
        disable = not sys.stderr.isatty() and total is not None and total < 200
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, disable=disable, unit="order")


def add_auth_arguments(parser) -> None:
    parser.add_argument("--user", metavar="NAME", help="the user performing the action")
    parser.add_argument("--password-stdin", action="store_true", help="read the password from stdin")


def authenticate_cli(args, session):
    """Sign in the --user named on the command line (password from stdin or a prompt)."""
    import getpass

    from radassist import users

    if not getattr(args, "user", None):
        raise users.AuthenticationError("this action needs a signed-in user: add --user NAME")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {args.user}: ")
    return users.authenticate(session, args.user, password)
