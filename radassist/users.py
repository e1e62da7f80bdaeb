"""Users service: accounts, password hashing (argon2id), sign-in with lockout, idle lock.

Passwords are hashed with argon2-cffi's PasswordHasher (argon2id, memory-hard). A password is
never logged, never stored in clear, never put in an exception message or an audit event.

Every function that changes users checks the acting user's role here, in the core
(``require(actor, "users.manage")``), so a script calling this module is refused too.

Transactions: the functions work in the caller's session (``Database.session()`` commits).
The one exception is a *failed* sign-in: :func:`authenticate` commits the failure counter and
its audit event itself before raising, so that rolling back the caller's transaction on the
exception cannot undo the lockout count.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radassist.access import ADMIN, AUDITOR, RADIOLOGIST, ROLES, SERVICE, SYSTEM, Actor, require
from radassist.audit import record_event
from radassist.paths import RESOURCES_DIR
from radassist.store.models import ServiceAccountRow, UserRow, utcnow

MAX_FAILED_ATTEMPTS = 5
LOCKOUT_MINUTES = 15          # default lockout after MAX_FAILED_ATTEMPTS failures
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024    # argon2 handles long input, but bound the work per attempt
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
COMMON_PASSWORDS_FILE = RESOURCES_DIR / "common_passwords.txt"  # see resources/make_common_passwords.py
_COMMON: frozenset[str] | None = None
_EDGE_JUNK = re.compile(r"^[\W\d_]+|[\W\d_]+$")

# Module-level so that tests may swap in cheaper parameters; check_needs_rehash upgrades
# stored hashes on the next successful sign-in whenever the parameters change.
HASHER = PasswordHasher()
_DUMMY_HASH: str | None = None


class UserError(ValueError):
    """A user-management request that cannot be done (duplicate name, unknown user, policy)."""


class PasswordPolicyError(UserError):
    pass


class AuthenticationError(Exception):
    """Sign-in refused. The message never says whether the username exists."""

    def __init__(self, message: str = "Wrong username or password."):
        super().__init__(message)


class AccountLocked(AuthenticationError):
    """Too many failed sign-ins: the account is locked until ``locked_until`` (naive UTC)."""

    def __init__(self, locked_until: datetime):
        self.locked_until = locked_until
        super().__init__(f"Account locked after {MAX_FAILED_ATTEMPTS} failed sign-ins until "
                         f"{locked_until:%Y-%m-%d %H:%M} UTC. An admin can unlock it.")


@dataclass(frozen=True)
class UserInfo:
    """What may be shown about a user (never the password hash)."""

    username: str
    full_name: str
    role: str
    active: bool
    failed_attempts: int
    locked_until: datetime | None
    created_at: datetime
    last_login_at: datetime | None

    @property
    def locked(self) -> bool:
        return self.locked_until is not None and self.locked_until > utcnow()


def _info(row: UserRow) -> UserInfo:
    return UserInfo(row.username, row.full_name, row.role, bool(row.active), row.failed_attempts,
                    row.locked_until, row.created_at, row.last_login_at)


# --- validation -----------------------------------------------------------------------------

def check_username(username: str) -> str:
    username = (username or "").strip()
    if not USERNAME_RE.match(username):
        raise UserError("username must be 1-64 characters: letters, digits, '.', '_', '-', '@' "
                        "(starting with a letter or digit)")
    return username


def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (lower case), loaded once."""
    global _COMMON
    if _COMMON is None:
        with open(COMMON_PASSWORDS_FILE, encoding="utf-8") as fh:
            _COMMON = frozenset(line.rstrip("\n") for line in fh if line.strip() and not line.startswith("#"))
    return _COMMON


def is_common_password(password: str) -> bool:
    """In the shipped list, as typed or once leading/trailing digits and symbols are stripped
    ("Football1987!" is "football")."""
    lowered = password.strip().lower()
    common = common_passwords()
    if lowered in common:
        return True
    base = _EDGE_JUNK.sub("", lowered)
    return len(base) >= 4 and base in common


