"""Users service: hashing, sign-in, lockout, roles enforced in the core services, CLI."""
from __future__ import annotations

from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from radassist import audit, users
from radassist.access import ADMIN, AUDITOR, RADIOLOGIST, Actor, PermissionDenied
from radassist.store.models import UserRow, utcnow




@pytest.fixture
def people(db):
    with db.session() as s:
        users.bootstrap_admin(s, "boss", "Chief-Key-81")
        boss = Actor("boss", ADMIN)
        users.create_user(s, boss, "rad", "Reader-Key-82", RADIOLOGIST, "Dr Rad")
        users.create_user(s, boss, "aud", "Checker-Key-83", AUDITOR)
    return {"admin": boss, "radiologist": Actor("rad", RADIOLOGIST), "auditor": Actor("aud", AUDITOR)}


def events(db, action=None):
    with db.session() as s:
        return audit.query_events(s, action=action)


def test_password_is_hashed_with_argon2id_and_never_stored_or_audited(db, people):
    with db.session() as s:
        row = s.scalar(select(UserRow).where(UserRow.username == "rad"))
        assert row.password_hash.startswith("$argon2id$")
        assert "Reader-Key-82" not in row.password_hash
        texts = " ".join(e.details + e.entity for e in audit.query_events(s))
    assert "pass-1" not in texts


@pytest.mark.real_hasher
def test_shipped_hasher_is_memory_hard_argon2id(db):
    """What production stores: argon2id with at least RFC 9106's second recommended parameter set
    (t=3, 64 MiB), whatever cheaper parameters the other tests swap in."""
    from argon2 import Type, extract_parameters

    with db.session() as s:
        users.create_user(s, Actor("setup", ADMIN), "realhash", "Slow-Enough-Key-7", ADMIN)
        stored = s.scalar(select(UserRow.password_hash).where(UserRow.username == "realhash"))
        assert users.authenticate(s, "realhash", "Slow-Enough-Key-7").username == "realhash"
    params = extract_parameters(stored)
    assert params.type is Type.ID and params.time_cost >= 3 and params.memory_cost >= 64 * 1024


def test_authenticate_success_returns_actor_and_audits(db, people):
    with db.session() as s:
        actor = users.authenticate(s, "rad", "Reader-Key-82")
    assert actor == Actor("rad", RADIOLOGIST)
    ev = events(db, "signin")[-1]
    assert (ev.username, ev.role, ev.outcome) == ("rad", RADIOLOGIST, "success")


def test_wrong_password_and_unknown_user_give_the_same_message(db, people):
    with pytest.raises(users.AuthenticationError) as wrong:
        with db.session() as s:
            users.authenticate(s, "rad", "not-the-password")
    with pytest.raises(users.AuthenticationError) as unknown:
        with db.session() as s:
            users.authenticate(s, "nobody", "not-the-password")
    assert str(wrong.value) == str(unknown.value)
    assert "not-the-password" not in str(wrong.value)
    failures = [e for e in events(db, "signin") if e.outcome == "failure"]
    assert [e.username for e in failures] == ["rad", "unknown"]
    assert all("not-the-password" not in e.details for e in failures)


def test_text_typed_as_unknown_username_is_not_stored(db, people):
    """A password typed into the username field must not land in the audit log."""
    with pytest.raises(users.AuthenticationError):
        with db.session() as s:
            users.authenticate(s, "Sup3rSecret!pw", "x")
    failure = events(db, "signin")[-1]
    assert failure.username == "unknown" and failure.entity == "user:unknown"
    # issue 11: not even a digest (a 12-hex SHA-256 prefix fell to a dictionary in 0.02 s)
    assert "Sup3rSecret" not in failure.details and "sha256" not in failure.details
    assert failure.details_dict == {"reason": "unknown user"}
    import hashlib

    for n in (8, 12, 16, 64):
        assert hashlib.sha256(b"Sup3rSecret!pw").hexdigest()[:n] not in repr(events(db))


