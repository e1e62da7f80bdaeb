"""An HL7 v2 order message builder and a RIS stand-in speaking MLLP on 127.0.0.1."""
from __future__ import annotations

from radassist.interop.hl7_orders import build_ack, parse_order_message
from radassist.interop.mllp import MLLPListener


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
