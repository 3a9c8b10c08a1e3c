"""One-shot reads, writes and unit scans of Modbus devices, for installers on site.

The poller reads what telemetry needs, over and over; this module reads a device
once, all of it, and keeps everything an installer checks a register map against:
the planned requests, the raw words each point came from, the engineering value,
its label, and the events the profile's rules would raise on that sample. It also
writes one writable point (reading it before and after) and finds which unit ids
answer on a bus and which profiles fit them. No presentation here: ``anju device``
renders what these functions return.

Profiles carry no identification register, so a scan suggests a profile for a unit
when every planned read of that profile succeeds there and the values it decodes are
plausible (``implausible_values``). That is evidence, not proof: two models with
the same register layout look alike.

Errors (all ``EdgeError``):

ProbeError               a request that cannot be carried out as asked
├── UnsupportedProfile   the profile or address is not Modbus
├── PointError           unknown point, point not writable, value that does not fit
└── UnitListError        a unit list such as ``1-10,15`` that cannot be parsed

Device faults arrive as ``DeviceTimeout``, ``DeviceUnreachable`` and
``DeviceRejected`` from ``edge.drivers.modbus``, naming the bus, unit, table and
register.
"""

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from edge.addresses import DeviceAddress
from edge.drivers.modbus import ModbusBus
from edge.errors import DeviceError, DeviceRejected, DeviceTimeout, DeviceUnreachable, EdgeError
from edge.modbus_plan import PlannedRead, RawValue, decode_point, encode_value, plan_reads
from edge.normalise import DeviceNormaliser, engineering_value
from schemas.profile import (
    DeviceProfile,
    ModbusAddress,
    ModbusTable,
    Point,
    ValueType,
)
from schemas.vocabulary import METRIC_UNITS, Metric, Protocol
from schemas.wire import Event

MODBUS_PROTOCOLS = frozenset({Protocol.MODBUS_TCP, Protocol.MODBUS_RTU})
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

_INTEGER_RANGES: dict[ValueType, tuple[int, int]] = {
    ValueType.U16: (0, 0xFFFF),
    ValueType.S16: (-0x8000, 0x7FFF),
    ValueType.U32: (0, 0xFFFF_FFFF),
    ValueType.S32: (-0x8000_0000, 0x7FFF_FFFF),
}

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


class PointError(ProbeError):
    """A point that does not exist, cannot be written, or cannot hold a value."""

    def __init__(self, profile_id: str, point: str, problem: str, *, address: str = "") -> None:
        self.profile_id = profile_id
        self.point = point
        self.address = address
        self.problem = problem
        where = f" at {address}" if address else ""
        super().__init__(f"point {point!r} of {profile_id}{where}: {problem}")


class UnitListError(ProbeError, ValueError):
    """A unit list that cannot be parsed; ``text`` is what was given."""

    def __init__(self, text: str, problem: str) -> None:
        self.text = text
        super().__init__(f"unit list {text!r}: {problem}")


@dataclass(frozen=True, slots=True)
class BlockRead:
    """One planned request and what came back: registers as words, bits as 0 or 1."""

    table: ModbusTable
    start: int
    count: int
    values: tuple[int, ...]
    points: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PointValue:
    """One point as read: where it lives, its raw words or bit, and what they mean.

    ``value`` is ``raw * scale + offset`` rounded to the resolution the scale and
    offset give (0.01 for a scale of 0.01); booleans are 1.0 or 0.0. ``label`` is the
    profile's meaning of the raw value, flags joined by ", " for a status word.
    """

    name: str
    metric: Metric | None
    unit: str | None
    table: ModbusTable
    register: int
    type: ValueType
    raw_words: tuple[int, ...]
    raw: RawValue
    value: float
    label: str | None
    writable: bool


@dataclass(frozen=True, slots=True)
class DeviceReading:
    """One read of a device: the requests, every point, the events it would raise."""

    profile_id: str
    address: str
    unit: int
    read_at: datetime
    reads: tuple[BlockRead, ...]
    points: tuple[PointValue, ...]
    events: tuple[Event, ...]
    elapsed_s: float

    def point(self, name: str) -> PointValue:
        """The point called ``name``; raises KeyError if this reading has none."""
        for point in self.points:
            if point.name == name:
                return point
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A write of one point: what it held, what was sent, what it holds afterwards.

    ``written`` holds the register words sent, or one 0/1 for a coil. ``after`` may
    differ from the requested value: a reset register reads back 0, and a device may
    round or clamp.
    """

    profile_id: str
    address: str
    point: str
    requested: float
    written: tuple[int, ...]
    before: PointValue
    after: PointValue
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class ProfileCheck:
    """Whether one profile's reads succeed at a unit, and why it does or does not fit."""

    profile_id: str
    matches: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ScanHit:
    """A unit that answered the scan, and the profiles tried on it.

    ``answer`` is what the unit said to a read of holding register 0: ``"registers"``,
    or the Modbus exception it replied with (which proves a device just as well).
    """

    unit: int
    answer: str
    checks: tuple[ProfileCheck, ...]

    @property
    def suggestions(self) -> list[str]:
        """Ids of the profiles whose every read succeeded with plausible values."""
        return [check.profile_id for check in self.checks if check.matches]


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


