"""A pair of connected pseudo-terminals with stable names: the serial line of RTU tests.

``os.openpty()`` names only one end; socat (``pty,raw,echo=0,link=A pty,raw,echo=0,
link=B``) gives both ends a path, so a simulator serves on ``a`` and a master polls on
``b`` exactly as on two ends of an RS-485 line. A pty ignores the baud rate.

Typical use::

    with PtyPair() as line:
        async with ModbusRtuSimServer({3: detector}, path=line.a):
            ...  # AsyncModbusSerialClient(line.b, ...)
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from firmware_sim import PtyError

__all__ = ["DEFAULT_START_TIMEOUT_S", "PtyPair"]

#: How long socat may take to create both pseudo-terminals.
DEFAULT_START_TIMEOUT_S: Final = 5.0

_POLL_S: Final = 0.01
_STOP_TIMEOUT_S: Final = 5.0


class PtyPair:
    """A socat process joining two pseudo-terminals, linked as ``a`` and ``b``.

    The links live in a temporary directory of their own (or ``directory``), removed
    on :meth:`stop`. Not reusable once stopped.
    """

    def __init__(
        self,
        *,
        directory: Path | None = None,
        timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self._directory = directory
        self._timeout_s = timeout_s
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._a: Path | None = None
        self._b: Path | None = None

    @property
    def a(self) -> str:
        """Path of one end (serve here). Raises ``PtyError`` unless started."""
        return str(self._running_path(self._a))

    @property
    def b(self) -> str:
        """Path of the other end (poll here). Raises ``PtyError`` unless started."""
        return str(self._running_path(self._b))

    def _running_path(self, path: Path | None) -> Path:
        if path is None or self._process is None:
            raise PtyError("the pseudo-terminal pair is not running")
        return path

    def start(self) -> None:
        """Start socat and return once both links exist.

        Raises ``PtyError`` if socat is not installed, exits early, or has not created
        both links within the timeout (socat is then stopped).
        """
        if self._process is not None:
            raise PtyError("the pseudo-terminal pair is already running")
        socat = shutil.which("socat")
        if socat is None:
            raise PtyError("socat is not installed; install it with: apt-get install socat")
        if self._directory is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="anju-pty-")
            where = Path(self._tempdir.name)
        else:
            where = self._directory
        a, b = where / "ttyA", where / "ttyB"
        # socat's log goes to an unnamed file, not a pipe: nobody reads it past
        # start-up, and a full or closed pipe would stall or kill the line.
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(
                [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            deadline = time.monotonic() + self._timeout_s
            while not (a.exists() and b.exists()):
                if process.poll() is not None:
                    log.seek(0)
                    said = log.read().decode(errors="replace").strip()[-500:]
                    self._cleanup()
                    raise PtyError(
                        f"socat exited with status {process.returncode} before creating "
                        f"{a} and {b}: {said}"
                    )
                if time.monotonic() > deadline:
                    self._terminate(process)
                    self._cleanup()
                    raise PtyError(f"socat did not create {a} and {b} within {self._timeout_s} s")
                time.sleep(_POLL_S)
        self._process, self._a, self._b = process, a, b

    def stop(self) -> None:
        """Stop socat and remove the links; idempotent."""
        process, self._process = self._process, None
        if process is not None:
            self._terminate(process)
        self._cleanup()

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes]) -> None:
        process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=_STOP_TIMEOUT_S)

    def _cleanup(self) -> None:
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
