"""A helper process of RadAssist's own: a new interpreter that serves one parent over a socket pair.

Used where work must not hold the caller's interpreter lock: the app's suggestion engine
(`engine_process`) and MLflow tracking during a training run (`tracking.observer_process`).

- Not multiprocessing's spawn: that re-imports the parent's ``__main__`` in the child (a script without
  an ``if __name__ == "__main__"`` guard would start the app again). The child runs ``python -c`` with the
  socket's descriptor, gets the parent's ``sys.path`` first (tests, plugins; the package root is also on
  its ``PYTHONPATH``), then a pickled ``serve(conn, payload)`` to run.
- It runs at a lower CPU priority (``nice``) and exits within a second when its parent is gone.
- POSIX only (the descriptor is inherited): `supported()`.
"""
from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any


def supported() -> bool:
    """Whether helper processes work here (POSIX: the socket is passed by descriptor)."""
    return os.name == "posix"


def start_child(serve: Callable[[Connection, Any], None], payload: Any, *, nice: int = 0
                ) -> tuple[subprocess.Popen, Connection]:
    """A new interpreter running ``serve(conn, payload)``; returns it and our end of the socket."""
    import radassist

    package_root = str(Path(radassist.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    ours, theirs = socket.socketpair()
    try:
        code = "from radassist.child_process import child_main; child_main()"
        process = subprocess.Popen([sys.executable, "-c", code, str(theirs.fileno())], env=env,
                                   pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    conn = Connection(ours.detach())
    try:
        conn.send((list(sys.path), os.getpid(), nice))
        conn.send_bytes(pickle.dumps((serve, payload)))
    except BaseException:
        process.kill()
        conn.close()
        raise
    return process, conn


def describe(exc: BaseException) -> tuple[str, str]:
    """An exception as (type name, first line of its message): what crosses to the parent."""
    text = str(exc).strip()
    return type(exc).__name__, text.splitlines()[0] if text else ""


def _exit_when_orphaned(parent_pid: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(0)


def child_main() -> None:
    """The helper's entry point (``python -c ...`` with the socket's descriptor)."""
    conn = Connection(int(sys.argv[1]))
    sys_path, parent_pid, nice = conn.recv()
    sys.path[:] = [p for p in sys_path if p] + [p for p in sys.path if p not in sys_path]
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    if nice:
        try:
            os.nice(nice)  # the parent's own threads get a core first whenever both want one
        except (AttributeError, OSError):  # not allowed
            pass
    try:
        serve, payload = pickle.loads(conn.recv_bytes())  # imports their modules, with the parent's path
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", *describe(exc)))
        return
    serve(conn, payload)


__all__ = ["child_main", "describe", "start_child", "supported"]