def check_password(password: str, username: str = "") -> None:
    """Password policy. Raises PasswordPolicyError (the message never repeats the password).

    At least MIN_PASSWORD_LENGTH characters, not blank, not the user name nor containing it
    (names of 3 characters or more), not a common password (resources/common_passwords.txt).
    """
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password must have at most {MAX_PASSWORD_LENGTH} characters")
    if not password.strip():
        raise PasswordPolicyError("password must not be blank")
    name = (username or "").strip().lower()
    lowered = password.strip().lower()
    if name and lowered == name:
        raise PasswordPolicyError("password must not be the username")
    if len(name) >= 3 and name in lowered:
        raise PasswordPolicyError("password must not contain the username")
    if is_common_password(password):
        raise PasswordPolicyError("password is too common (it is on the list of refused passwords): "
                                  "choose a longer, less guessable one")


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    return role


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def _verify(stored_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _burn_time(password: str) -> None:
    """Verify against a dummy hash so that an unknown username takes as long as a wrong password."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = HASHER.hash("radassist-dummy-password")
    _verify(_DUMMY_HASH, password)


def _get(session: Session, username: str) -> UserRow | None:
    return session.scalar(select(UserRow).where(UserRow.username == username))


def _require_user(session: Session, username: str) -> UserRow:
    row = _get(session, (username or "").strip())
    if row is None:
        raise UserError(f"no user named {username!r}")
    return row


# --- queries --------------------------------------------------------------------------------

def user_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(UserRow)) or 0


def needs_bootstrap(session: Session) -> bool:
    """True on first start: no user exists yet, so the first admin must be created."""
    return user_count(session) == 0


def list_users(session: Session, actor: Actor) -> list[UserInfo]:
    require(actor, "users.manage")
    return [_info(r) for r in session.scalars(select(UserRow).order_by(UserRow.username))]


def get_user(session: Session, actor: Actor, username: str) -> UserInfo:
    if actor.username != username:
        require(actor, "users.manage")
    return _info(_require_user(session, username))


# --- management -----------------------------------------------------------------------------

def _add(session: Session, actor: Actor, username: str, password: str, role: str, full_name: str,
         details: dict | None = None, *, policy: bool = True, password_hash: str | None = None) -> UserInfo:
    username = check_username(username)
    check_role(role)
    if policy:
        check_password(password, username)
    if _get(session, username) is not None:
        raise UserError(f"a user named {username!r} already exists")
    row = UserRow(username=username, full_name=(full_name or "").strip()[:200], role=role,
                  password_hash=password_hash or hash_password(password), active=True, failed_attempts=0,
                  locked_until=None, created_at=utcnow())
    session.add(row)
    session.flush()
    record_event(session, actor, "user.add", entity=f"user:{username}",
                 details={"role": role, **(details or {})})
    return _info(row)


def create_user(session: Session, actor: Actor, username: str, password: str, role: str,
                full_name: str = "") -> UserInfo:
    """Add a user (admins only; audited)."""
    require(actor, "users.manage")
    return _add(session, actor, username, password, role, full_name)


def bootstrap_admin(session: Session, username: str, password: str, full_name: str = "") -> UserInfo:
    """Create the first admin on first start. Refused once any user exists."""
    if not needs_bootstrap(session):
        raise UserError("users already exist: an admin must add new users")
    username = check_username(username)
    return _add(session, Actor(username, ADMIN), username, password, ADMIN, full_name,
                details={"bootstrap": True})


def _active_admins(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(UserRow).where(
        UserRow.role == ADMIN, UserRow.active.is_(True))) or 0


def disable_user(session: Session, actor: Actor, username: str) -> UserInfo:
    """Disable an account (admins only; audited). The last active admin cannot be disabled."""
    require(actor, "users.manage")
    row = _require_user(session, username)
    if row.role == ADMIN and row.active and _active_admins(session) <= 1:
        raise UserError("cannot disable the last active admin")
    row.active = False
    session.flush()
    record_event(session, actor, "user.disable", entity=f"user:{row.username}")
    return _info(row)


def enable_user(session: Session, actor: Actor, username: str) -> UserInfo:
    require(actor, "users.manage")
    row = _require_user(session, username)
    row.active = True
    session.flush()
    record_event(session, actor, "user.enable", entity=f"user:{row.username}")
    return _info(row)


def set_password(session: Session, actor: Actor, username: str, new_password: str,
                 current_password: str | None = None) -> None:
    """Change a password: any user their own (giving the current one), an admin anyone's."""
    row = _require_user(session, username)
    own = actor.username == row.username
    if not own or not actor.can("users.manage"):
        if not own:
            require(actor, "users.manage")
        elif current_password is None or not _verify(row.password_hash, current_password):
            record_event(session, actor, "user.passwd", entity=f"user:{row.username}", outcome="failure",
                         details={"reason": "current password wrong"})
            session.commit()
            raise AuthenticationError("The current password is wrong.")
    check_password(new_password, row.username)
    row.password_hash = hash_password(new_password)
    session.flush()
    record_event(session, actor, "user.passwd", entity=f"user:{row.username}",
                 details={"by_admin": not own})


def unlock_user(session: Session, actor: Actor, username: str) -> UserInfo:
    """Clear a lockout after failed sign-ins (admins only; audited)."""
    require(actor, "users.manage")
    row = _require_user(session, username)
    was_locked = row.locked_until is not None and row.locked_until > utcnow()
    row.failed_attempts = 0
    row.locked_until = None
    session.flush()
    record_event(session, actor, "user.unlock", entity=f"user:{row.username}", details={"was_locked": was_locked})
    return _info(row)


# --- sign-in, sign-out, idle lock -----------------------------------------------------------

def _fail(session: Session, actor: Actor, action: str, reason: str, exc: AuthenticationError,
          entity: str) -> None:
    record_event(session, actor, action, entity=entity, outcome="failure", details={"reason": reason})
    session.commit()  # survive the caller's rollback: the counter and the event must stay
    raise exc


def _check_credentials(session: Session, username: str, password: str, action: str,
                       lockout_minutes: float) -> UserRow:
    """Shared by sign-in and idle unlock: counts failures, locks, audits failures."""
    username = (username or "").strip()
    now = utcnow()
    row = _get(session, username) if username else None
    entity = f"user:{username}"
    if row is None:
        # What was typed may be a password typed in the wrong field: record only that an unknown
        # name was tried. No digest either: a short hash of a password falls to a dictionary.
        _burn_time(password or "")
        record_event(session, Actor("unknown", "unknown"), action, entity="user:unknown", outcome="failure",
                     details={"reason": "unknown user"})
        session.commit()
        raise AuthenticationError()
    actor = Actor(row.username, row.role)
    if row.locked_until is not None:
        if row.locked_until > now:
            _burn_time(password or "")
            _fail(session, actor, action, "locked", AccountLocked(row.locked_until), entity)
        row.locked_until, row.failed_attempts = None, 0  # the lock has expired
    ok = bool(password) and len(password) <= MAX_PASSWORD_LENGTH and _verify(row.password_hash, password)
    if not ok:
        row.failed_attempts = (row.failed_attempts or 0) + 1
        if row.failed_attempts >= MAX_FAILED_ATTEMPTS:
            row.locked_until = now + timedelta(minutes=lockout_minutes)
            record_event(session, actor, action, entity=entity, outcome="failure",
                         details={"reason": "wrong password", "attempts": row.failed_attempts})
            _fail(session, actor, "user.lockout", "too many failed sign-ins",
                  AccountLocked(row.locked_until), entity)
        _fail(session, actor, action, "wrong password", AuthenticationError(), entity)
    if not row.active:
        _fail(session, actor, action, "disabled", AuthenticationError(), entity)
    row.failed_attempts = 0
    if HASHER.check_needs_rehash(row.password_hash):
        row.password_hash = hash_password(password)
    return row


def authenticate(session: Session, username: str, password: str, *,
                 lockout_minutes: float = LOCKOUT_MINUTES) -> Actor:
    """Sign in. Returns the Actor, or raises AuthenticationError (AccountLocked when locked).

    Audited: "signin" with outcome success or failure (the username tried, never the password);
    "user.lockout" when the fifth failure locks the account. Disabled users cannot sign in.
    """
    row = _check_credentials(session, username, password, "signin", lockout_minutes)
    row.last_login_at = utcnow()
    session.flush()
    actor = Actor(row.username, row.role)
    record_event(session, actor, "signin", entity=f"user:{row.username}")
    return actor


def sign_out(session: Session, actor: Actor) -> None:
    record_event(session, actor, "signout", entity=f"user:{actor.username}")


def lock_session(session: Session, actor: Actor, reason: str = "idle") -> None:
    """The app locked itself (idle timeout or by hand): audited as "session.lock"."""
    record_event(session, actor, "session.lock", entity=f"user:{actor.username}", details={"reason": reason})


def unlock_session(session: Session, actor: Actor, password: str, *,
                   lockout_minutes: float = LOCKOUT_MINUTES) -> Actor:
    """Re-enter the password after an idle lock. Same lockout rules as sign-in.

    Returns the (current) Actor; raises AuthenticationError/AccountLocked like authenticate.
    If the user's role changed meanwhile, the returned Actor carries the new role.
    """
    row = _check_credentials(session, actor.username, password, "session.unlock", lockout_minutes)
    session.flush()
    current = Actor(row.username, row.role)
    record_event(session, current, "session.unlock", entity=f"user:{row.username}")
    return current


# --- demo users -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    role: str
    full_name: str
    # An argon2id hash of ``password`` made once with the shipped parameters. The password is public
    # (the README and the demo sign-in dialog show it), so its hash reveals nothing; shipping it saves
    # ~1 s of hashing on a new demo database. Used only while HASHER has those parameters.
    password_hash: str = ""


def demo_users() -> list[DemoUser]:
    """One user per role for the demo database; the README lists these passwords."""
    return [
        DemoUser("rad", "rad-demo-1", RADIOLOGIST, "Dr. Demo Radiologist",
                 "$argon2id$v=19$m=65536,t=3,p=4$i4G0aCx600Cpa7sY0iZffA$e2fcvsmYcxbgj8jV39iwK2WhNR9PGASTT7420YHxgTI"),
        DemoUser("admin", "admin-demo-1", ADMIN, "Demo Admin",
                 "$argon2id$v=19$m=65536,t=3,p=4$3ApCDLPaNYU5FTTgZFUW0Q$FD9m6mzrFH31SaUDgzrY+FXkvwuCXFRVykLrskeBxrY"),
        DemoUser("auditor", "audit-demo-1", AUDITOR, "Demo Auditor",
                 "$argon2id$v=19$m=65536,t=3,p=4$2hvFK6Glxl58lRWhnwUajA$hOZw3+Rh1H7y6dvA6SFl1oKRZe05K10pZz7INrqMvAE"),
    ]


def missing_demo_users(session: Session) -> list[DemoUser]:
    """The demo users this database does not have yet."""
    return [user for user in demo_users() if _get(session, user.username) is None]


def _shipped_hash(user: DemoUser) -> str | None:
    """The demo user's shipped hash when it was made with the hasher's current parameters."""
    if not user.password_hash:
        return None
    try:
        return None if HASHER.check_needs_rehash(user.password_hash) else user.password_hash
    except InvalidHashError:
        return None


def hash_demo_passwords(users_: Sequence[DemoUser]) -> dict[str, str]:
    """Username -> argon2 hash of its demo password: the shipped one where it has the hasher's
    parameters, the rest computed side by side (argon2 releases the interpreter lock, so this also
    runs beside other work, e.g. importing the demo orders)."""
    from concurrent.futures import ThreadPoolExecutor

    hashes = {u.username: h for u in users_ if (h := _shipped_hash(u)) is not None}
    todo = [u for u in users_ if u.username not in hashes]
    if todo:
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            hashes.update(zip((u.username for u in todo), pool.map(hash_password, [u.password for u in todo])))
    return hashes


def seed_demo_users(session: Session, password_hashes: Mapping[str, str] | None = None) -> int:
    """Create the demo users that do not exist yet; returns how many were created.

    Their documented passwords contain the user name, so the policy is not applied to them:
    demo databases only. ``password_hashes`` (from :func:`hash_demo_passwords`) saves hashing here.
    """
    missing = missing_demo_users(session)
    hashes = dict(password_hashes or {})
    todo = [user for user in missing if user.username not in hashes]
    if todo:
        hashes.update(hash_demo_passwords(todo))
    for user in missing:
        _add(session, SYSTEM, user.username, user.password, user.role, user.full_name,
             details={"demo": True}, policy=False, password_hash=hashes[user.username])
    return len(missing)


# --- service accounts (the interface feed, scheduled imports) ------------------------------------
#
# A service account signs in with a key file instead of a password: 32 random bytes written to a
# 0600 file on the machine that runs the service; the database keeps only the key's sha256 (a
# random 256-bit key needs no slow hash). It acts with the role "service" (access.SERVICE): it may
# import orders, nothing else, and it is audited under its own name, never as system or admin.

SERVICE_KEY_FORMAT = "radassist-service-key/1"


@dataclass(frozen=True)
class ServiceAccountInfo:
    name: str
    active: bool
    created_at: datetime
    created_by: str
    last_used_at: datetime | None


def _service_info(row: ServiceAccountRow) -> ServiceAccountInfo:
    return ServiceAccountInfo(row.name, bool(row.active), row.created_at, row.created_by, row.last_used_at)


def _key_digest(key: bytes) -> str:
    import hashlib

    return hashlib.sha256(key).hexdigest()


def _service(session: Session, name: str) -> ServiceAccountRow | None:
    return session.scalar(select(ServiceAccountRow).where(ServiceAccountRow.name == name))


def _write_key_file(path, name: str, key: bytes) -> None:
    import json
    import os
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: never overwrite a key file (it may belong to another account)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        raise UserError(f"key file {path} already exists: choose another path") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"format": SERVICE_KEY_FORMAT, "name": name, "key": key.hex()}, fh)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(path)
        raise


