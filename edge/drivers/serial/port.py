"""One serial port, opened with an address's line settings and read by the event loop.

pyserial sets the line up (baud, parity, data and stop bits) and takes an exclusive
lock on it, so a second process (an installer's ``anju device test`` while the agent
runs) is refused rather than stealing half the bytes. The reads are the event loop's
own: the port's descriptor is watched with ``loop.add_reader``, so a gateway with
many ports runs no thread per port.

An unplugged device shows in one of three ways, and each ends ``read`` with
``PortLost``: a read that fails (EIO), a port ready to read that yields no data (a
USB adapter gone, a pseudo-terminal whose other end closed), or, noticed while the
line is quiet, its path gone or naming another device (plugged in again elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from types import TracebackType
from typing import Final, Self

import serial

from edge.addresses import DeviceAddress
from edge.drivers.serial.errors import PortLost, PortUnavailable

CHUNK: Final = 4096
"""Most bytes taken from the port per read."""
CHECK_S: Final = 1.0
"""How long the line may be quiet before the port's path is checked."""

_PARITY: Final = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
_STOPBITS: Final = {1: serial.STOPBITS_ONE, 2: serial.STOPBITS_TWO}


class SerialPort:
    """The port at ``address.path``; ``open`` it, ``read`` until ``PortLost``, ``close``.

    ``baud`` is the rate the line is set to (the bus's ``line_baud``: the address's
    ``baud=``, else the profile's); parity and bits are the address's. Not reusable
    across devices, but may be opened again after ``close``.
    """

    def __init__(self, address: DeviceAddress, *, baud: int) -> None:
        self.address = address
        self.baud = baud
        self.name = address.bus
        """The port as errors name it: ``serial:///dev/ttyUSB0``."""
        self._line: serial.Serial | None = None
        self._device = 0
        """The device number the path named when opened, to notice it replaced."""
        self._waiting: asyncio.Future[None] | None = None

    @property
    def is_open(self) -> bool:
        return self._line is not None

    def open(self) -> None:
        """Open the port raw at ``baud`` with the address's line settings; raises
        PortUnavailable.

        Synchronous: opening a tty with O_NONBLOCK and setting its line does not wait.
        """
        if self._line is not None:
            return
        line = serial.Serial()
        line.port = self.address.path
        line.baudrate = self.baud
        line.parity = _PARITY[self.address.parity]
        line.bytesize = self.address.bytesize
        line.stopbits = _STOPBITS[self.address.stopbits]
        line.exclusive = True
        try:
            line.open()
            fd = line.fileno()
            os.set_blocking(fd, False)
            self._device = os.fstat(fd).st_rdev
        except (serial.SerialException, OSError, ValueError) as exc:
            with contextlib.suppress(OSError, serial.SerialException):
                line.close()
            raise PortUnavailable(self.name, _open_problem(self.address.path, exc)) from None
        self._line = line

    async def read(self) -> bytes:
        """The bytes that have arrived, waiting for at least one; raises PortLost.

        Cancelling it loses nothing: bytes are taken from the port only when returned.
        """
        while True:
            fd = self._fd()
            # pyserial leaves VMIN at 0, so a read of an idle port returns no data rather
            # than EAGAIN: only after the port says it is readable does empty mean gone.
            if not await self._readable(fd):
                self._check_path()
                continue
            fd = self._fd()
            try:
                data = os.read(fd, CHUNK)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise PortLost(self.name, f"reading failed: {exc.strerror} (unplugged?)") from None
            if not data:
                raise PortLost(
                    self.name,
                    "ready to read but no data came: the device was unplugged or its line closed",
                )
            return data

    def close(self) -> None:
        """Release the port; a ``read`` waiting on it ends with PortLost. Never raises."""
        line, self._line = self._line, None
        if line is None:
            return
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.done():
            waiting.get_loop().remove_reader(line.fileno())
            waiting.set_result(None)
        with contextlib.suppress(OSError, serial.SerialException):
            line.close()

    def _fd(self) -> int:
        if self._line is None:
            raise PortLost(self.name, "the port was closed")
        fd: int = self._line.fileno()
        return fd

    async def _readable(self, fd: int) -> bool:
        """Whether the port became readable (or hung up) within ``CHECK_S``."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        self._waiting = ready
        loop.add_reader(fd, _settle, ready)
        try:
            async with asyncio.timeout(CHECK_S):
                await ready
        except TimeoutError:
            return False
        finally:
            if self._waiting is ready:
                self._waiting = None
                loop.remove_reader(fd)
        return True

    def _check_path(self) -> None:
        path = self.address.path
        try:
            device = os.stat(path).st_rdev
        except OSError as exc:
            raise PortLost(self.name, f"{path} is gone ({exc.strerror}): unplugged?") from None
        if device != self._device:
            raise PortLost(self.name, f"{path} now names another device: plugged in again?")

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _open_problem(path: str, exc: BaseException) -> str:
    """Why ``path`` did not open, in the OS's words where it gave some."""
    number = getattr(exc, "errno", None)
    if number in (errno.EAGAIN, errno.EWOULDBLOCK) and "lock" in str(exc):
        return f"cannot open {path}: another process holds it (the agent, or anju device test)"
    if isinstance(number, int) and number:
        return f"cannot open {path}: {os.strerror(number)}"
    return f"cannot open {path}: {exc}"