def test_failed_attempts_survive_the_callers_rollback(db, people):
    for _ in range(2):
        with pytest.raises(users.AuthenticationError):
            with db.session() as s:  # the exception rolls this transaction back
                users.authenticate(s, "rad", "bad-password")
    with db.session() as s:
        assert s.scalar(select(UserRow.failed_attempts).where(UserRow.username == "rad")) == 2


def test_five_failures_lock_the_account_and_admin_unlocks(db, people):
    for i in range(4):
        with pytest.raises(users.AuthenticationError) as exc:
            with db.session() as s:
                users.authenticate(s, "rad", f"bad-password-{i}")
        assert not isinstance(exc.value, users.AccountLocked)
    with pytest.raises(users.AccountLocked):
        with db.session() as s:
            users.authenticate(s, "rad", "bad-password-5")
    # Locked: even the right password is refused.
    with pytest.raises(users.AccountLocked) as locked:
        with db.session() as s:
            users.authenticate(s, "rad", "Reader-Key-82")
    assert "locked" in str(locked.value).lower()
    assert events(db, "user.lockout")
    # Only an admin can unlock.
    with pytest.raises(PermissionDenied):
        with db.session() as s:
            users.unlock_user(s, people["auditor"], "rad")
    with db.session() as s:
        users.unlock_user(s, people["admin"], "rad")
    with db.session() as s:
        assert users.authenticate(s, "rad", "Reader-Key-82").username == "rad"
    assert events(db, "user.unlock")[-1].username == "boss"


def test_lock_expires_after_the_configured_time(db, people):
    for _ in range(5):
        with pytest.raises(users.AuthenticationError):
            with db.session() as s:
                users.authenticate(s, "rad", "bad-password", lockout_minutes=1)
    with db.session() as s:
        row = s.scalar(select(UserRow).where(UserRow.username == "rad"))
        assert timedelta(seconds=50) < row.locked_until - utcnow() <= timedelta(minutes=1)
        row.locked_until = utcnow() - timedelta(seconds=1)  # time passes
    with db.session() as s:
        assert users.authenticate(s, "rad", "Reader-Key-82").username == "rad"


def test_success_resets_the_failure_counter(db, people):
    for _ in range(4):
        with pytest.raises(users.AuthenticationError):
            with db.session() as s:
                users.authenticate(s, "rad", "bad-password")
    with db.session() as s:
        users.authenticate(s, "rad", "Reader-Key-82")
    for _ in range(4):  # four more failures do not lock: the counter started again
        with pytest.raises(users.AuthenticationError) as exc:
            with db.session() as s:
                users.authenticate(s, "rad", "bad-password")
        assert not isinstance(exc.value, users.AccountLocked)


def test_disabled_user_cannot_sign_in(db, people):
    with db.session() as s:
        users.disable_user(s, people["admin"], "rad")
    with pytest.raises(users.AuthenticationError) as exc:
        with db.session() as s:
            users.authenticate(s, "rad", "Reader-Key-82")
    assert str(exc.value) == str(users.AuthenticationError())
    assert events(db, "user.disable")


def test_last_admin_cannot_be_disabled(db, people):
    with pytest.raises(users.UserError):
        with db.session() as s:
            users.disable_user(s, people["admin"], "boss")


def test_password_policy(db, people):
    with pytest.raises(users.PasswordPolicyError):
        with db.session() as s:
            users.create_user(s, people["admin"], "short", "1234567", RADIOLOGIST)
    with pytest.raises(users.PasswordPolicyError):
        with db.session() as s:
            users.create_user(s, people["admin"], "samename", "samename", RADIOLOGIST)
    with pytest.raises(users.UserError):
        with db.session() as s:
            users.create_user(s, people["admin"], "rad", "another-pass", RADIOLOGIST)
    with pytest.raises(users.UserError):
        with db.session() as s:
            users.create_user(s, people["admin"], "x", "another-pass", "superuser")


@pytest.mark.parametrize("password", ["password", "12345678", "aaaaaaaa", "Password1", "PASSWORD2024!",
                                      "qwertyuiop", "1qaz2wsx", "iloveyou1", "Football1987!", "87654321",
                                      "abcabcabc", "11111111", "P@ssw0rd", "letmein123", "radiology2025"])