def resolution_decimals(point: Point) -> int:
    """Decimal places that the point's scale and offset give its values (0.01 -> 2)."""
    places = 0
    for number in (point.scale, point.offset):
        exponent = Decimal(repr(number)).normalize().as_tuple().exponent
        if isinstance(exponent, int):
            places = max(places, -exponent)
    return places


def label_for(point: Point, raw: RawValue) -> str | None:
    """The profile's meaning of ``raw``, or None if the labels do not name it.

    Labels whose non-zero keys are all powers of two (at least two of them) describe a
    bit field: a value is then named by its set bits, joined by ", ", with any
    unlabelled bits shown in hex.
    """
    labels = point.labels
    if not labels or isinstance(raw, float):
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
    point = _point(profile, point_name)
    word = text.strip().lower()
    if point.modbus is not None and point.modbus.type is ValueType.BOOL:
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


def encode_for_write(profile: DeviceProfile, point_name: str, value: float) -> list[int]:
    """The register words (or, for a coil, one 0/1) that set ``point_name`` to ``value``.

    Raises PointError when the point is not writable, lives in a read-only table or in
    one bit of a register, or when ``value`` is not a multiple of the point's
    resolution or does not fit its type once scaled.
    """
    point = writable_point(profile, point_name)
    address = _modbus(profile, point)
    if address.table is ModbusTable.COIL:
        if value not in (0.0, 1.0):
            raise PointError(profile.id, point.name, f"a coil holds 0 or 1, not {value:g}")
        return [int(value)]
    if address.type is ValueType.F32:
        try:
            return encode_value(value, point)
        except OverflowError:
            raise PointError(profile.id, point.name, f"{value:g} does not fit a f32") from None
    raw = (value - point.offset) / point.scale
    if abs(raw - round(raw)) > 1e-6 * max(1.0, abs(raw)):
        step = point.scale
        raise PointError(
            profile.id, point.name, f"{value:g} is not a multiple of its resolution {step:g}"
        )
    low, high = _INTEGER_RANGES[address.type]
    if not low <= round(raw) <= high:
        lowest, highest = sorted(bound * point.scale + point.offset for bound in (low, high))
        raise PointError(
            profile.id,
            point.name,
            f"{value:g} does not fit a {address.type} (it takes {lowest:g} to {highest:g})",
        )
    return encode_value(value, point)


def writable_point(profile: DeviceProfile, point_name: str) -> Point:
    """The point called ``point_name`` if a Modbus master can write it.

    Raises PointError naming the point and, for a point that is not writable, the
    points that are.
    """
    point = _point(profile, point_name)
    address = _modbus(profile, point)
    if not point.writable:
        writable = ", ".join(p.name for p in profile.points if p.writable) or "none"
        raise PointError(
            profile.id,
            point.name,
            f"the profile does not mark it writable (writable points: {writable})",
        )
    if address.table not in (ModbusTable.HOLDING_REGISTER, ModbusTable.COIL):
        raise PointError(
            profile.id,
            point.name,
            f"it lives in the {address.table} table, which Modbus cannot write",
        )
    if address.bit is not None:
        raise PointError(
            profile.id,
            point.name,
            f"it is bit {address.bit} of holding register {address.address}; "
            "writing one bit would overwrite the others",
        )
    return point


