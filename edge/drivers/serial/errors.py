"""The serial driver's errors: ``DeviceError``s whose ``kind`` the core counts.

    DeviceError (edge.errors)
    ├── FrameError               a frame skipped, the device still there (``sink.fault``)
    │   ├── NoiseFrame               kind "noise": bytes outside any frame
    │   ├── ChecksumFrame            kind "checksum": a frame whose checksum is wrong
    │   ├── TruncatedFrame           kind "truncated": a frame cut short (or too long)
    │   ├── MalformedFrame           kind "malformed": the wrong number of fields
    │   └── UnknownRecordFrame       kind "unknown_record": a type the profile lacks
    ├── DeviceUnreachable
    │   └── PortUnavailable      the port cannot be opened, with the OS's reason
    ├── DeviceDisconnected
    │   └── PortLost             the port went away while open (unplugged)
    └── NoWrites                 a write to a device that takes none over its line

Each carries the port (``serial:///dev/ttyS1``) as its address; a frame error also
keeps the offending bytes, so a log line shows what arrived.
"""

from typing import ClassVar

from edge.drivers.serial.framing import FaultKind, FrameFault
from edge.errors import DeviceDisconnected, DeviceError, DeviceUnreachable


class FrameError(DeviceError):
    """A frame the reader skipped; ``raw`` is what arrived (at most 64 bytes)."""

    kind: ClassVar[str] = "frame"

    def __init__(self, address: str, problem: str, raw: bytes) -> None:
        self.raw = raw
        super().__init__(address, problem)


class NoiseFrame(FrameError):
    kind = "noise"


class ChecksumFrame(FrameError):
    kind = "checksum"


class TruncatedFrame(FrameError):
    kind = "truncated"


class MalformedFrame(FrameError):
    kind = "malformed"


class UnknownRecordFrame(FrameError):
    kind = "unknown_record"


_BY_KIND: dict[FaultKind, type[FrameError]] = {
    "noise": NoiseFrame,
    "checksum": ChecksumFrame,
    "truncated": TruncatedFrame,
    "malformed": MalformedFrame,
    "unknown_record": UnknownRecordFrame,
}


def frame_error(address: str, fault: FrameFault) -> FrameError:
    """The error that counts ``fault`` under its kind, for the port at ``address``."""
    return _BY_KIND[fault.kind](address, f"{fault.reason}: {fault.raw!r}", fault.raw)


class PortUnavailable(DeviceUnreachable):
    """The port cannot be opened: no such device, no permission, held by another process."""


class PortLost(DeviceDisconnected):
    """The port was open and went away: a USB adapter unplugged, the line closed."""


class NoWrites(DeviceError):
    """A write to a serial device: the driver only listens to what it pushes."""

    kind = "refused"
