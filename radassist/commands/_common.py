"""Helpers shared by command modules: catalog and engine resolution, progress bars."""
from __future__ import annotations

import sys
from pathlib import Path

from radassist.paths import default_db_path


def add_engine_arguments(parser) -> None:
    parser.add_argument("--engine", choices=("embedding", "llm"), default=None,
                        help="suggestion engine (default: the site setting, else embedding)")
    parser.add_argument("--model-version", metavar="VERSION", default=None,
                        help="registry version to use (default: the active one; 'shipped': the shipped model)")
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
    """The engine the site runs (engine_factory): the --engine or configured engine, the registry's active
    version unless --model-version names another; says so on stderr when it falls back."""
    from radassist import engine_factory

    path = Path(getattr(args, "db", None) or default_db_path())
    version = getattr(args, "model_version", None)
    settings = site_settings(args)
    if path.exists():
        from radassist.store import open_database

        db = open_database(path)
        if version is None:
            engine, warning = engine_factory.engine_with_fallback(db, catalog, settings, args.engine)
        else:  # an explicitly named version: no silent fallback to another model
            engine, warning = engine_factory.engine_for(db, catalog, settings, args.engine, version), None
    else:  # no database, so no registry: the shipped models
        if version not in (None, engine_factory.SHIPPED):
            raise engine_factory.EngineError(f"no database at {path}: no model version {version!r}")
        name = args.engine or settings.engine
        try:
            engine, warning = engine_factory.build_engine(name, catalog, settings), None
        except (engine_factory.EngineError, ImportError, OSError, RuntimeError, ValueError) as exc:
            if name == "embedding":
                raise
            engine = engine_factory.build_engine("embedding", catalog, settings)
            warning = f"{name} engine unavailable ({exc}); using the embedding engine"
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