def test_common_passwords_are_refused(db, people, password):
    """Issue 11: the policy was length only (`password`, `12345678`, `aaaaaaaa` were accepted)."""
    with pytest.raises(users.PasswordPolicyError, match="too common") as info, db.session() as s:
        users.create_user(s, people["admin"], "newbie", password, RADIOLOGIST)
    assert password == "password" or password not in str(info.value)
    with pytest.raises(users.PasswordPolicyError, match="too common"), db.session() as s:
        users.set_password(s, people["admin"], "aud", password)


@pytest.mark.parametrize("password", ["drsmith-2025", "xx-DrSmith-xx", "DRSMITH1", "DrSmith-Rules"])
def test_passwords_equal_to_or_containing_the_username_are_refused(db, people, password):
    with pytest.raises(users.PasswordPolicyError, match="username"), db.session() as s:
        users.create_user(s, people["admin"], "drsmith", password, RADIOLOGIST)


def test_reasonable_passwords_are_accepted(db, people):
    with db.session() as s:
        for i, password in enumerate(("Correct-Horse-42!", "Tulip-Harbor-93", "mauve ladder quietly")):
            users.create_user(s, people["admin"], f"user{i}", password, RADIOLOGIST)


def test_the_shipped_common_password_list(tmp_path):
    """At least 10,000 entries of 8+ characters, lower case, and exactly what the generator makes."""
    import subprocess
    import sys

    common = users.common_passwords()
    assert sum(len(p) >= 8 for p in common) >= 10_000
    assert all(p == p.lower() and p.strip() == p for p in common)
    gen = users.COMMON_PASSWORDS_FILE.parent / "make_common_passwords.py"
    check = subprocess.run([sys.executable, str(gen), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


def test_bootstrap_only_on_an_empty_database(db):
    with db.session() as s:
        assert users.needs_bootstrap(s)
        users.bootstrap_admin(s, "first", "Alpha-Key-85")
    with pytest.raises(users.UserError):
        with db.session() as s:
            users.bootstrap_admin(s, "second", "Beta-Key-86")
    with db.session() as s:
        assert users.authenticate(s, "first", "Alpha-Key-85").role == ADMIN


def test_set_password_own_and_by_admin(db, people):
    rad = people["radiologist"]
    with pytest.raises(users.AuthenticationError):
        with db.session() as s:
            users.set_password(s, rad, "rad", "new-pass-123", current_password="wrong-one")
    with db.session() as s:
        users.set_password(s, rad, "rad", "new-pass-123", current_password="Reader-Key-82")
    with pytest.raises(PermissionDenied):
        with db.session() as s:
            users.set_password(s, rad, "aud", "new-pass-123")
    with db.session() as s:
        users.set_password(s, people["admin"], "rad", "admin-set-pass")
        assert users.authenticate(s, "rad", "admin-set-pass").username == "rad"
    assert len([e for e in events(db, "user.passwd") if e.outcome == "success"]) == 2


def test_rehash_when_parameters_change(db, people, monkeypatch):
    monkeypatch.setattr(users, "HASHER", PasswordHasher(time_cost=2, memory_cost=64, parallelism=1))
    with db.session() as s:
        users.authenticate(s, "rad", "Reader-Key-82")
        h = s.scalar(select(UserRow.password_hash).where(UserRow.username == "rad"))
    assert "t=2" in h


def test_idle_lock_and_unlock_are_audited(db, people):
    rad = people["radiologist"]
    with db.session() as s:
        users.lock_session(s, rad)
    with pytest.raises(users.AuthenticationError):
        with db.session() as s:
            users.unlock_session(s, rad, "bad-password")
    with db.session() as s:
        assert users.unlock_session(s, rad, "Reader-Key-82") == rad
        users.sign_out(s, rad)
    actions = [(e.action, e.outcome) for e in events(db) if e.username == "rad"]
    assert actions[-4:] == [("session.lock", "success"), ("session.unlock", "failure"),
                            ("session.unlock", "success"), ("signout", "success")]


def test_demo_users_one_per_role_and_documented_passwords_work(db):
    with db.session() as s:
        assert users.seed_demo_users(s) == 3
        assert users.seed_demo_users(s) == 0
    assert {u.role for u in users.demo_users()} == {RADIOLOGIST, ADMIN, AUDITOR}
    with db.session() as s:
        for u in users.demo_users():
            assert users.authenticate(s, u.username, u.password).role == u.role


@pytest.mark.real_hasher
def test_shipped_demo_hashes_have_the_shipped_parameters_and_sign_in(db, monkeypatch):
    """A new demo database takes the shipped hashes (no hashing at start) and they sign in; with other
    hasher parameters (a change of policy) they are not used: the passwords are hashed afresh."""
    from argon2 import PasswordHasher

    for u in users.demo_users():
        assert u.password_hash and not users.HASHER.check_needs_rehash(u.password_hash)
        assert users.HASHER.verify(u.password_hash, u.password)
    assert users.hash_demo_passwords(users.demo_users()) == {u.username: u.password_hash for u in users.demo_users()}
    with db.session() as s:
        users.seed_demo_users(s)
    with db.session() as s:
        assert users.authenticate(s, "rad", "rad-demo-1").role == RADIOLOGIST
    stronger = PasswordHasher(time_cost=4, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(users, "HASHER", stronger)
    fresh = users.hash_demo_passwords(users.demo_users()[:1])
    assert fresh["rad"] != users.demo_users()[0].password_hash and stronger.verify(fresh["rad"], "rad-demo-1")


# --- each role's allowed and refused actions on the core services ---------------------------

def _decide(db, actor):
    from radassist.store.models import OrderRow, ProtocolRow
    from radassist.worklist import DecisionInput, record_decision

    with db.session() as s:
        code = s.scalar(select(ProtocolRow.code).limit(1))
        order = OrderRow(accession=f"ACC-{actor.username}", ordered_exam="CT head", clinical_notes="",
                         age=50, sex="F", priority="ROUTINE")
        s.add(order)
        s.flush()
        record_decision(s, actor, DecisionInput(order_id=order.id, final_code=code))


def _save_settings(db, actor):
    from dataclasses import replace

    from radassist.settings import load_settings, save_settings

    with db.session() as s:
        save_settings(s, actor, replace(load_settings(s), idle_lock_minutes=12))


def _manage_users(db, actor):
    with db.session() as s:
        users.create_user(s, actor, f"new-{actor.username}", "new-user-pass", RADIOLOGIST)


def _export(db, actor, tmp_path):
    with db.session() as s:
        audit.export_events(s, actor, "csv", tmp_path / f"{actor.username}.csv")


ALLOWED = {
    "radiologist": {"decide"},
    "auditor": {"export"},
    "admin": {"decide", "settings", "users", "export"},
}


@pytest.mark.parametrize("role", ["radiologist", "auditor", "admin"])
def test_role_permissions_enforced_in_core_services(db, people, role, tmp_path):
    actor = people[role]
    actions = {
        "decide": lambda: _decide(db, actor),
        "settings": lambda: _save_settings(db, actor),
        "users": lambda: _manage_users(db, actor),
        "export": lambda: _export(db, actor, tmp_path),
    }
    for name, run in actions.items():
        if name in ALLOWED[role]:
            run()
        else:
            with pytest.raises(PermissionDenied):
                run()
    with db.session() as s:
        assert audit.verify_chain(s).ok


# --- CLI ----------------------------------------------------------------------------------

def _cli(monkeypatch, capsys, stdin_text, *argv):
    import io

    from radassist.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin_text))
    rc = main(list(argv))
    return rc, capsys.readouterr()


def test_cli_users_flow(tmp_path, monkeypatch, capsys):
    dbp = str(tmp_path / "cli.db")
    rc, out = _cli(monkeypatch, capsys, "", "users", "add", "rad", "--role", "radiologist", "--password-stdin",
                   "--db", dbp)
    assert rc == 2 and "first user must be an admin" in out.err
    assert _cli(monkeypatch, capsys, "Chief-Key-81\n", "users", "add", "boss", "--role", "admin",
                "--password-stdin", "--db", dbp)[0] == 0
    # Afterwards, adding needs an admin's credentials.
    rc, out = _cli(monkeypatch, capsys, "Reader-Key-821\n", "users", "add", "rad", "--role", "radiologist",
                   "--password-stdin", "--db", dbp)
    assert rc != 0 and "--as" in out.err + str(rc)
    rc, _ = _cli(monkeypatch, capsys, "Chief-Key-81\nReader-Key-821\n", "users", "add", "rad", "--role",
                 "radiologist", "--as", "boss", "--auth-password-stdin", "--password-stdin", "--db", dbp)
    assert rc == 0
    rc, out = _cli(monkeypatch, capsys, "wrong-pass\n", "users", "list", "--as", "boss",
                   "--auth-password-stdin", "--db", dbp)
    assert rc == 3 and "wrong-pass" not in out.err
    rc, out = _cli(monkeypatch, capsys, "Reader-Key-821\n", "users", "list", "--as", "rad",
                   "--auth-password-stdin", "--db", dbp)
    assert rc == 3  # a radiologist is refused
    rc, out = _cli(monkeypatch, capsys, "Reader-Key-821\nReader-Key-922\n", "users", "passwd", "rad",
                   "--auth-password-stdin", "--password-stdin", "--db", dbp)
    assert rc == 0
    rc, out = _cli(monkeypatch, capsys, "Chief-Key-81\n", "users", "disable", "rad", "--as", "boss",
                   "--auth-password-stdin", "--db", dbp)
    assert rc == 0
    rc, out = _cli(monkeypatch, capsys, "Chief-Key-81\n", "users", "list", "--as", "boss",
                   "--auth-password-stdin", "--db", dbp)
    assert rc == 0 and "rad" in out.out and "disabled" in out.out
    rc, out = _cli(monkeypatch, capsys, "Chief-Key-81\n", "users", "unlock", "rad", "--as", "boss",
                   "--auth-password-stdin", "--db", dbp)
    assert rc == 0


# --- service accounts (issue 11 item 6): key file, hash only, role "service" ---------------------

def test_service_account_signs_in_with_its_key_file_and_may_only_import(db, people, tmp_path):
    from radassist.access import SERVICE, require

    key = tmp_path / "feed.key"
    with db.session() as s:
        users.create_service_account(s, people["admin"], "feed", key)
    with db.session() as s:
        actor = users.authenticate_service(s, key)
    assert actor == Actor("feed", SERVICE)
    require(actor, "order.import")
    for permission in ("order.view", "order.decide", "users.manage", "audit.export", "settings.change"):
        with pytest.raises(PermissionDenied):
            require(actor, permission)
    assert [e.username for e in events(db, "signin")][-1] == "feed"
    assert [e.username for e in events(db, "service.add")] == ["boss"]


def test_only_admins_add_service_accounts_and_names_stay_distinct(db, people, tmp_path):
    with pytest.raises(PermissionDenied), db.session() as s:
        users.create_service_account(s, people["radiologist"], "feed", tmp_path / "a.key")
    assert not (tmp_path / "a.key").exists()
    with pytest.raises(users.UserError, match="user named"), db.session() as s:
        users.create_service_account(s, people["admin"], "rad", tmp_path / "b.key")
    assert not (tmp_path / "b.key").exists()
    assert [e.outcome for e in events(db, "access.refused")] == ["refused"]


def test_disabled_service_account_key_stops_working(db, people, tmp_path):
    key = tmp_path / "feed.key"
    with db.session() as s:
        users.create_service_account(s, people["admin"], "feed", key)
        users.set_service_account_active(s, people["admin"], "feed", False)
    with pytest.raises(users.AuthenticationError), db.session() as s:
        users.authenticate_service(s, key)
    [failure] = [e for e in events(db, "signin") if e.outcome == "failure"]
    assert failure.username == "feed" and failure.details_dict["reason"] == "disabled"
    assert key.read_text() not in str(events(db))
