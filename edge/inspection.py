"""An installer's view of a device read once: a driver's probe, given meaning by the profile.

A driver's ``probe`` (``edge.drivers.contract``) returns each point's raw value, where
it lives and the data it came from, in its protocol's terms. What the values mean is
the same for every protocol and comes from the profile alone: the engineering value,
rounded to the resolution its scale and offset give; its unit and label; and the
events the profile's rules would raise on that sample. Working that out here, outside
every driver, is what lets ``anju device test`` show a BLE or OSDP device the way it
shows a Modbus one, with no change to the command and nothing repeated per driver.
"""

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from edge.addresses import DeviceAddress
from edge.drivers.contract import Driver, DriverOptions, ProbedPoint, RawRead, RawValue
from edge.normalise import DeviceNormaliser, engineering_value
from schemas.profile import DeviceProfile, Point
from schemas.vocabulary import METRIC_UNITS, Metric
from schemas.wire import Event


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """The device a probe reads, as the driver contract's ``DeviceSpec`` describes one.

    An installer checks all of a device, so ``points`` holds every point of its
    profile: configuration registers and serial numbers too, not only what is polled.
    """

    device_id: str
    profile: DeviceProfile
    address: DeviceAddress
    points: tuple[Point, ...]

    @property
    def interval_s(self) -> float:
        return self.profile.poll_interval_s


@dataclass(frozen=True, slots=True)
class InspectedPoint:
    """One point as read and what it means.

    ``value`` is ``raw * scale + offset`` rounded to the resolution the scale and
    offset give (0.01 for a scale of 0.01), 1.0 or 0.0 for a boolean, and the text
    itself for a text record. ``label`` is the profile's meaning of the raw value,
    flags joined by ", " for a status word.
    """

    name: str
    metric: Metric | None
    unit: str | None
    where: str
    raw_text: str
    raw: RawValue | str
    value: float | str
    label: str | None
    writable: bool


@dataclass(frozen=True, slots=True)
class Inspection:
    """One read of a device: the requests, every point, and the events it would raise."""

    profile_id: str
    address: str
    driver: str
    read_at: datetime
    elapsed_s: float
    requests: tuple[RawRead, ...]
    points: tuple[InspectedPoint, ...]
    events: tuple[Event, ...]


async def inspect_device(
    driver: Driver, profile: DeviceProfile, address: DeviceAddress, options: DriverOptions
) -> Inspection:
    """Read every point of ``profile`` at ``address`` once with ``driver``, and explain it.

    Events are those the profile's rules raise on this sample from a fresh state, as on
    the gateway's first poll: level rules whose condition holds fire; occurrence rules
    with a ``sequence`` never fire on a first read.

    Raises what ``driver.probe`` raises: NotSupported when the driver cannot probe, a
    DeviceError naming the device's address when the device fails.
    """
    target = ProbeTarget(str(address), profile, address, tuple(profile.points))
    read_at = datetime.now(UTC)
    started = time.perf_counter()
    probe = await driver.probe(target, options)
    elapsed_s = time.perf_counter() - started
    _, events = DeviceNormaliser(profile.id, profile).normalise(probe.values, read_at)
    order = {point.name: index for index, point in enumerate(profile.points)}
    probed = sorted(probe.points, key=lambda point: order[point.name])
    return Inspection(
        profile_id=profile.id,
        address=str(address),
        driver=driver.name,
        read_at=read_at,
        elapsed_s=elapsed_s,
        requests=probe.requests,
        points=tuple(inspect_point(profile.point(point.name), point) for point in probed),
        events=tuple(events),
    )


def inspect_point(point: Point, probed: ProbedPoint) -> InspectedPoint:
    """What the raw value of ``probed`` means by the profile's ``point``."""
    raw = probed.raw
    value = engineering_value(point, raw)
    if isinstance(value, float) and not isinstance(raw, float):
        value = round(value, resolution_decimals(point))
    return InspectedPoint(
        name=point.name,
        metric=point.metric,
        unit=METRIC_UNITS[point.metric] if point.metric is not None else None,
        where=probed.where,
        raw_text=probed.raw_text,
        raw=raw,
        value=value,
        label=label_for(point, raw),
        writable=point.writable,
    )


def resolution_decimals(point: Point) -> int:
    """Decimal places that the point's scale and offset give its values (0.01 -> 2)."""
    places = 0
    for number in (point.scale, point.offset):
        exponent = Decimal(repr(number)).normalize().as_tuple().exponent
        if isinstance(exponent, int):
            places = max(places, -exponent)
    return places


def label_for(point: Point, raw: RawValue | str) -> str | None:
    """The profile's meaning of ``raw``, or None if the labels do not name it.

    Labels whose non-zero keys are all powers of two (at least two of them) describe a
    bit field: a value is then named by its set bits, joined by ", ", with any
    unlabelled bits shown in hex. Floats and text have no labels.
    """
    labels = point.labels
    if not labels or isinstance(raw, float | str):
        return None
    key = int(raw)
    if key in labels:
        return labels[key]
    if not _is_bit_field(labels) or key <= 0:
        return None
    flags = [bit for bit in sorted(labels) if bit and key & bit]
    names = [labels[bit] for bit in flags]
    rest = key & ~sum(flags)
    if rest:
        names.append(f"unlabelled bits 0x{rest:X}")
    return ", ".join(names)


def _is_bit_field(labels: Mapping[int, str]) -> bool:
    flags = [key for key in labels if key]
    return len(flags) >= 2 and all(key > 0 and key & (key - 1) == 0 for key in flags)
