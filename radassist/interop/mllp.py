"""MLLP (HL7 minimal lower layer protocol): an asyncio listener in its own thread, and a client.

Frame: ``<VT> message <FS><CR>``. The listener keeps connections open (senders that send many
messages on one connection are the norm), answers each message before reading the next one on
that connection, and runs the database work on one worker thread so that writers never contend.
A malformed frame or message gets an ACK (AR) or, when there is nothing to answer, is dropped and
logged without its content; the listener carries on.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 2575


def frame(message: str | bytes) -> bytes:
    data = message.encode("utf-8") if isinstance(message, str) else message
    return VT + data + FS + CR


def parse_hostport(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """'HOST:PORT', ':PORT', 'HOST' or '[::1]:PORT' -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    try:
        port_number = int(port) if port else default_port
    except ValueError:
        raise ValueError(f"invalid port in {text!r}") from None
    if not 0 <= port_number <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host or DEFAULT_HOST, port_number


class FrameReader:
    """Splits a byte stream into MLLP frames; bytes outside frames are discarded (and counted)."""

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES):
        self.buffer = bytearray()
        self.max_bytes = max_bytes
        self.discarded = 0

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        out = []
        while True:
            start = self.buffer.find(VT)
            if start < 0:
                self.discarded += len(self.buffer)
                self.buffer.clear()
                break
            if start:
                self.discarded += start
                del self.buffer[:start]
            end = self.buffer.find(FS, 1)
            if end < 0:
                if len(self.buffer) > self.max_bytes:
                    raise ValueError("MLLP frame larger than the limit")
                break
            out.append(bytes(self.buffer[1:end]))
            stop = end + 1
            if self.buffer[stop:stop + 1] == CR:
                stop += 1
            del self.buffer[:stop]
        return out


Handler = Callable[[bytes], bytes | None]


class MLLPListener:
    """An MLLP server on (host, port) in a background thread; ``handler(message) -> ack`` per frame.

    ``port=0`` picks a free port (``self.port`` after ``start``). ``stop()`` closes the server, lets
    the messages in flight finish, and joins the thread.
    """

    def __init__(self, handler: Handler, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 name: str = "mllp"):
        self.handler = handler
        self.host, self.port = host, port
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-db")
        self._writers: set[asyncio.StreamWriter] = set()
        self.messages = 0
        self.connections = 0

    # lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> "MLLPListener":
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-listener", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("MLLP listener did not start")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._client, self.host, self.port, reuse_address=True))
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # port in use, bad address
            self._error = exc
            self._ready.set()
            loop.close()
            return
        log.info("MLLP listener on %s:%d", self.host, self.port)
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def shutdown():
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()
            if self._server is not None:
                try:
                    await asyncio.wait_for(self._server.wait_closed(), timeout)
                except (asyncio.TimeoutError, Exception):
                    pass

        if loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout)
            except Exception:
                pass
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)
        self._executor.shutdown(wait=True)
        self._loop = None

    def __enter__(self) -> "MLLPListener":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # connections -------------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        frames = FrameReader()
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    messages = frames.feed(data)
                except ValueError:
                    log.warning("MLLP frame over %d bytes: connection closed", MAX_MESSAGE_BYTES)
                    break
                for message in messages:
                    try:
                        ack = await loop.run_in_executor(self._executor, self.handler, message)
                    except Exception as exc:  # never let one message stop the listener
                        log.error("MLLP handler failed: %s", type(exc).__name__)
                        ack = None
                    self.messages += 1
                    if ack:
                        writer.write(frame(ack))
                        await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._writers.discard(writer)
            try:
                writer.close()
            except Exception:
                pass


class MLLPError(ConnectionError):
    pass


class MLLPClient:
    """A blocking MLLP sender: one kept-open connection, reconnects when it drops."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.host, self.port, self.timeout = host, port, timeout
        self._sock: socket.socket | None = None
        self._frames = FrameReader()
        self._pending: list[bytes] = []

    def connect(self) -> None:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._frames = FrameReader()
            self._pending = []

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> "MLLPClient":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connected(self) -> socket.socket:
        self.connect()
        assert self._sock is not None  # connect() opened it or raised
        return self._sock

    def send_raw(self, data: bytes) -> None:
        sock = self._connected()
        try:
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise MLLPError(f"send failed: {exc.strerror or type(exc).__name__}") from None

    def receive(self, timeout: float | None = None) -> str:
        """The next framed reply (decoded UTF-8)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise MLLPError("no acknowledgement before the timeout")
            sock = self._sock
            if sock is None:
                raise MLLPError("not connected")
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as exc:
                self.close()
                raise MLLPError(f"receive failed: {exc.strerror or type(exc).__name__}") from None
            if not data:
                self.close()
                raise MLLPError("connection closed by the peer")
            self._pending.extend(self._frames.feed(data))
        return self._pending.pop(0).decode("utf-8", errors="replace")

    def send(self, message: str | bytes, timeout: float | None = None) -> str:
        """Send one message and wait for its acknowledgement."""
        self.send_raw(frame(message))
        return self.receive(timeout)
