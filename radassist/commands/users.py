"""`radassist users add|list|disable|enable|passwd|unlock`.

Every action but the very first `users add --role admin` (on an empty database) needs an admin:
`--as NAME` names the acting admin, whose password is asked for (or read from stdin with
`--auth-password-stdin`). Passwords read from stdin are one per line, in this order: the acting
user's password first, then the new password.
"""
from __future__ import annotations

import argparse
import getpass
import sys

from radassist.access import ROLES
from radassist.commands import db_parent, open_db


class CliError(Exception):
    """A usage problem, reported in one line with exit status 2."""


class _Stdin:
    """Reads passwords from stdin one line at a time, in the documented order."""

    def next(self, what: str) -> str:
        line = sys.stdin.readline()
        if not line:
            raise CliError(f"expected {what} on stdin")
        return line.rstrip("\r\n")


def _auth_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--as", dest="as_user", metavar="ADMIN", help="the admin performing the action")
    p.add_argument("--auth-password-stdin", action="store_true",
                   help="read the acting user's password from the first line of stdin")
    return p


def register(subparsers) -> None:
    users = subparsers.add_parser("users", help="manage user accounts (admins)")
    sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    parents = [db_parent(), _auth_parent()]

    add = sub.add_parser("add", parents=parents, help="add a user (the first admin needs no --as)")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--full-name", default="")
    add.add_argument("--password-stdin", action="store_true", help="read the new password from stdin")
    add.set_defaults(func=cmd_add)

    lst = sub.add_parser("list", parents=parents, help="list users")
    lst.set_defaults(func=cmd_list)

    for name, func, text in (("disable", cmd_disable, "disable an account"),
                             ("enable", cmd_enable, "re-enable an account"),
                             ("unlock", cmd_unlock, "clear a lockout after failed sign-ins")):
        p = sub.add_parser(name, parents=parents, help=text)
        p.add_argument("username")
        p.set_defaults(func=func)

    svc = sub.add_parser("add-service", parents=parents,
                         help="add a service account (interface feed, scheduled import) with a key file")
    svc.add_argument("--name", required=True, help="the account name (audited under it)")
    svc.add_argument("--key-file", required=True, metavar="PATH",
                     help="where to write its key (0600; refused if the file exists)")
    svc.set_defaults(func=cmd_add_service)
    lsvc = sub.add_parser("list-services", parents=parents, help="list service accounts")
    lsvc.set_defaults(func=cmd_list_services)
    for name, active in (("disable-service", False), ("enable-service", True)):
        p = sub.add_parser(name, parents=parents, help=f"{name.split('-')[0]} a service account")
        p.add_argument("--name", required=True)
        p.set_defaults(func=cmd_service_active, active=active)

    pw = sub.add_parser("passwd", parents=parents,
                        help="change a password (your own: --as defaults to USERNAME and asks the current one)")
    pw.add_argument("username")
    pw.add_argument("--password-stdin", action="store_true", help="read the new password from stdin")
    pw.set_defaults(func=cmd_passwd)


def _new_password(args, stdin: _Stdin, username: str) -> str:
    if args.password_stdin:
        return stdin.next("the new password")
    first = getpass.getpass(f"New password for {username}: ")
    if getpass.getpass("Repeat the new password: ") != first:
        raise CliError("the passwords do not match")
    return first


def _authenticate(args, session, stdin: _Stdin, default_user: str | None = None):
    from radassist import users

    name = args.as_user or default_user
    if not name:
        raise CliError("this action needs an admin: add --as ADMIN")
    password = (stdin.next("the password of --as") if args.auth_password_stdin
                else getpass.getpass(f"Password for {name}: "))
    return users.authenticate(session, name, password), password


def _run(args, action) -> int:
    """Open the database, authenticate, act; authentication failures exit 3 with a clear message."""
    from radassist import users

    db = open_db(args)
    try:
        with db.session() as session:
            return action(session)
    except users.AuthenticationError as exc:
        print(f"radassist: sign-in refused: {exc}", file=sys.stderr)
        return 3
    except (users.UserError, CliError) as exc:
        print(f"radassist: error: {exc}", file=sys.stderr)
        return 2
    finally:
        db.dispose()


