"""Fault injection for simulated Modbus devices: the failures an installer meets on a bus.

One :class:`FaultInjector` per served unit (``server.faults(unit)``), so a fault on one
detector leaves the others on the same line answering. A unit has at most one active
fault; setting another replaces it. ``count`` is how many requests the fault affects
before it clears itself; ``None`` keeps it until :meth:`FaultInjector.clear`.

The server applies a fault at two points of pymodbus 3.16, chosen so that the bytes on
the wire are what a faulty device would send:

- the ``SimDevice`` action hook, before the device serves a request: ``drop`` (the
  request is neither applied nor answered), ``delay`` (the answer leaves late),
  ``exception`` (a Modbus exception response; a write is not applied) and the silence
  of a rebooting device;
- the server's ``trace_packet`` hook, on the finished response frame: ``garble``
  corrupts the frame (on RTU a bad CRC, on TCP a PDU cut short), and a silent unit's
  frames are suppressed, so a dead device does not even answer the requests pymodbus
  refuses before the action hook runs (an address outside every register run).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from pymodbus.constants import ExcCodes

__all__ = ["FaultInjector", "FaultKind", "FaultStats", "PowerCycled", "Verdict"]

_EXCEPTION_CODES: Final = {int(code) for code in ExcCodes}


class PowerCycled(Protocol):
    """A device that can lose power: volatile state back to power-on values."""

    def power_cycle(self) -> None: ...


class FaultKind(StrEnum):
    """The fault a unit is currently suffering."""

    DROP = "drop"
    DELAY = "delay"
    GARBLE = "garble"
    EXCEPTION = "exception"
    REBOOT = "reboot"


@dataclass(slots=True)
class FaultStats:
    """What was injected on one unit since the server started (never reset by ``clear``).

    ``requests`` counts the requests that reached the device's action hook, faulty or
    not; the others count requests (or, for ``garbled``, response frames) affected.
    """

    requests: int = 0
    dropped: int = 0
    delayed: int = 0
    garbled: int = 0
    exceptions: int = 0
    reboots: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the server does with one request: serve it (after ``delay_s``), or not."""

    drop: bool = False
    delay_s: float = 0.0
    exception: ExcCodes | None = None


_SERVE: Final = Verdict()
_DROP: Final = Verdict(drop=True)


def _check_count(count: int | None) -> None:
    if count is not None and count < 1:
        raise ValueError(f"count must be >= 1 or None (until cleared), got {count}")


