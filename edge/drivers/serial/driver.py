"""The serial driver: one bus per port, and the installer's probe (``anju device test``).

A serial record carries no device address, so one port serves one device; two
devices configured on one port are refused at start-up. A serial line has no
addressing to scan either: ``scan`` is not offered.
"""

import asyncio
from collections.abc import Sequence

from edge.addresses import DeviceAddress
from edge.drivers.contract import (
    DeviceSpec,
    Driver,
    DriverOptions,
    Probe,
    ProbedPoint,
    RawRead,
)
from edge.drivers.serial.bus import SerialBus, frame_reader, idle_s, line_baud
from edge.drivers.serial.framing import FrameFault, Record
from edge.drivers.serial.port import SerialPort
from edge.drivers.serial.records import RecordPoints
from edge.errors import ConfigError, DeviceTimeout
from schemas.protocols.serial import SerialAddress
from schemas.vocabulary import Protocol

PROBE_LISTEN_MIN_S = 6.0
"""The least a probe listens: a device may push its periodic record only every 5 s."""


class SerialDriver(Driver):
    name = "serial"
    protocols = frozenset({Protocol.SERIAL})

    def open(
        self, address: DeviceAddress, devices: Sequence[DeviceSpec], options: DriverOptions
    ) -> SerialBus:
        """The bus of the one device on ``address``'s port.

        Raises ConfigError for a section ``drivers.serial`` (the driver takes no
        settings) or for several devices on one port.
        """
        if options.settings:
            key = next(iter(options.settings))
            raise ConfigError(
                "gateway config",
                f"drivers.serial.{key}",
                "the serial driver takes no settings: line settings go in each device's "
                "address (serial:///dev/ttyS1?baud=115200), framing in its profile",
            )
        if len(devices) > 1:
            names = ", ".join(device.device_id for device in devices)
            raise ConfigError(
                "gateway config",
                "devices",
                f"{names} share the serial port {address.path}, but a serial record carries "
                "no device address to tell whose it is: give each device a port of its own",
            )
        return SerialBus(devices[0])

    async def probe(self, device: DeviceSpec, options: DriverOptions) -> Probe:
        """Listen on the device's port until a record of each type its points come
        from has arrived, or for ``options.timeout_s`` (at least ``PROBE_LISTEN_MIN_S``).

        Each point shows the last record that carried it; ``requests`` list every frame
        heard, skipped ones too, with why. Raises PortUnavailable when the port cannot
        be opened, PortLost when it goes, DeviceTimeout when no record arrived.
        """
        listen_s = max(options.timeout_s, PROBE_LISTEN_MIN_S)
        reader = frame_reader(device)
        wanted = {point.address_as(SerialAddress).record for point in device.points}
        last: dict[str, Record] = {}
        heard: list[RawRead] = []
        skipped: list[FrameFault] = []
        points = RecordPoints(device.profile)
        baud = line_baud(device)
        quiet_s = idle_s(device.address, baud)
        with SerialPort(device.address, baud=baud) as port:
            try:
                async with asyncio.timeout(listen_s):
                    fed = False
                    while not wanted <= last.keys():
                        try:
                            async with asyncio.timeout(quiet_s if fed else None):
                                items, fed = reader.feed(await port.read()), True
                        except TimeoutError:  # the line went quiet: a false start ends
                            items, fed = reader.expire(), False
                        for item in items:
                            if isinstance(item, FrameFault):
                                skipped.append(item)
                                heard.append(
                                    RawRead("skipped", f"{frame_text(item.raw)} ({item.reason})")
                                )
                                continue
                            last[item.type] = item
                            names = tuple(points.sample(item))
                            heard.append(RawRead("heard", frame_text(item.raw), names))
            except TimeoutError:
                pass
        if not last:
            raise DeviceTimeout(port.name, _silence(listen_s, skipped))
        return Probe(_probed(device, last, points), tuple(heard))


def _probed(
    device: DeviceSpec, last: dict[str, Record], points: RecordPoints
) -> tuple[ProbedPoint, ...]:
    probed: list[ProbedPoint] = []
    for point in device.points:
        record = last.get(point.address_as(SerialAddress).record)
        if record is None:
            continue
        values = points.sample(record)
        if point.name in values:
            where = points.where(point.name)
            probed.append(
                ProbedPoint(point.name, values[point.name], where, frame_text(record.raw))
            )
    return tuple(probed)


def _silence(listen_s: float, skipped: list[FrameFault]) -> str:
    if not skipped:
        return (
            f"no record heard in {listen_s:g} s: is the device powered and sending, its TX "
            "wired to the gateway's RX, and the baud rate right? (--timeout listens longer)"
        )
    kinds = ", ".join(sorted({fault.kind for fault in skipped}))
    return (
        f"no valid record in {listen_s:g} s, {len(skipped)} frame(s) skipped ({kinds}), the "
        f"first: {skipped[0].reason}. Check the baud rate, parity and bits, and that the "
        "profile fits the device"
    )


def frame_text(raw: bytes) -> str:
    """A frame as an installer reads it: its text without the line ending when it is
    printable ASCII, else its bytes in hex."""
    body = raw.rstrip(b"\r\n")
    if body and all(0x20 <= byte < 0x7F for byte in body):
        return body.decode("ascii")
    return raw.hex(" ")
