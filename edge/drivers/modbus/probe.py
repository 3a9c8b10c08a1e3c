"""One-shot reads, writes and unit scans of Modbus devices, for installers on site.

The poller reads what telemetry needs, over and over; this module reads a device
once, all of it, and keeps everything an installer checks a register map against:
the planned requests with their raw answers, and for every point the registers (or
bit) it lives in and the words it came from. What the values mean (engineering
value, label, events) is the same for every protocol and is ``edge.inspection``'s.
This module also writes one writable point (reading it before and after) and finds
which unit ids answer on a bus and which profiles fit them. The driver's ``probe``
and ``scan`` hooks wrap these; ``anju device`` renders what comes back.

Profiles carry no identification register, so a scan suggests a profile for a unit
when every planned read of that profile succeeds there and the values it decodes are
plausible (``implausible_values``). That is evidence, not proof: two models with
the same register layout look alike.

Errors (all ``EdgeError``):

ProbeError               a request that cannot be carried out as asked
├── UnsupportedProfile   the profile or address is not Modbus
└── UnitListError        a unit list such as ``1-10,15`` that cannot be parsed

``PointError`` (edge.errors) refuses an unknown point, a point that is not writable
and a value that does not fit. Device faults arrive as ``DeviceTimeout``,
``DeviceUnreachable``, ``DeviceDisconnected`` and ``DeviceRejected`` from the bus,
naming the bus, unit, table and register.
"""

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from edge.addresses import DeviceAddress
from edge.drivers.contract import Probe, ProbedPoint, ProfileCheck, RawRead, RawValue, ScanHit
from edge.drivers.modbus.bus import MODBUS_PROTOCOLS, ModbusBus
from edge.drivers.modbus.plan import PlannedRead, decode_point, plan_reads
from edge.drivers.modbus.writes import encode_for_write, modbus_address, point_named
from edge.errors import (
    DeviceError,
    DeviceRejected,
    DeviceTimeout,
    DeviceUnreachable,
    EdgeError,
    PointError,
)
from edge.inspection import label_for
from edge.normalise import engineering_value
from schemas.profile import DeviceProfile, Point
from schemas.protocols.modbus import ModbusAddress, ModbusTable, ValueType
from schemas.vocabulary import METRIC_UNITS, Metric

UNIT_IDS = range(1, 248)

# Exception codes a gateway (RTU-to-TCP converter) sends for a unit nobody answers:
# 0x0A "gateway path unavailable", 0x0B "gateway target device failed to respond".
_NOBODY_THERE = frozenset({0x0A, 0x0B})

# Bounds well outside any real reading; a decoded value beyond them means the profile
# reads registers that mean something else on this device.
PLAUSIBLE_RANGES: dict[Metric, tuple[float, float]] = {
    Metric.SMOKE_OBSCURATION: (0.0, 100.0),
    Metric.TEMPERATURE: (-60.0, 200.0),
    Metric.CO: (0.0, 10_000.0),
    Metric.BATTERY: (0.0, 100.0),
    Metric.HEART_RATE: (0.0, 300.0),
    Metric.RR_INTERVAL: (0.0, 5_000.0),
    Metric.PEOPLE_COUNT: (0.0, 100_000.0),
    Metric.RSSI: (-150.0, 20.0),
    Metric.DOOR_OPEN: (0.0, 1.0),
    Metric.DOOR_LOCKED: (0.0, 1.0),
}

# A label map with at least this many entries is taken as the complete list of
# values the point can hold; shorter ones (``{0: locked}``) only name special values.
_COMPLETE_LABELS = 3

_TRUE_WORDS = frozenset({"1", "true", "on", "yes"})
_FALSE_WORDS = frozenset({"0", "false", "off", "no"})


class ProbeError(EdgeError):
    """A request the installer made that cannot be carried out as asked."""


class UnsupportedProfile(ProbeError):
    """The profile or the address speaks a protocol this module cannot probe."""

    def __init__(self, profile_id: str, address: str, problem: str) -> None:
        self.profile_id = profile_id
        self.address = address
        super().__init__(f"profile {profile_id} at {address}: {problem}")


