"""An HL7 v2 order message builder and a RIS stand-in speaking MLLP on 127.0.0.1."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from radassist.interop.hl7_orders import build_ack, parse_ack, parse_order_message
from radassist.interop.mllp import MLLPClient, MLLPListener
from support import REPO


def order_message(n: int, kind: str = "ORM^O01", version: str = "2.3") -> str:
    return (f"MSH|^~\\&|RIS|HOSP|RADASSIST|RAD|20250101120000||{kind}|C{n:06d}|P|{version}\r"
            f"PID|1||MRN{n}^^^H^MR||PATIENT^TEST||19600101|F\r"
            f"ORC|NW|P{n}|F{n}\r"
            f"OBR|1|P{n}|F{n}|CTHEAD^CT head^L|||||||||headache|||||ACC{n:06d}\r")


class Peer:
    """A RIS stand-in on 127.0.0.1: records what it receives, answers AA (or ``answer``)."""

    def __init__(self, port: int = 0, answer: str = "AA"):
        self.received: list[str] = []
        self.answer = answer
        self.server = MLLPListener(self._handle, "127.0.0.1", port, name="peer").start()
        self.port = self.server.port

    def _handle(self, data: bytes) -> bytes:
        text = data.decode()
        self.received.append(text)
        msg = parse_order_message(text) if "ORM" in text or "OMI" in text else None
        code = self.answer(text) if callable(self.answer) else self.answer
        return build_ack(msg, code).encode()

    def stop(self):
        self.server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send_through_cli_listener(argv: list[str], port: int, message: str) -> None:
    """Run ``radassist <argv>`` (a listener on 127.0.0.1:``port``), send one message, expect AA, then
    stop it with SIGTERM and expect a clean exit (0)."""
    proc = subprocess.Popen([sys.executable, "-m", "radassist.cli", *argv], stderr=subprocess.PIPE, text=True,
                            cwd=str(REPO), env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        line = proc.stderr.readline()
        assert f"127.0.0.1:{port}" in line, line
        with MLLPClient("127.0.0.1", port, timeout=5) as client:
            assert parse_ack(client.send(message))[0] == "AA"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
