"""Device profiles (docs/design.md section 5): one declarative YAML file per device model.

A profile keeps the protocol's addressing (register, GATT characteristic, serial
record field) apart from the neutral description of a point (metric, scale, offset,
writable), as EdgeX device profiles do, so a new model on a known protocol is a new
file and no new code. The JSON Schema in ``schemas/json/device_profile.schema.json``
is generated from these models for editors and outside tools; Anju itself validates
with the models, whose errors name the field.
"""

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.errors import ProfileError
from schemas.vocabulary import DeviceKind, EventType, Metric, Protocol
from schemas.wire import EventData

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
ProfileId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{2,63}$")]
Uuid = Annotated[
    str,
    Field(
        pattern=r"^([0-9a-f]{4}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$",
        description="A 16-bit SIG-assigned UUID as 4 hex digits, or a full 128-bit UUID.",
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class ByteOrder(StrEnum):
    BIG = "big"
    LITTLE = "little"


class ValueType(StrEnum):
    BOOL = "bool"
    U16 = "u16"
    S16 = "s16"
    U32 = "u32"
    S32 = "s32"
    F32 = "f32"

    @property
    def registers(self) -> int:
        """How many 16-bit registers a value of this type spans."""
        return 2 if self in (ValueType.U32, ValueType.S32, ValueType.F32) else 1


class ModbusTable(StrEnum):
    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    INPUT_REGISTER = "input_register"
    HOLDING_REGISTER = "holding_register"

    @property
    def is_bit_table(self) -> bool:
        return self in (ModbusTable.COIL, ModbusTable.DISCRETE_INPUT)


class ModbusAddress(_Strict):
    """Where a point lives on a Modbus device (zero-based PDU address, as on the wire)."""

    table: ModbusTable
    address: Annotated[int, Field(ge=0, le=65535)]
    type: ValueType = ValueType.U16
    byte_order: ByteOrder = ByteOrder.BIG
    word_order: ByteOrder = ByteOrder.BIG
    bit: Annotated[int, Field(ge=0, le=15)] | None = Field(
        default=None, description="Take one bit of a 16-bit register as a boolean."
    )

    @model_validator(mode="after")
    def _type_fits_table(self) -> Self:
        if self.table.is_bit_table and self.type is not ValueType.BOOL:
            raise ValueError(f"a {self.table} point holds one bit: type must be bool")
        if not self.table.is_bit_table and self.type is ValueType.BOOL and self.bit is None:
            raise ValueError("a bool in a register table needs 'bit' (0-15)")
        if self.bit is not None and self.type not in (ValueType.BOOL, ValueType.U16):
            raise ValueError("'bit' applies to a u16 register read as bool")
        return self


class BleDecoder(StrEnum):
    """Decoders for GATT characteristic values, each written from its specification."""

    HEART_RATE_MEASUREMENT = "heart_rate_measurement"
    UINT8 = "uint8"
    UINT16_LE = "uint16_le"
    SINT16_LE = "sint16_le"
    UINT32_LE = "uint32_le"


class BleAccess(StrEnum):
    READ = "read"
    NOTIFY = "notify"


class BleAddress(_Strict):
    """Where a point lives on a BLE device: a GATT characteristic and how to decode it."""

    service: Uuid
    characteristic: Uuid
    access: BleAccess
    decoder: BleDecoder
    field: str | None = Field(
        default=None,
        description="For decoders that yield several values (heart_rate_measurement: "
        "'bpm', 'rr_interval_ms', 'sensor_contact'), which one this point takes.",
    )


class SerialAddress(_Strict):
    """Where a point lives in a serial record: the record type and the field name."""

    record: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{1,7}$")]
    field: Name


class Point(_Strict):
    """One value a device reports, with its neutral meaning and its protocol address.

    A point without a metric is read only for event rules (a status bit field, an
    event code) and is not sent as telemetry. Values become ``raw * scale + offset``.
    """

    name: Name
    metric: Metric | None = None
    scale: float = 1.0
    offset: float = 0.0
    deadband: Annotated[float, Field(ge=0)] = 0.0
    writable: bool = False
    labels: dict[int, str] | None = Field(
        default=None, description="Meaning of enumerated raw values, for people."
    )
    modbus: ModbusAddress | None = None
    ble: BleAddress | None = None
    serial: SerialAddress | None = None


class Condition(_Strict):
    """When an event rule holds: exactly one of bit, above, below, equals.

    ``for_s`` delays a level rule until its condition has held that long without a
    break, so a door contact open past its limit becomes ``door.held_open`` on a
    controller that has no held-open bit of its own.
    """

    bit: Annotated[int, Field(ge=0, le=31)] | None = None
    above: float | None = None
    below: float | None = None
    equals: int | str | None = None
    for_s: Annotated[float, Field(gt=0, le=86400)] | None = Field(
        default=None,
        description="Level rules only: the condition must hold this long, by the "
        "timestamps of consecutive reads, before the event fires.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in ("bit", "above", "below", "equals") if getattr(self, k) is not None]
        if len(given) != 1:
            found = ", ".join(given) or "none"
            raise ValueError(f"give exactly one of bit, above, below, equals (found {found})")
        return self


class EventRule(_Strict):
    """Turns a point's value into an event.

    ``level`` rules fire when the condition starts to hold (or, with ``when.for_s``,
    once it has held that long) and, with ``clear``, emit the clear event when it
    stops (a smoke alarm bit). ``occurrence`` rules fire on
    every record that matches (a camera box reporting an intrusion); on a polled
    device, whose last record is read again at every poll, ``sequence`` names the
    counter that tells a new record from one already seen.
    """

    type: EventType
    point: Name
    when: Condition
    mode: Literal["level", "occurrence"] = "level"
    clear: EventType | None = None
    data: dict[Name, Name] = Field(
        default_factory=dict,
        description="Event data fields filled from other points of the same read, "
        "e.g. {zone: zone}.",
    )
    sequence: Name | None = Field(
        default=None,
        description="Occurrence rules on polled devices: a point that advances with "
        "each new record (an event counter); the rule fires once per change of it.",
    )

    @model_validator(mode="after")
    def _clear_needs_level(self) -> Self:
        if self.clear is not None and self.mode == "occurrence":
            raise ValueError("'clear' applies to level rules only")
        if self.sequence is not None and self.mode == "level":
            raise ValueError("'sequence' applies to occurrence rules only")
        if self.when.for_s is not None and self.mode == "occurrence":
            raise ValueError("'when.for_s' applies to level rules only")
        return self


class ActionName(StrEnum):
    """Things the gateway can make a device do, named the same for every model."""

    UNLOCK = "unlock"
    RELOCK = "relock"
    FIRE_RELEASE = "fire_release"
    RESET_ALARM = "reset_alarm"


class Action(_Strict):
    """How a model performs an action: write ``value`` to a writable point.

    ``repeat_s`` is for actions that must hold (a fire release on a controller whose
    unlock pulse runs out): the gateway writes again at that period for as long as
    the action should last.
    """

    point: Name
    value: float
    repeat_s: Annotated[float, Field(gt=0, le=3600)] | None = None


class ModbusSettings(_Strict):
    """Limits of a Modbus device, used to plan the fewest reads per poll."""

    max_registers_per_read: Annotated[int, Field(ge=1, le=125)] = 125
    max_bits_per_read: Annotated[int, Field(ge=1, le=2000)] = 2000
    max_gap: Annotated[int, Field(ge=0, le=125)] = Field(
        default=0, description="Unused addresses a single read may span to join two points."
    )
    default_unit: Annotated[int, Field(ge=0, le=247)] = 1


class BleSettings(_Strict):
    advertised_services: list[Uuid] = Field(default_factory=list)
    name_prefix: str | None = None


class SerialFraming(_Strict):
    """A line-oriented record: ``{start}{TYPE}{sep}{field}...[*{checksum}]{terminator}``."""

    start: str = "$"
    separator: str = ","
    terminator: str = "\r\n"
    checksum: Literal["none", "xor8"] = "xor8"


class SerialSettings(_Strict):
    baud: Annotated[int, Field(ge=300, le=4_000_000)] = 115200
    framing: SerialFraming = SerialFraming()
    records: dict[Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{1,7}$")], list[Name]] = Field(
        description="Field names of each record type, in order after the type."
    )


_FAMILY = {
    Protocol.MODBUS_RTU: "modbus",
    Protocol.MODBUS_TCP: "modbus",
    Protocol.BLE: "ble",
    Protocol.SERIAL: "serial",
}


class DeviceProfile(_Strict):
    """A device model: what kind it is, how to talk to it, what it reports."""

    id: ProfileId
    kind: DeviceKind
    protocol: Protocol
    manufacturer: str
    model: str
    description: str = ""
    poll_interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    heartbeat_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        default=300.0,
        description="A reading that stays within its deadband is still sent this often, "
        "so the cloud can tell a steady value from a silent device.",
    )
    modbus: ModbusSettings | None = None
    ble: BleSettings | None = None
    serial: SerialSettings | None = None
    points: Annotated[list[Point], Field(min_length=1)]
    events: list[EventRule] = Field(default_factory=list)
    actions: dict[ActionName, Action] = Field(
        default_factory=dict,
        description="Writes that perform the gateway's actions (unlock, fire release, ...).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        family = _FAMILY.get(self.protocol)
        if family is None:
            raise ValueError(f"protocol {self.protocol} has no point addressing yet")
        if family == "serial" and self.serial is None:
            raise ValueError("a serial profile needs a 'serial' section with its records")
        names: set[str] = set()
        metrics: dict[Metric, str] = {}
        for index, point in enumerate(self.points):
            if point.name in names:
                raise ValueError(f"points[{index}]: duplicate point name {point.name!r}")
            names.add(point.name)
            if point.metric is not None and point.metric in metrics:
                raise ValueError(
                    f"points[{index}] ({point.name}): metric {point.metric} is already "
                    f"reported by {metrics[point.metric]!r}; a reading is identified by its "
                    "device and metric, so give each channel a device of its own"
                )
            if point.metric is not None:
                metrics[point.metric] = point.name
            given = [f for f in ("modbus", "ble", "serial") if getattr(point, f) is not None]
            if given != [family]:
                raise ValueError(
                    f"points[{index}] ({point.name}): a {self.protocol} profile addresses "
                    f"points with '{family}' (found {given or 'none'})"
                )
            if point.serial is not None and self.serial is not None:
                fields = self.serial.records.get(point.serial.record)
                if fields is None or point.serial.field not in fields:
                    raise ValueError(
                        f"points[{index}] ({point.name}): record {point.serial.record} "
                        f"has no field {point.serial.field!r} in serial.records"
                    )
        for index, rule in enumerate(self.events):
            unknown = set(rule.data) - set(EventData.__struct_fields__)
            if unknown:
                raise ValueError(
                    f"events[{index}] ({rule.type}): data has no field {sorted(unknown)}; "
                    f"event data fields are {', '.join(EventData.__struct_fields__)}"
                )
            for ref in (rule.point, *rule.data.values(), *filter(None, [rule.sequence])):
                if ref not in names:
                    raise ValueError(f"events[{index}] ({rule.type}): no point named {ref!r}")
        for name, action in self.actions.items():
            target = next((p for p in self.points if p.name == action.point), None)
            if target is None or not target.writable:
                problem = "is not writable" if target else "does not exist"
                raise ValueError(f"actions.{name}: point {action.point!r} {problem}")
        return self

    def point(self, name: str) -> Point:
        """The point called ``name``; raises KeyError if the profile has none."""
        for point in self.points:
            if point.name == name:
                return point
        raise KeyError(name)


def load_profile(path: Path) -> DeviceProfile:
    """Read and validate one profile file.

    Raises ProfileError naming the file, the field (as a dotted path such as
    ``points.2.modbus.address``) and what is wrong with it.
    """
    try:
        document: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(path, "(file)", f"cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ProfileError(path, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(document, dict):
        raise ProfileError(path, "(top level)", "expected a mapping of profile fields")
    try:
        profile = DeviceProfile.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ProfileError(path, field, f"{first['msg']}{more}") from None
    if path.stem != profile.id:
        raise ProfileError(path, "id", f"id {profile.id!r} must match the file name {path.stem!r}")
    return profile


def load_profiles(root: Path) -> dict[str, DeviceProfile]:
    """Every profile under ``root`` (``<kind>/<id>.yaml``), by id.

    Raises ProfileError for the first bad file, or for two files with one id.
    """
    profiles: dict[str, DeviceProfile] = {}
    for path in sorted(root.glob("*/*.yaml")):
        profile = load_profile(path)
        if profile.kind != path.parent.name:
            raise ProfileError(path, "kind", f"a {profile.kind} profile belongs in {profile.kind}/")
        if profile.id in profiles:
            raise ProfileError(path, "id", f"id {profile.id!r} is used by another profile")
        profiles[profile.id] = profile
    return profiles