class UnitListError(ProbeError, ValueError):
    """A unit list that cannot be parsed; ``text`` is what was given."""

    def __init__(self, text: str, problem: str) -> None:
        self.text = text
        super().__init__(f"unit list {text!r}: {problem}")


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A write of one point: what it held, what was sent, what it holds afterwards.

    ``written`` holds the register words sent, or one 0/1 for a coil, and
    ``written_text`` the same as ``raw_text`` shows them. ``after`` may differ from the
    requested value (``holds_written`` is then False): a reset register reads back 0,
    and a device may round or clamp.
    """

    profile_id: str
    address: str
    point: str
    requested: float
    written: tuple[int, ...]
    written_text: str
    before: ProbedPoint
    after: ProbedPoint
    holds_written: bool
    elapsed_s: float


def parse_units(text: str) -> list[int]:
    """Unit ids from a list such as ``1-10,15,20-22``: sorted, each once.

    Raises UnitListError naming the part that is not a unit id (1-247) or a range.
    """
    units: set[int] = set()
    for part in (piece.strip() for piece in text.split(",")):
        low_text, dash, high_text = part.partition("-")
        bounds = [low_text.strip(), high_text.strip()] if dash else [low_text.strip()]
        if not all(bound.isdigit() for bound in bounds):
            raise UnitListError(text, f"{part!r} is not a unit id or a range such as 1-10")
        low, high = int(bounds[0]), int(bounds[-1])
        if low > high:
            raise UnitListError(text, f"range {part!r} runs backwards; write {high}-{low}")
        if low < UNIT_IDS.start or high >= UNIT_IDS.stop:
            raise UnitListError(
                text, f"{part!r} is outside unit ids {UNIT_IDS.start}-{UNIT_IDS.stop - 1}"
            )
        units.update(range(low, high + 1))
    return sorted(units)


def implausible_values(profile: DeviceProfile, sample: Mapping[str, RawValue]) -> list[str]:
    """Why ``sample`` does not look like this profile's device; empty if it does.

    A value is implausible when it is a NaN or infinite float, when its metric's value
    falls outside ``PLAUSIBLE_RANGES``, or when the point has a complete label list
    (three or more labels) that does not name it.
    """
    problems: list[str] = []
    for name, raw in sample.items():
        point = profile.point(name)
        if isinstance(raw, float) and not math.isfinite(raw):
            problems.append(f"{name} reads {raw}")
            continue
        value = engineering_value(point, raw)
        bounds = PLAUSIBLE_RANGES.get(point.metric) if point.metric is not None else None
        if bounds is not None and isinstance(value, float) and not bounds[0] <= value <= bounds[1]:
            unit = METRIC_UNITS[point.metric] if point.metric is not None else ""
            problems.append(f"{name} {value:g} {unit} outside {bounds[0]:g} to {bounds[1]:g}")
            continue
        labels = point.labels
        if labels and len(labels) >= _COMPLETE_LABELS and not isinstance(raw, float):
            label = label_for(point, raw)
            if label is None or "unlabelled" in label:
                problems.append(f"{name} {int(raw)} is none of its labelled values")
    return problems


def parse_point_value(profile: DeviceProfile, point_name: str, text: str) -> float:
    """An engineering value for ``point_name`` from what an installer typed.

    Accepts a number, one of the point's labels (``"reset alarm"``), and for coils
    and bits ``on``/``off``, ``true``/``false``, ``1``/``0``. Raises PointError listing
    what the point accepts.
    """
    point = point_named(profile, point_name)
    word = text.strip().lower()
    address = point.address
    if isinstance(address, ModbusAddress) and address.type is ValueType.BOOL:
        if word in _TRUE_WORDS:
            return 1.0
        if word in _FALSE_WORDS:
            return 0.0
        raise PointError(profile.id, point.name, f"{text!r} is not on/off, true/false or 1/0")
    for raw, label in (point.labels or {}).items():
        if label.lower() == word:
            return raw * point.scale + point.offset
    try:
        value = float(text)
    except ValueError:
        labels = ", ".join(repr(label) for label in (point.labels or {}).values())
        accepted = f"a number or one of {labels}" if labels else "a number"
        raise PointError(profile.id, point.name, f"{text!r} is not {accepted}") from None
    if not math.isfinite(value):
        raise PointError(profile.id, point.name, f"{text!r} is not a finite number")
    return value


async def read_device(
    profile: DeviceProfile,
    address: DeviceAddress,
    points: Sequence[Point],
    *,
    timeout_s: float = 1.0,
) -> Probe:
    """Read ``points`` of ``profile`` once at ``address``, with the fewest requests.

    Every request is kept with its answer in hex (bits as 0 or 1), and every point
    with the registers it lives in and the words it came from.

    Raises UnsupportedProfile, and DeviceTimeout, DeviceUnreachable, DeviceDisconnected
    or DeviceRejected naming the bus, unit, table and register.
    """
    _require_modbus(profile, address)
    bus = ModbusBus(address, timeout_s=timeout_s)
    try:
        requests, values = await _read_plan(bus, address.unit, plan_reads(profile, list(points)))
    finally:
        bus.close()
    return Probe(points=tuple(value for value, _ in values), requests=tuple(requests))


async def write_point(
    profile: DeviceProfile,
    address: DeviceAddress,
    point_name: str,
    value: float,
    *,
    timeout_s: float = 1.0,
) -> WriteResult:
    """Write the engineering ``value`` to a writable point, reading it before and after.

    Holding registers are written with function 6 (one register) or 16 (several),
    coils with function 5. Raises PointError before anything is sent if the point
    cannot take the value (see ``encode_for_write``), UnsupportedProfile, and the
    device errors of ``read_device``; a refusal by the device is a DeviceRejected
    with its exception code (3: illegal data value).
    """
    _require_modbus(profile, address)
    words = encode_for_write(profile, point_name, value)
    point = profile.point(point_name)
    modbus = modbus_address(profile, point)
    plan = plan_reads(profile, [point])
    bus = ModbusBus(address, timeout_s=timeout_s)
    started = time.perf_counter()
    try:
        _, [(before, _)] = await _read_plan(bus, address.unit, plan)
        if modbus.table is ModbusTable.COIL:
            await bus.write_coils(modbus.address, [bool(words[0])], address.unit)
        else:
            await bus.write_registers(modbus.address, words, address.unit)
        _, [(after, after_words)] = await _read_plan(bus, address.unit, plan)
    finally:
        bus.close()
    return WriteResult(
        profile_id=profile.id,
        address=str(address),
        point=point.name,
        requested=value,
        written=tuple(words),
        written_text=_words_text(words, modbus.table),
        before=before,
        after=after,
        holds_written=after_words == tuple(words),
        elapsed_s=time.perf_counter() - started,
    )


async def scan_units(
    address: DeviceAddress,
    units: Iterable[int],
    *,
    profiles: Iterable[DeviceProfile] = (),
    timeout_s: float = 0.5,
    on_progress: Callable[[int, ScanHit | None], None] | None = None,
) -> list[ScanHit]:
    """Find the unit ids that answer on the bus of ``address`` and the profiles that fit.

    Each unit gets one read of holding register 0. Registers, or any Modbus exception
    except 0x0A/0x0B (the gateway's "nobody there"), prove a device; a timeout means
    none. Each Modbus profile of ``profiles`` is then tried on every device found (see
    the module docstring), those that fit first. ``on_progress`` is called after each
    unit with the hit, or None. Silent units cost ``timeout_s`` each, so a serial line
    is scanned in about ``len(units) * timeout_s``.

    Raises DeviceUnreachable if the bus itself cannot be reached.
    """
    candidates = [profile for profile in profiles if profile.protocol in MODBUS_PROTOCOLS]
    if address.protocol not in MODBUS_PROTOCOLS:
        raise UnsupportedProfile("(scan)", str(address), "scanning needs a modbus-tcp or -rtu URL")
    probe = PlannedRead(ModbusTable.HOLDING_REGISTER, 0, 1, ())
    bus = ModbusBus(address, timeout_s=timeout_s)
    hits: list[ScanHit] = []
    try:
        for unit in units:
            answer = await _presence(bus, probe, unit)
            hit = None
            if answer is not None:
                checks = [await _check_profile(bus, unit, profile) for profile in candidates]
                checks.sort(key=lambda check: not check.matches)
                hit = ScanHit(str(unit), replace(address, unit=unit), answer, tuple(checks))
                hits.append(hit)
            if on_progress is not None:
                on_progress(unit, hit)
    finally:
        bus.close()
    return hits


async def _presence(bus: ModbusBus, probe: PlannedRead, unit: int) -> str | None:
    """What ``unit`` answered to ``probe``, or None if nobody is there."""
    where = f"{probe.table.code} {probe.start}"
    try:
        block = await bus.read_block(probe, unit)
    except DeviceTimeout:
        return None
    except DeviceRejected as exc:
        if exc.code in _NOBODY_THERE:
            return None
        return f"{where}: {exc.problem}"
    return f"{where} = {_words_text(block, probe.table)}"


async def _check_profile(bus: ModbusBus, unit: int, profile: DeviceProfile) -> ProfileCheck:
    plan = plan_reads(profile)
    sample: dict[str, RawValue] = {}
    for read in plan:
        try:
            block = await bus.read_block(read, unit)
        except DeviceUnreachable:
            raise
        except DeviceError as exc:
            return ProfileCheck(profile.id, False, f"{_request_text(read)}: {exc.problem}")
        sample.update({point.name: decode_point(read, block, point) for point in read.points})
    problems = implausible_values(profile, sample)
    if problems:
        return ProfileCheck(profile.id, False, "; ".join(problems))
    return ProfileCheck(
        profile.id, True, f"all {len(plan)} planned reads succeeded, values plausible"
    )


async def _read_plan(
    bus: ModbusBus, unit: int, plan: list[PlannedRead]
) -> tuple[list[RawRead], list[tuple[ProbedPoint, tuple[int, ...]]]]:
    """The requests of ``plan`` with their answers, and each point with its raw words."""
    requests: list[RawRead] = []
    values: list[tuple[ProbedPoint, tuple[int, ...]]] = []
    for read in plan:
        block = await bus.read_block(read, unit)
        words = tuple(int(word) for word in block)
        names = tuple(point.name for point in read.points)
        requests.append(RawRead(_request_text(read), _words_text(words, read.table), names))
        values.extend(_probed_point(read, block, words, point) for point in read.points)
    return requests, values


def _probed_point(
    read: PlannedRead, block: list[int] | list[bool], words: tuple[int, ...], point: Point
) -> tuple[ProbedPoint, tuple[int, ...]]:
    modbus = point.address_as(ModbusAddress)
    offset = modbus.address - read.start
    width = 1 if read.table.is_bit_table else modbus.type.registers
    raw_words = words[offset : offset + width]
    raw = decode_point(read, block, point)
    probed = ProbedPoint(point.name, raw, _where(modbus), _words_text(raw_words, read.table))
    return probed, raw_words


def _where(address: ModbusAddress) -> str:
    """Where a point lives as a device manual says it: ``IR 10-11 u32``, ``HR 10 bit 3``."""
    text = f"{address.table.code} {address.address}"
    if address.bit is not None:
        return f"{text} bit {address.bit}"
    if address.table.is_bit_table:
        return text
    if address.type.registers > 1:
        text = f"{text}-{address.address + address.type.registers - 1}"
    orders = [
        f"{name} {order}"
        for name, order in (("bytes", address.byte_order), ("words", address.word_order))
        if order != "big"
    ]
    return ", ".join([f"{text} {address.type}", *orders])


def _request_text(read: PlannedRead) -> str:
    return f"{read.table} {read.start}+{read.count}"


def _words_text(words: Iterable[int], table: ModbusTable) -> str:
    """Registers in hex (``0x015E 0x0000``), bits as 0 and 1."""
    if table.is_bit_table:
        return " ".join(str(int(bit)) for bit in words)
    return " ".join(f"0x{word:04X}" for word in words)


def _require_modbus(profile: DeviceProfile, address: DeviceAddress) -> None:
    if profile.protocol not in MODBUS_PROTOCOLS:
        raise UnsupportedProfile(
            profile.id, str(address), f"it speaks {profile.protocol}; only Modbus can be probed"
        )
    if address.protocol not in MODBUS_PROTOCOLS:
        raise UnsupportedProfile(
            profile.id,
            str(address),
            "a Modbus device needs a modbus-tcp://HOST:PORT?unit=N or "
            "modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N&unit=N address",
        )
