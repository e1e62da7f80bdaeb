"""A real MLLP listener on 127.0.0.1 (free port): ACKs, kept-open connections, concurrency, garbage."""
from __future__ import annotations

from support import DATA_DIR, REPO, TESTS_DIR  # noqa: F401
import socket
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from radassist.interop.hl7_orders import parse_ack, split_messages
from radassist.interop.mllp import FrameReader, MLLPClient, MLLPListener, frame, parse_hostport
from radassist.interop.receiver import HL7Receiver
from radassist.store.models import OrderRow

DATA = DATA_DIR / "hl7"


def order_message(n: int, control: str = "NW") -> str:
    return (f"MSH|^~\\&|RIS|HOSP|RADASSIST|RAD|20250101120000||ORM^O01|C{n:06d}|P|2.3\r"
            f"PID|1||MRN{n}^^^H^MR||PATIENT^TEST||19600101|F\r"
            f"ORC|{control}|P{n}|F{n}\r"
            f"OBR|1|P{n}|F{n}|CTHEAD^CT head without contrast^L|||||||||headache day {n}|||||ACC{n:06d}\r")


@pytest.fixture
def listener(db):
    seen: list[list[int]] = []
    receiver = HL7Receiver(db, on_orders=seen.append)
    with MLLPListener(receiver.handle_bytes, "127.0.0.1", 0) as server:
        server.seen = seen
        yield server


def _count(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(OrderRow))


def test_messages_on_one_kept_open_connection_are_acked_in_order(db, listener):
    with MLLPClient("127.0.0.1", listener.port, timeout=5) as client:
        for n in range(20):
            code, control = parse_ack(client.send(order_message(n)))
            assert (code, control) == ("AA", f"C{n:06d}")
        # the same order again: a duplicate, still AA
        assert parse_ack(client.send(order_message(3)))[0] == "AA"
    assert _count(db) == 20
    assert len(listener.seen) == 20 and listener.connections == 1


def test_vendor_files_over_mllp(db, listener):
    with MLLPClient("127.0.0.1", listener.port, timeout=5) as client:
        codes = [parse_ack(client.send(text)) for name in ("vendor_a_orm_o01_v23.hl7",
                                                            "vendor_b_omi_o23_v251_two_orders.hl7",
                                                            "vendor_c_sparse_lf_bom.hl7", "mixed_malformed.hl7")
                 for _, text in split_messages((DATA / name).read_bytes())]
    assert codes == [("AA", "MSG00001"), ("AA", "CTL-B-7781"), ("AA", "VAL-0001"),
                     ("AA", "BAD-0"), ("AE", "BAD-1"), ("AE", "BAD-2"), ("AR", "BAD-3")]
    assert _count(db) == 5


def test_ten_concurrent_connections_lose_nothing(db, listener):
    errors = []

    def sender(k: int) -> None:
        try:
            with MLLPClient("127.0.0.1", listener.port, timeout=10) as client:
                for i in range(15):
                    n = k * 1000 + i
                    assert parse_ack(client.send(order_message(n))) == ("AA", f"C{n:06d}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert _count(db) == 150


def test_garbage_split_frames_and_bad_messages_never_stop_the_listener(db, listener):
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as sock:
        reader = FrameReader()

        def replies(n):
            out = []
            while len(out) < n:
                out += reader.feed(sock.recv(65536))
            return [parse_ack(r.decode()) for r in out]

        sock.sendall(b"noise before any frame\r\n")                 # discarded
        sock.sendall(frame(b"\x00\xffnot hl7 at all"))               # AR
        sock.sendall(frame("MSH|^~\\&|R|H|||20250101||ADT^A01|ADT9|P|2.3\rPID|1\r"))  # AR
        data = frame(order_message(1))
        for i in range(0, len(data), 7):                              # one message in 7-byte pieces
            sock.sendall(data[i:i + 7])
            time.sleep(0.001)
        sock.sendall(frame(order_message(2)) + frame(order_message(3)))  # two frames in one packet
        got = replies(5)
    assert [c for c, _ in got] == ["AR", "AR", "AA", "AA", "AA"]
    assert got[1][1] == "ADT9"
    # the listener is still there for a new connection
    with MLLPClient("127.0.0.1", listener.port, timeout=5) as client:
        assert parse_ack(client.send(order_message(4)))[0] == "AA"
    assert _count(db) == 4


def test_oversized_frame_closes_that_connection_only(db, listener, monkeypatch):
    import radassist.interop.mllp as mllp

    monkeypatch.setattr(mllp, "MAX_MESSAGE_BYTES", 10_000)
    monkeypatch.setattr(mllp.FrameReader.__init__, "__defaults__", (10_000,))
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as sock:
        sock.sendall(b"\x0b" + b"A" * 50_000)
        sock.settimeout(5)
        try:
            assert sock.recv(100) == b""       # closed by the listener
        except ConnectionResetError:
            pass
    with MLLPClient("127.0.0.1", listener.port, timeout=5) as client:
        assert parse_ack(client.send(order_message(7)))[0] == "AA"


def test_database_failure_gets_ae_and_listener_carries_on(db, listener, monkeypatch):
    import radassist.interop.receiver as receiver

    def broken(*a, **k):
        raise RuntimeError("disk full")

    with MLLPClient("127.0.0.1", listener.port, timeout=5) as client:
        monkeypatch.setattr(receiver, "apply_order", broken)
        ack = client.send(order_message(1))
        assert parse_ack(ack)[0] == "AE" and "retry" in ack
        monkeypatch.undo()
        assert parse_ack(client.send(order_message(1)))[0] == "AA"
    assert _count(db) == 1


def test_client_reports_a_peer_that_is_down():
    from radassist.interop.mllp import MLLPError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = MLLPClient("127.0.0.1", port, timeout=1)
    with pytest.raises((MLLPError, OSError)):
        client.send(order_message(1))


def test_port_in_use_is_a_clear_error(db):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError):
            MLLPListener(lambda m: b"", "127.0.0.1", port).start()


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:2575", ("127.0.0.1", 2575)), (":3000", ("127.0.0.1", 3000)), ("0.0.0.0", ("0.0.0.0", 2575)),
    ("[::1]:2576", ("::1", 2576)),
])
def test_parse_hostport(text, expected):
    assert parse_hostport(text) == expected