def cmd_add(args) -> int:
    from radassist import users

    stdin = _Stdin()

    def action(session):
        if users.needs_bootstrap(session):
            if args.role != "admin":
                raise users.UserError("no user exists yet: the first user must be an admin (--role admin)")
            info = users.bootstrap_admin(session, args.username, _new_password(args, stdin, args.username),
                                         args.full_name)
            print(f"created the first admin {info.username!r}")
            return 0
        actor, _ = _authenticate(args, session, stdin)
        info = users.create_user(session, actor, args.username, _new_password(args, stdin, args.username),
                                 args.role, args.full_name)
        print(f"created {info.role} {info.username!r}")
        return 0

    return _run(args, action)


def cmd_list(args) -> int:
    from radassist import users

    stdin = _Stdin()

    def action(session):
        actor, _ = _authenticate(args, session, stdin)
        rows = users.list_users(session, actor)
        print(f"{'USERNAME':<20} {'ROLE':<12} {'STATUS':<22} {'LAST SIGN-IN (UTC)':<20} FULL NAME")
        for u in rows:
            status = "disabled" if not u.active else (
                f"locked to {u.locked_until:%m-%d %H:%M}" if u.locked else "active")
            last = f"{u.last_login_at:%Y-%m-%d %H:%M}" if u.last_login_at else "-"
            print(f"{u.username:<20} {u.role:<12} {status:<22} {last:<20} {u.full_name}")
        return 0

    return _run(args, action)


def _simple(args, fn_name: str, verb: str) -> int:
    from radassist import users

    stdin = _Stdin()

    def action(session):
        actor, _ = _authenticate(args, session, stdin)
        getattr(users, fn_name)(session, actor, args.username)
        print(f"{verb} {args.username!r}")
        return 0

    return _run(args, action)


def cmd_disable(args) -> int:
    return _simple(args, "disable_user", "disabled")


def cmd_enable(args) -> int:
    return _simple(args, "enable_user", "enabled")


def cmd_unlock(args) -> int:
    return _simple(args, "unlock_user", "unlocked")


def cmd_passwd(args) -> int:
    from radassist import users

    stdin = _Stdin()

    def action(session):
        # Changing one's own password: signing in as oneself *is* giving the current password.
        actor, current = _authenticate(args, session, stdin, default_user=args.username)
        users.set_password(session, actor, args.username, _new_password(args, stdin, args.username),
                           current_password=current if actor.username == args.username else None)
        print(f"password changed for {args.username!r}")
        return 0

    return _run(args, action)


def cmd_add_service(args) -> int:
    from radassist import users

    stdin = _Stdin()

    def action(session):
        actor, _ = _authenticate(args, session, stdin)
        info = users.create_service_account(session, actor, args.name, args.key_file)
        print(f"created service account {info.name!r}; its key is in {args.key_file} (0600): keep it on the "
              "machine that runs the service, nowhere else")
        return 0

    return _run(args, action)


def cmd_list_services(args) -> int:
    from radassist import users

    stdin = _Stdin()

    def action(session):
        actor, _ = _authenticate(args, session, stdin)
        print(f"{'NAME':<20} {'STATUS':<10} {'CREATED BY':<16} LAST USED (UTC)")
        for info in users.list_service_accounts(session, actor):
            last = f"{info.last_used_at:%Y-%m-%d %H:%M}" if info.last_used_at else "-"
            print(f"{info.name:<20} {'active' if info.active else 'disabled':<10} {info.created_by:<16} {last}")
        return 0

    return _run(args, action)


def cmd_service_active(args) -> int:
    from radassist import users

    stdin = _Stdin()

    def action(session):
        actor, _ = _authenticate(args, session, stdin)
        users.set_service_account_active(session, actor, args.name, args.active)
        print(f"{'enabled' if args.active else 'disabled'} service account {args.name!r}")
        return 0

    return _run(args, action)
