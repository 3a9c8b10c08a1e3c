"""Device profiles (docs/design.md section 5): one declarative YAML file per device model.

A profile keeps the protocol's addressing (register, GATT characteristic, serial
record field) apart from the neutral description of a point (metric, scale, offset,
writable), as EdgeX device profiles do, so a new model on a known protocol is a new
file and no new code. The addressing itself belongs to each protocol's family in
``schemas.protocols``, registered in ``schemas.addressing``: a point holds its address
under its family's key and a profile its settings under the same key, both validated
by the family's models, so a new protocol adds a module and no field here.

The JSON Schema in ``schemas/json/device_profile.schema.json`` is generated from these
models and the registered families for editors and outside tools; Anju itself
validates with the models, whose errors name the field.
"""

from collections.abc import Iterable
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

import yaml
from pydantic import (
    BaseModel,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

import schemas.protocols  # noqa: F401  (registers the built-in addressing families)
from schemas.addressing import PROTOCOL_PATTERN, Addressing, families, for_protocol
from schemas.errors import ProfileError
from schemas.strict import Name, Strict
from schemas.vocabulary import DeviceKind, EventType, Metric
from schemas.wire import EventData

ProfileId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{2,63}$")]

_AddressT = TypeVar("_AddressT", bound=BaseModel)
_SettingsT = TypeVar("_SettingsT", bound=BaseModel)
_ModelT = TypeVar("_ModelT", bound=BaseModel)


class Point(Strict):
    """One value a device reports, with its neutral meaning and its protocol address.

    A point without a metric is read only for event rules (a status bit field, an
    event code) and is not sent as telemetry. Values become ``raw * scale + offset``.
    """

    name: Name
    metric: Metric | None = None
    scale: float = Field(
        default=1.0,
        description="Engineering value = raw * scale + offset; never 0, since a written "
        "value is divided by it.",
    )
    offset: float = 0.0
    deadband: Annotated[float, Field(ge=0)] = 0.0
    writable: bool = False
    labels: dict[int, str] | None = Field(
        default=None, description="Meaning of enumerated raw values, for people."
    )
    _address: BaseModel = PrivateAttr()
    _address_key: str = PrivateAttr()

    @field_validator("scale")
    @classmethod
    def _scale_not_zero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("scale must not be 0: a value written to the point is divided by it")
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _take_address(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """Validate the one address key with its family's model, and the rest as fields.

        The families are not fields because they are not known here: any module may
        register one. An error in the address keeps its path (``modbus.address``).
        """
        if not isinstance(data, dict):
            return handler(data)
        known = [family.key for family in families()]
        given = [key for key in known if key in data]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one address, one of {', '.join(known)} "
                f"(found {', '.join(given) or 'none'})"
            )
        key = given[0]
        errors: list[InitErrorDetails] = []
        point = _validated_or_none(handler, {k: v for k, v in data.items() if k != key}, errors)
        address = _section(key, _family(key).point, data[key], errors)
        if point is None or address is None:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        point._address = address
        point._address_key = key
        return point

    @model_serializer(mode="wrap")
    def _with_address(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        """The fields and the address under its key, as the point was written."""
        fields: dict[str, Any] = handler(self)
        fields[self._address_key] = _dumped(self._address, info)
        return fields

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        """The fields and the address, which pydantic leaves out as a private attribute."""
        yield from super().__repr_args__()
        yield self._address_key, self._address

    @cached_property
    def address(self) -> BaseModel:
        """Where the point lives, as its family's model (``ModbusAddress``, ...).

        Cached in the instance: pydantic serves private attributes through a slow
        ``__getattr__``, and a gateway decodes every point of every poll through this
        (500 devices of 30 points a second took 2.7 times as long).
        """
        return self._address

    @property
    def address_key(self) -> str:
        """The family the address belongs to, as written in the profile (``modbus``)."""
        return self._address_key

    def address_as(self, kind: type[_AddressT]) -> _AddressT:
        """The address as ``kind``, for code that drives one protocol.

        Raises ValueError naming the point when it is addressed by another family.
        """
        address = self.address
        if not isinstance(address, kind):
            raise ValueError(
                f"point {self.name!r} has a {self._address_key!r} address, not a {kind.__name__}"
            )
        return address


class Condition(Strict):
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


class EventRule(Strict):
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


class Action(Strict):
    """How a model performs an action: write ``value`` to a writable point.

    ``repeat_s`` is for actions that must hold (a fire release on a controller whose
    unlock pulse runs out): the gateway writes again at that period for as long as
    the action should last.
    """

    point: Name
    value: float
    repeat_s: Annotated[float, Field(gt=0, le=3600)] | None = None


class DeviceProfile(Strict):
    """A device model: what kind it is, how to talk to it, what it reports.

    ``protocol`` is any protocol with a registered addressing family; the family's
    settings section, if the profile has one, sits under the family's key.
    """

    id: ProfileId
    kind: DeviceKind
    protocol: Annotated[str, Field(pattern=PROTOCOL_PATTERN)]
    manufacturer: str
    model: str
    description: str = ""
    poll_interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    heartbeat_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        default=300.0,
        description="A reading that stays within its deadband is still sent this often, "
        "so the cloud can tell a steady value from a silent device.",
    )
    points: Annotated[list[Point], Field(min_length=1)]
    events: list[EventRule] = Field(default_factory=list)
    actions: dict[ActionName, Action] = Field(
        default_factory=dict,
        description="Writes that perform the gateway's actions (unlock, fire release, ...).",
    )
    _settings: BaseModel | None = PrivateAttr(default=None)

    @field_validator("protocol")
    @classmethod
    def _addressed(cls, protocol: str) -> str:
        """Refuse, at this field, a protocol that no family addresses, listing those known."""
        for_protocol(protocol)
        return protocol

    @model_validator(mode="wrap")
    @classmethod
    def _take_settings(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """Validate the settings section with the protocol's family, the rest as fields.

        A section of another family is refused rather than ignored: it belongs to a
        profile written for another protocol, or the protocol is set wrongly.
        """
        if not isinstance(data, dict):
            return handler(data)
        keys = {family.key for family in families()}
        errors: list[InitErrorDetails] = []
        profile = _validated_or_none(
            handler, {k: v for k, v in data.items() if k not in keys}, errors
        )
        family = _family_of(data.get("protocol"))
        settings = _settings(family, data, keys, errors) if family is not None else None
        if profile is None or errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        profile._settings = settings
        profile._check(for_protocol(profile.protocol))
        return profile

    @model_serializer(mode="wrap")
    def _with_settings(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        """The fields and, when the profile has one, its settings section under its key."""
        fields: dict[str, Any] = handler(self)
        if self._settings is not None:
            fields[for_protocol(self.protocol).key] = _dumped(self._settings, info)
        return fields

    def _check(self, family: Addressing) -> None:
        """Rules across fields, raising ValueError naming the entry: names and metrics
        unique, every point in the protocol's family, rules and actions on real points."""
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
            if point.address_key != family.key:
                raise ValueError(
                    f"points[{index}] ({point.name}): a {self.protocol} profile addresses "
                    f"points with '{family.key}' (found '{point.address_key}')"
                )
        if family.check is not None:
            family.check(self)
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

    @property
    def settings(self) -> BaseModel | None:
        """The settings section of the protocol's family, or None when the profile has none."""
        return self._settings

    def settings_as(self, kind: type[_SettingsT]) -> _SettingsT | None:
        """The settings section as ``kind``, or None when the profile has none.

        Raises ValueError naming the profile when its protocol's family keeps its
        settings in another model, so a Modbus planner handed a BLE profile says so.
        """
        if for_protocol(self.protocol).settings is not kind:
            raise ValueError(
                f"profile {self.id} speaks {self.protocol}, whose settings are not {kind.__name__}"
            )
        return self._settings if isinstance(self._settings, kind) else None

    def address_mismatch(self, device_id: str, scheme: str) -> str | None:
        """Why an address of ``scheme`` cannot reach a device of this profile, or None.

        One wording for the agent, the installer's command line and the cloud's
        registry, which all refuse, say, a Modbus profile with a ``ble://`` address.
        """
        protocols = for_protocol(self.protocol).protocols
        if scheme in protocols:
            return None
        schemes = " or ".join(f"{protocol}://" for protocol in sorted(protocols))
        return (
            f"{device_id} is a {self.protocol} device ({self.id}): its address must be "
            f"{schemes}, not {scheme[:32]}://"
        )

    def point(self, name: str) -> Point:
        """The point called ``name``; raises KeyError if the profile has none."""
        for point in self.points:
            if point.name == name:
                return point
        raise KeyError(name)


def _family(key: str) -> Addressing:
    return next(family for family in families() if family.key == key)


def _family_of(protocol: object) -> Addressing | None:
    """The family of a profile's raw ``protocol``, or None when that field is wrong (its
    own validator reports it)."""
    if not isinstance(protocol, str):
        return None
    try:
        return for_protocol(protocol)
    except ValueError:
        return None


def _settings(
    family: Addressing, data: dict[Any, Any], keys: set[str], errors: list[InitErrorDetails]
) -> BaseModel | None:
    """The profile's settings section for ``family``, validated; problems go to ``errors``."""
    for key in sorted(keys & data.keys()):
        if key != family.key or family.settings is None:
            where = f"; its settings go under '{family.key}'" if family.settings else ""
            problem = f"a {data['protocol']} profile has no '{key}' section{where}"
            errors.append(
                {
                    "type": "value_error",
                    "loc": (key,),
                    "input": data[key],
                    "ctx": {"error": problem},
                }
            )
    if family.settings is None:
        return None
    if family.key in data:
        return _section(family.key, family.settings, data[family.key], errors)
    if family.settings_required:
        errors.append({"type": "missing", "loc": (family.key,), "input": data})
    return None


def _validated_or_none(
    handler: ModelWrapValidatorHandler[_ModelT],
    data: dict[Any, Any],
    errors: list[InitErrorDetails],
) -> _ModelT | None:
    """The model's own fields validated, or None with their errors added to ``errors``."""
    try:
        return handler(data)
    except ValidationError as exc:
        errors.extend(_moved(exc, ()))
        return None


def _section(
    key: str, model: type[BaseModel], value: object, errors: list[InitErrorDetails]
) -> BaseModel | None:
    """``value`` validated by ``model``, or None with its errors added under ``key``."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors.extend(_moved(exc, (key,)))
        return None


def _moved(exc: ValidationError, prefix: tuple[str, ...]) -> list[InitErrorDetails]:
    """``exc``'s errors with ``prefix`` before their paths, each keeping type and message.

    Raised again from a validator, they reach the caller with the full path, as if
    the family's model were an ordinary field (``points.4.modbus.address``).
    """
    return [
        {
            "type": PydanticCustomError(error["type"], error["msg"]),
            "loc": (*prefix, *error["loc"]),
            "input": error["input"],
        }
        for error in exc.errors()
    ]


def _dumped(model: BaseModel, info: SerializationInfo) -> Any:
    """``model`` serialised the way the enclosing dump was asked for."""
    return model.model_dump(
        mode=info.mode,
        by_alias=info.by_alias,
        exclude_unset=info.exclude_unset,
        exclude_defaults=info.exclude_defaults,
        exclude_none=info.exclude_none,
        round_trip=info.round_trip,
    )


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
