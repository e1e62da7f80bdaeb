"""`radassist import` authenticates (issue 11 item 6): a user with the import permission or a
service account's key file; audited as that account, never as system/admin. Also `listen` with
a service key."""
import io
import json
import os
import sys

import pytest
from sqlalchemy import func, select

from radassist import audit, users
from radassist.access import SYSTEM
from radassist.cli import main
from radassist.store.models import OrderRow, ServiceAccountRow
from support.mllp import free_port

ORDER = {"accession": "K1", "ordered_exam": "CT HEAD", "clinical_notes": "fall", "age": 70, "sex": "F",
         "priority": "STAT"}


@pytest.fixture
def orders(tmp_path):
    path = tmp_path / "orders.jsonl"
    path.write_text(json.dumps(ORDER) + "\n")
    return path


@pytest.fixture
def feed_key(db, tmp_path):
    path = tmp_path / "keys" / "feed.key"
    with db.session() as s:
        users.create_service_account(s, SYSTEM, "feed", path)
    return path


def _count(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(OrderRow))


def _events(db, action=None):
    with db.session() as s:
        return [e for e in audit.iter_events(s) if action is None or e.action == action]


def test_import_without_an_account_is_refused(db, orders, capsys):
    assert main(["import", str(orders), "--db", str(db.path)]) == 3
    assert "needs an account" in capsys.readouterr().err
    assert _count(db) == 0 and not _events(db, "import")


def test_import_with_a_service_key_is_audited_as_that_account(db, orders, feed_key, capsys):
    assert main(["import", str(orders), "--db", str(db.path), "--key-file", str(feed_key)]) == 0
    assert "1 imported" in capsys.readouterr().out and _count(db) == 1
    [event] = _events(db, "import")
    assert (event.username, event.role) == ("feed", "service")
    [signin] = _events(db, "signin")
    assert (signin.username, signin.outcome) == ("feed", "success")
    with db.session() as s:
        assert audit.verify_chain(s).ok


def test_service_key_file_is_private_and_only_its_hash_is_stored(db, feed_key):
    assert os.stat(feed_key).st_mode & 0o777 == 0o600
    key_hex = json.loads(feed_key.read_text())["key"]
    with db.session() as s:
        row = s.scalar(select(ServiceAccountRow))
    assert row.key_hash != key_hex and key_hex.encode() not in db.path.read_bytes()
    with pytest.raises(users.UserError, match="already exists"):  # never overwrites a key file
        with db.session() as s:
            users.create_service_account(s, SYSTEM, "feed2", feed_key)


@pytest.mark.parametrize("spoil", ["wrong key", "disabled", "world-readable", "not a key file"])
def test_bad_key_files_are_refused_and_audited(db, orders, feed_key, capsys, spoil):
    if spoil == "wrong key":
        data = json.loads(feed_key.read_text())
        data["key"] = "00" * 32
        feed_key.write_text(json.dumps(data))
    elif spoil == "disabled":
        with db.session() as s:
            users.set_service_account_active(s, SYSTEM, "feed", False)
    elif spoil == "world-readable":
        os.chmod(feed_key, 0o644)
    else:
        feed_key.write_text("password123\n")
    assert main(["import", str(orders), "--db", str(db.path), "--key-file", str(feed_key)]) == 3
    err = capsys.readouterr().err
    assert "sign-in refused" in err and "00" * 32 not in err and "password123" not in err
    assert _count(db) == 0 and not _events(db, "import")
    if spoil in ("wrong key", "disabled"):
        [failure] = [e for e in _events(db, "signin") if e.outcome == "failure"]
        assert failure.username == "feed" and failure.details_dict["reason"] == spoil


def test_import_as_a_user_with_a_password_file(db, orders, tmp_path, capsys):
    with db.session() as s:
        users.create_user(s, SYSTEM, "rad1", "Tricky-Lemur-42", "radiologist")
        users.create_user(s, SYSTEM, "aud1", "Quiet-Otter-77", "auditor")
    pw = tmp_path / "pw"
    pw.write_text("Tricky-Lemur-42\n")
    assert main(["import", str(orders), "--db", str(db.path), "--user", "rad1", "--password-file", str(pw)]) == 0
    [event] = _events(db, "import")
    assert (event.username, event.role) == ("rad1", "radiologist")
    pw.write_text("Quiet-Otter-77\n")  # an auditor may not import: refused, and the refusal audited
    assert main(["import", str(orders), "--db", str(db.path), "--user", "aud1", "--password-file", str(pw)]) == 3
    assert "may not order.import" in capsys.readouterr().err
    assert _events(db, "access.refused")[-1].username == "aud1"
    pw.write_text("nope\n")
    assert main(["import", str(orders), "--db", str(db.path), "--user", "rad1", "--password-file", str(pw)]) == 3


def test_users_add_service_command(db, tmp_path, monkeypatch, capsys):
    with db.session() as s:
        users.create_user(s, SYSTEM, "boss", "Grand-Piano-93", "admin")
    key = tmp_path / "svc.key"
    monkeypatch.setattr(sys, "stdin", io.StringIO("Grand-Piano-93\n"))
    assert main(["users", "add-service", "--name", "ris", "--key-file", str(key), "--db", str(db.path),
                 "--as", "boss", "--auth-password-stdin"]) == 0
    assert os.stat(key).st_mode & 0o777 == 0o600
    [added] = _events(db, "service.add")
    assert added.username == "boss" and added.entity == "service:ris"
    monkeypatch.setattr(sys, "stdin", io.StringIO("Grand-Piano-93\n"))
    assert main(["users", "list-services", "--db", str(db.path), "--as", "boss", "--auth-password-stdin"]) == 0
    assert "ris" in capsys.readouterr().out


def test_listen_with_a_key_file_receives_as_that_service_account(db, feed_key):
    from support.mllp import order_message, send_through_cli_listener

    port = free_port()
    send_through_cli_listener(["listen", "--db", str(db.path), "--mllp", f"127.0.0.1:{port}",
                               "--key-file", str(feed_key)], port, order_message(3))
    [received] = _events(db, "order.receive")
    assert (received.username, received.role) == ("feed", "service")


def test_listen_with_a_refused_key_does_not_start(db, feed_key, capsys):
    os.chmod(feed_key, 0o644)
    assert main(["listen", "--db", str(db.path), "--mllp", f"127.0.0.1:{free_port()}", "--key-file",
                 str(feed_key)]) == 3
    assert "sign-in refused" in capsys.readouterr().err
