"""The types of the driver contract (the package docstring says how they fit together).

Everything here is protocol-neutral: a driver turns bytes on its transport into a
``Sample`` (raw values by point name) and a write of an engineering value into bytes,
and reports failures as ``DeviceError``s whose ``kind`` the core counts.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Protocol

from edge.addresses import DeviceAddress
from edge.errors import DeviceError, EdgeError
from schemas.profile import DeviceProfile, Point

RawValue = int | float | bool
"""One decoded value before scale and offset; text records carry ``str`` instead."""

Sample = Mapping[str, RawValue | str]
"""The raw values of one read or one pushed record of a device, by point name."""


class DeviceSpec(Protocol):
    """A configured device as its driver sees it: who, what model, where, what to read."""

    @property
    def device_id(self) -> str: ...

    @property
    def profile(self) -> DeviceProfile: ...

    @property
    def address(self) -> DeviceAddress: ...

    @property
    def points(self) -> Sequence[Point]:
        """The points a routine read returns (a polled driver may plan its requests once)."""

    @property
    def interval_s(self) -> float:
        """How often the device is read: the config's poll_interval_s, else the profile's
        (a streaming driver reads a band's read points this often)."""


@dataclass(frozen=True, slots=True)
class DriverOptions:
    """Settings every driver takes from the gateway config."""

    timeout_s: float = 1.0
    """How long one request may wait for its answer."""
    settings: Mapping[str, object] = field(default_factory=dict)
    """The driver's own section of the gateway config (``drivers.ble``), validated by
    the driver, which raises ConfigError naming the key at fault."""


class DriverUnavailable(EdgeError):
    """A driver that cannot run on this gateway (no adapter, no port, a missing library).

    The agent reports it once at start-up and in ``/metrics`` and keeps every other
    device running; its devices are offline with ``reason``, which names the protocol.
    """

    def __init__(self, protocol: str, reason: str) -> None:
        self.protocol = protocol
        self.reason = reason
        super().__init__(reason)


class NotSupported(EdgeError):
    """An optional installer hook (scan, probe) that a driver does not offer."""

    def __init__(self, driver: str, hook: str) -> None:
        self.driver = driver
        self.hook = hook
        super().__init__(f"the {driver} driver cannot {hook}")


class PolledBus(ABC):
    """Devices read on the core's schedule; the bus serialises its own requests."""

    name: str
    """What the devices share (``tcp://host:port``, ``modbus-rtu:///dev/ttyUSB0``)."""

    @abstractmethod
    async def read(self, device: DeviceSpec) -> Sample:
        """Read ``device.points`` once; raises a DeviceError naming the device's address."""

    @abstractmethod
    async def write(self, device: DeviceSpec, point: Point, value: float) -> None:
        """Write an engineering ``value`` to a writable point; raises a DeviceError."""

    def close(self) -> None:  # noqa: B027 - most buses hold something to release, not all
        """Release the transport; the bus may be used again and reopens it."""


class StreamSink(Protocol):
    """Where a streaming bus delivers what arrives; the core implements it.

    Calls never block and never raise: the core normalises, counts and spools.
    """

    def sample(self, device_id: str, values: Sample, ts: datetime) -> None:
        """A record, notification or reply from a device, with its receive time."""

    def online(self, device_id: str, ts: datetime) -> None:
        """The device is heard again (in range, reconnected, answering polls)."""

    def offline(self, device_id: str, error: DeviceError, ts: datetime) -> None:
        """The device is gone for now; ``error`` says why and is counted by its kind."""

    def fault(self, device_id: str, error: DeviceError) -> None:
        """Something was wrong (a bad frame, a checksum) but the device is still there."""


class StreamingBus(ABC):
    """Devices that push (notifications, advertisements, serial frames, replies)."""

    name: str

    @abstractmethod
    async def run(self, sink: StreamSink, stop: asyncio.Event) -> None:
        """Deliver to ``sink`` until ``stop`` is set, reconnecting on its own meanwhile."""

    @abstractmethod
    async def write(self, device: DeviceSpec, point: Point, value: float) -> None:
        """Write an engineering ``value`` to a writable point; raises a DeviceError."""

    def close(self) -> None:  # noqa: B027 - see PolledBus.close
        """Release the transport."""


Bus = PolledBus | StreamingBus


@dataclass(frozen=True, slots=True)
class RawRead:
    """One request of a probe and what came back, for an installer to see (``--raw``)."""

    request: str
    """What was asked, in the protocol's terms (``input_register 0+5``)."""
    response: str
    """What came back, rendered (``0x0001 0x00FA``)."""
    points: tuple[str, ...] = ()
    """The points decoded from this answer."""


@dataclass(frozen=True, slots=True)
class ProbedPoint:
    """One point of a probe as the device holds it, before the profile gives it meaning.

    ``where`` and ``raw_text`` let an installer check a device's manual against what
    was read; the engineering value, unit, label and events are the same for every
    protocol and come from the profile (``edge.inspection``), not from the driver.
    """

    name: str
    raw: RawValue | str
    where: str
    """Where the point lives on the device, in the protocol's terms (``IR 10-11 u32``,
    ``characteristic 2a37``)."""
    raw_text: str
    """The data it was decoded from, rendered (``0x1234 0x5678``)."""


@dataclass(frozen=True, slots=True)
class Probe:
    """A device read once, raw, with where each value came from: ``anju device test``."""

    points: tuple[ProbedPoint, ...]
    requests: tuple[RawRead, ...] = ()
    """Every request sent and its answer, in the order they went out."""

    @property
    def values(self) -> Sample:
        """The raw values by point name, as a routine read would return them."""
        return {point.name: point.raw for point in self.points}


@dataclass(frozen=True, slots=True)
class ProfileCheck:
    """Whether one profile fits a device a scan found, and why it does or does not."""

    profile_id: str
    matches: bool
    reason: str
    """What the check found (``input_register 0+5: Modbus exception 2 ...``)."""


@dataclass(frozen=True, slots=True)
class ScanHit:
    """A device found by a scan, with the profiles tried on it."""

    candidate: str
    """The candidate that answered, as ``Driver.candidates`` named it (``3``)."""
    address: DeviceAddress
    """The device's own address, ready for ``anju device test --address``."""
    detail: str
    """What answered, in the protocol's terms (``HR 0 = 0x0001``)."""
    checks: tuple[ProfileCheck, ...] = ()

    @property
    def suggestions(self) -> list[str]:
        """Ids of the profiles whose check passed."""
        return [check.profile_id for check in self.checks if check.matches]


ScanProgress = Callable[[str, ScanHit | None], None]
"""Called for every candidate a scan tries (its name) with what it found there, if any."""


@dataclass(frozen=True, slots=True)
class ScanTerms:
    """How a driver's scan reads to an installer (``anju device scan``), in its words.

    The command is the same for every protocol; these make its progress, its table and
    its advice speak of unit ids or MAC addresses rather than of "candidates".
    """

    candidate: str = "candidate"
    """One thing a scan tries (``unit``)."""
    candidates: str = "candidates"
    """Several of them (``units``)."""
    basis: str = "a profile is suggested when the driver's check of it passes"
    """How the scan decides which profiles to suggest, and how far to trust that."""
    silence: str = "Check that the devices are powered and within reach."
    """What to check when nothing answered."""
    outcome: str = "{found} of {tried} {candidates} answered on {bus}"
    """The result's headline, formatted with ``found``, ``tried``, ``candidates``, ``bus``."""


class Driver(ABC):
    """One protocol family's plug-in: opens buses, and optionally scans and probes.

    Registered with ``edge.drivers.registry``; the agent finds it by a profile's
    protocol and never imports the driver's package itself.
    """

    name: ClassVar[str]
    protocols: ClassVar[frozenset[str]]
    """The address schemes and profile protocols this driver serves."""
    scan_terms: ClassVar[ScanTerms] = ScanTerms()
    """How ``anju device scan`` words this driver's scan; a driver that scans sets its own."""
    scan_needs_address: ClassVar[bool] = True
    """Whether a scan needs a bus address (a Modbus line does; the air around a BLE
    adapter does not)."""

    @abstractmethod
    def open(
        self, address: DeviceAddress, devices: Sequence[DeviceSpec], options: DriverOptions
    ) -> Bus:
        """A bus for the devices that share ``address.bus``; connects lazily.

        Raises DriverUnavailable when it cannot run on this gateway at all.
        """

    async def probe(self, device: DeviceSpec, options: DriverOptions) -> Probe:
        """Read ``device.points`` once, recording every request; raises DeviceError."""
        raise NotSupported(self.name, "probe a device")

    def candidates(self, text: str) -> list[str]:
        """Where a scan should look, from what the installer typed in the driver's terms
        (Modbus unit ids ``1-20,31``), or everywhere it can when ``text`` is empty.

        Raises EdgeError saying what is wrong with ``text``.
        """
        raise NotSupported(self.name, "scan")

    async def scan(
        self,
        address: DeviceAddress,
        candidates: Sequence[str],
        profiles: Sequence[DeviceProfile],
        options: DriverOptions,
        progress: ScanProgress,
    ) -> list[ScanHit]:
        """Look for devices at ``candidates`` on ``address``'s bus, suggesting which of
        ``profiles`` each could be; ``progress`` hears of every candidate tried."""
        raise NotSupported(self.name, "scan")
