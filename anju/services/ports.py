"""Loopback TCP ports: finding a free one and waiting until a server listens on it."""

from __future__ import annotations

import socket
import subprocess
import time

__all__ = ["LOOPBACK", "free_port", "wait_for_port"]

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks it, so parallel test runs do not collide; another process
    could still take it before the caller binds it, which is rare enough on a test
    machine that callers simply fail with a clear error if it happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int,
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    interval: float = 0.02,
) -> None:
    """Block until 127.0.0.1:``port`` accepts a TCP connection.

    Raises ``ChildProcessError`` as soon as ``process`` (the server expected to
    listen) has exited, so a server that failed on start-up is reported at once
    rather than after the timeout, and ``TimeoutError`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise ChildProcessError(f"process {process.pid} exited with code {process.returncode}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=interval * 10):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing accepted connections on {LOOPBACK}:{port} in {timeout} s")
        time.sleep(interval)