class FaultInjector:
    """The faults of one served unit. Made by the server; get it with ``server.faults(unit)``.

    Every method takes effect on the next request. Raises ``ValueError`` for a count
    below 1, a negative time, or an exception code Modbus does not define.
    """

    def __init__(
        self,
        unit: int,
        device: PowerCycled,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._unit = unit
        self._device = device
        self._clock = clock
        self._kind: FaultKind | None = None
        self._remaining: int | None = None
        self._delay_s = 0.0
        self._code: ExcCodes | None = None
        self._online_at = 0.0
        self._waits: set[asyncio.Future[None]] = set()
        self.stats = FaultStats()

    @property
    def unit(self) -> int:
        """The unit id this injector acts on."""
        return self._unit

    @property
    def active(self) -> FaultKind | None:
        """The fault in force now, or ``None`` (a reboot ends when its device is back)."""
        if self._kind is FaultKind.REBOOT and self._clock() >= self._online_at:
            self.clear()
        return self._kind

    @property
    def silent(self) -> bool:
        """True while the unit sends nothing at all (dropping, or rebooting)."""
        return self.active in (FaultKind.DROP, FaultKind.REBOOT)

    def drop(self, count: int | None = None) -> None:
        """Answer nothing to the next ``count`` requests (``None``: a dead device)."""
        _check_count(count)
        self._set(FaultKind.DROP, count)

    def delay(self, seconds: float, count: int | None = None) -> None:
        """Answer the next ``count`` requests ``seconds`` late (a slow or busy device)."""
        if seconds < 0:
            raise ValueError(f"delay must be >= 0 s, got {seconds}")
        _check_count(count)
        self._set(FaultKind.DELAY, count)
        self._delay_s = seconds

    def garble(self, count: int | None = None) -> None:
        """Corrupt the next ``count`` response frames so that a master must reject them."""
        _check_count(count)
        self._set(FaultKind.GARBLE, count)

    def exception(self, code: int, count: int | None = None) -> None:
        """Answer the next ``count`` requests with Modbus exception ``code`` (writes not applied).

        ``code`` is one Modbus defines: 1-8, 10 or 11 (6 is "server device busy").
        """
        if code not in _EXCEPTION_CODES:
            known = ", ".join(str(c) for c in sorted(_EXCEPTION_CODES))
            raise ValueError(f"unit {self._unit}: no Modbus exception code {code} (known: {known})")
        _check_count(count)
        self._set(FaultKind.EXCEPTION, count)
        self._code = ExcCodes(code)

    def reboot(self, offline_s: float) -> None:
        """Cut the power: state back to power-on values now, silent for ``offline_s``.

        The device's RAM is gone the moment power goes, so its volatile state (a
        latched alarm, a running unlock pulse) is reset at once; settings a real
        device keeps in non-volatile memory survive. Nothing on the wire can tell this
        apart from a reset at the end of the boot, as the device answers nothing until
        ``offline_s`` has passed.
        """
        if offline_s < 0:
            raise ValueError(f"offline_s must be >= 0, got {offline_s}")
        self._set(FaultKind.REBOOT, None)
        self._online_at = self._clock() + offline_s
        self.stats.reboots += 1
        self._device.power_cycle()

    def clear(self) -> None:
        """End any fault: the unit answers normally from the next request on."""
        self._kind = None
        self._remaining = None
        self._code = None
        self._delay_s = 0.0

    def _set(self, kind: FaultKind, count: int | None) -> None:
        self.clear()
        self._kind = kind
        self._remaining = count

    def _consume(self) -> None:
        if self._remaining is not None:
            self._remaining -= 1
            if self._remaining == 0:
                self.clear()

    # -- used by the server ---------------------------------------------------------------

    def on_request(self) -> Verdict:
        """Decide the fate of one request that reached the device (the action hook)."""
        self.stats.requests += 1
        kind = self.active
        if kind is FaultKind.REBOOT:
            self.stats.dropped += 1
            return _DROP
        if kind is FaultKind.DROP:
            self.stats.dropped += 1
            self._consume()
            return _DROP
        if kind is FaultKind.DELAY:
            self.stats.delayed += 1
            verdict = Verdict(delay_s=self._delay_s)
            self._consume()
            return verdict
        if kind is FaultKind.EXCEPTION:
            self.stats.exceptions += 1
            verdict = Verdict(exception=self._code)
            self._consume()
            return verdict
        return _SERVE

    def on_response(self, frame: bytes, garble: Callable[[bytes], bytes]) -> bytes:
        """The frame to send for one response of this unit (the ``trace_packet`` hook).

        A response exists only when the action hook let the request through, or when
        pymodbus answered without calling it; a silent unit swallows the latter too,
        counted as a drop.
        """
        kind = self.active
        if kind in (FaultKind.DROP, FaultKind.REBOOT):
            self.stats.dropped += 1
            if kind is FaultKind.DROP:
                self._consume()
            return b""
        if kind is FaultKind.GARBLE:
            self.stats.garbled += 1
            self._consume()
            return garble(frame)
        return frame

    async def wait(self, seconds: float) -> None:
        """Sleep for a delayed answer; :meth:`cancel_waits` ends it when the server stops."""
        sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
        self._waits.add(sleeper)
        try:
            await sleeper
        finally:
            self._waits.discard(sleeper)

    def cancel_waits(self) -> None:
        """Cancel every delayed answer still waiting (the server is stopping)."""
        for sleeper in list(self._waits):
            sleeper.cancel()