async def read_device(
    profile: DeviceProfile,
    address: DeviceAddress,
    *,
    points: Sequence[str] | None = None,
    timeout_s: float = 1.0,
) -> DeviceReading:
    """Read every point of ``profile`` (or the named ``points``) once at ``address``.

    Events are those the profile's rules raise on this sample from a fresh state, as
    on the gateway's first poll: level rules whose condition holds fire; occurrence
    rules with a ``sequence`` never fire on a first read.

    Raises UnsupportedProfile, PointError for an unknown point name, and DeviceTimeout,
    DeviceUnreachable or DeviceRejected naming the bus, unit, table and register.
    """
    _require_modbus(profile, address)
    chosen = [_point(profile, name) for name in points] if points is not None else None
    plan = plan_reads(profile, chosen)
    bus = ModbusBus(address, timeout_s=timeout_s)
    read_at = datetime.now(UTC)
    started = time.perf_counter()
    try:
        reads, values = await _read_plan(bus, address.unit, plan)
    finally:
        bus.close()
    elapsed_s = time.perf_counter() - started
    sample = {value.name: value.raw for value in values}
    _, events = DeviceNormaliser(profile.id, profile).normalise(sample, read_at)
    order = {point.name: index for index, point in enumerate(profile.points)}
    return DeviceReading(
        profile_id=profile.id,
        address=str(address),
        unit=address.unit,
        read_at=read_at,
        reads=tuple(reads),
        points=tuple(sorted(values, key=lambda value: order[value.name])),
        events=tuple(events),
        elapsed_s=elapsed_s,
    )


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
    modbus = _modbus(profile, point)
    plan = plan_reads(profile, [point])
    bus = ModbusBus(address, timeout_s=timeout_s)
    started = time.perf_counter()
    try:
        _, (before,) = await _read_plan(bus, address.unit, plan)
        if modbus.table is ModbusTable.COIL:
            await bus.write_coils(modbus.address, [bool(words[0])], address.unit)
        else:
            await bus.write_registers(modbus.address, words, address.unit)
        _, (after,) = await _read_plan(bus, address.unit, plan)
    finally:
        bus.close()
    return WriteResult(
        profile_id=profile.id,
        address=str(address),
        point=point.name,
        requested=value,
        written=tuple(words),
        before=before,
        after=after,
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
    the module docstring). ``on_progress`` is called after each unit with the hit, or
    None. Silent units cost ``timeout_s`` each, so a serial line is scanned in about
    ``len(units) * timeout_s``.

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
                hit = ScanHit(unit, answer, tuple(checks))
                hits.append(hit)
            if on_progress is not None:
                on_progress(unit, hit)
    finally:
        bus.close()
    return hits


async def _presence(bus: ModbusBus, probe: PlannedRead, unit: int) -> str | None:
    try:
        await bus.read(probe, unit)
    except DeviceTimeout:
        return None
    except DeviceRejected as exc:
        if exc.code in _NOBODY_THERE:
            return None
        return exc.problem
    return "registers"


async def _check_profile(bus: ModbusBus, unit: int, profile: DeviceProfile) -> ProfileCheck:
    plan = plan_reads(profile)
    sample: dict[str, RawValue] = {}
    for read in plan:
        try:
            block = await bus.read(read, unit)
        except DeviceUnreachable:
            raise
        except DeviceError as exc:
            where = f"{read.table} {read.start}+{read.count}"
            return ProfileCheck(profile.id, False, f"{where}: {exc.problem}")
        sample.update({point.name: decode_point(read, block, point) for point in read.points})
    problems = implausible_values(profile, sample)
    if problems:
        return ProfileCheck(profile.id, False, "; ".join(problems))
    return ProfileCheck(
        profile.id, True, f"all {len(plan)} planned reads succeeded, values plausible"
    )


async def _read_plan(
    bus: ModbusBus, unit: int, plan: list[PlannedRead]
) -> tuple[list[BlockRead], list[PointValue]]:
    reads: list[BlockRead] = []
    values: list[PointValue] = []
    for read in plan:
        block = await bus.read(read, unit)
        words = tuple(int(word) for word in block)
        reads.append(
            BlockRead(read.table, read.start, read.count, words, tuple(p.name for p in read.points))
        )
        values.extend(_point_value(read, block, words, point) for point in read.points)
    return reads, values


def _point_value(
    read: PlannedRead, block: list[int] | list[bool], words: tuple[int, ...], point: Point
) -> PointValue:
    modbus = point.modbus
    assert modbus is not None, "plan_reads plans only points with a modbus address"
    offset = modbus.address - read.start
    width = 1 if read.table.is_bit_table else modbus.type.registers
    raw = decode_point(read, block, point)
    value = float(engineering_value(point, raw))
    if not isinstance(raw, float):
        value = round(value, resolution_decimals(point))
    return PointValue(
        name=point.name,
        metric=point.metric,
        unit=METRIC_UNITS[point.metric] if point.metric is not None else None,
        table=modbus.table,
        register=modbus.address,
        type=modbus.type,
        raw_words=words[offset : offset + width],
        raw=raw,
        value=value,
        label=label_for(point, raw),
        writable=point.writable,
    )


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


def _point(profile: DeviceProfile, name: str) -> Point:
    try:
        return profile.point(name)
    except KeyError:
        known = ", ".join(point.name for point in profile.points)
        raise PointError(profile.id, name, f"no such point (points: {known})") from None


def _modbus(profile: DeviceProfile, point: Point) -> ModbusAddress:
    if point.modbus is None:
        raise PointError(profile.id, point.name, "it has no Modbus address")
    return point.modbus