def read_key_file(path) -> tuple[str, bytes]:
    """(account name, key) from a service key file; AuthenticationError if it is not one."""
    import json
    import os
    from pathlib import Path

    path = Path(path)
    try:
        if os.stat(path).st_mode & 0o077:
            raise AuthenticationError(f"key file {path} is readable by others: chmod 600 it")
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != SERVICE_KEY_FORMAT:
            raise ValueError("format")
        name, key = str(data["name"]), bytes.fromhex(data["key"])
    except AuthenticationError:
        raise
    except FileNotFoundError:
        raise AuthenticationError(f"no key file at {path}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise AuthenticationError(f"{path} is not a RadAssist service key file") from None
    return name, key


def create_service_account(session: Session, actor: Actor, name: str, key_file) -> ServiceAccountInfo:
    """Add a service account and write its key file (0600; refused if the file exists). Admins only;
    audited ``service.add``. Only the key's sha256 is stored."""
    import secrets

    require(actor, "users.manage")
    name = check_username(name)
    if _service(session, name) is not None:
        raise UserError(f"a service account named {name!r} already exists")
    if _get(session, name) is not None:
        raise UserError(f"a user named {name!r} exists: a service account needs a name of its own")
    key = secrets.token_bytes(32)
    row = ServiceAccountRow(name=name, key_hash=_key_digest(key), active=True, created_at=utcnow(),
                            created_by=actor.username)
    session.add(row)
    session.flush()
    record_event(session, actor, "service.add", entity=f"service:{name}")
    _write_key_file(key_file, name, key)  # last: a failed write rolls the account back
    return _service_info(row)


def list_service_accounts(session: Session, actor: Actor) -> list[ServiceAccountInfo]:
    require(actor, "users.manage")
    return [_service_info(r) for r in session.scalars(select(ServiceAccountRow).order_by(ServiceAccountRow.name))]


def set_service_account_active(session: Session, actor: Actor, name: str, active: bool) -> ServiceAccountInfo:
    """Disable (or re-enable) a service account: its key file stops working. Admins only; audited."""
    require(actor, "users.manage")
    row = _service(session, name)
    if row is None:
        raise UserError(f"no service account named {name!r}")
    row.active = active
    session.flush()
    record_event(session, actor, "service.enable" if active else "service.disable", entity=f"service:{name}")
    return _service_info(row)


def authenticate_service(session: Session, key_file) -> Actor:
    """Sign a service account in with its key file. Returns Actor(name, "service").

    Audited "signin" (success or failure, with the account name; never the key). A wrong key, a
    disabled or unknown account all give the same AuthenticationError.
    """
    import hmac

    name, key = read_key_file(key_file)
    row = _service(session, name) if USERNAME_RE.match(name) else None
    if row is None or not hmac.compare_digest(row.key_hash, _key_digest(key)) or not row.active:
        reason = "unknown service account" if row is None else ("disabled" if row.active is False
                                                                and hmac.compare_digest(row.key_hash, _key_digest(key))
                                                                else "wrong key")
        who = Actor(row.name, SERVICE) if row is not None else Actor("unknown", "unknown")
        record_event(session, who, "signin", entity=f"service:{row.name if row is not None else 'unknown'}",
                     outcome="failure", details={"reason": reason, "method": "key file"})
        session.commit()  # survives the caller's rollback
        raise AuthenticationError("The service key was refused.")
    row.last_used_at = utcnow()
    session.flush()
    actor = Actor(row.name, SERVICE)
    record_event(session, actor, "signin", entity=f"service:{row.name}", details={"method": "key file"})
    return actor
