"""The gateway's configuration file: who the gateway is, where the broker is, its devices.

Validated at start-up; a bad value names the file, the key and what to write instead.
Example::

    gateway: gw-fh-01
    community: xijin/fenghuang
    broker: mqtt://127.0.0.1:1883
    uplink:
      ack_timeout_s: 30        # resend a batch the cloud has not acknowledged after this
      ack_timeout_cap_s: 600   # ... doubling at each resend, up to this
    drivers:
      ble: {adapter: "bumble:usb:0"}
    devices:
      - id: fh-b3-smoke-0301
        profile: anju-smoke-mb
        address: modbus-tcp://192.168.10.20:502?unit=1
        building: "3"
        unit: "301"
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edge.addresses import DeviceAddress, parse_address
from edge.cameras.settings import CameraSettings, CameraSiteSettings, LineSettings, ZoneSettings
from edge.errors import AddressError, ConfigError
from edge.spool import ACK_TIMEOUT_CAP_S, ACK_TIMEOUT_S
from edge.wearables.settings import AnalysisSettings
from schemas.broker import BrokerAddress, parse_broker_url
from schemas.errors import SchemaError
from schemas.profile import DeviceProfile
from schemas.vocabulary import DeviceKind

_ID = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class DeviceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=_ID)]
    profile: str
    address: str
    building: str = ""
    unit: str = ""
    poll_interval_s: Annotated[float, Field(gt=0, le=3600)] | None = None
    egress: bool = Field(
        default=False,
        description="A door on an escape route: released locally when a smoke detector "
        "in the same building raises its alarm.",
    )

    @field_validator("address")
    @classmethod
    def _address_parses(cls, value: str) -> str:
        try:
            parse_address(value)
        except AddressError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def parsed_address(self) -> DeviceAddress:
        return parse_address(self.address)


class UplinkSettings(BaseModel):
    """The ``uplink`` section: resending batches the cloud has not acknowledged.

    A batch the broker took (PUBACK) stays in the spool until the cloud acknowledges
    it after its commit. With no acknowledgement after ``ack_timeout_s`` it is sent
    again, byte for byte (the cloud drops repeats and acknowledges them again); each
    further resend of that batch waits twice as long, up to ``ack_timeout_cap_s``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ack_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=ACK_TIMEOUT_S,
        description="How long a sent batch waits for the cloud's acknowledgement before it "
        "goes again; doubles at each resend of that batch, up to ack_timeout_cap_s.",
    )
    ack_timeout_cap_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        default=ACK_TIMEOUT_CAP_S,
        description="The longest wait between resends of one unacknowledged batch.",
    )

    @model_validator(mode="after")
    def _cap_holds_the_timeout(self) -> Self:
        if self.ack_timeout_cap_s < self.ack_timeout_s:
            raise _KeyedError(
                "uplink.ack_timeout_cap_s",
                f"{self.ack_timeout_cap_s:g} is below ack_timeout_s ({self.ack_timeout_s:g}): "
                "the cap must be at least the timeout",
            )
        return self


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gateway: Annotated[str, Field(pattern=_ID)]
    community: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*/[a-z0-9][a-z0-9-]*$")]
    broker: str = "mqtt://127.0.0.1:1883"
    cloud: str | None = Field(
        default=None,
        description="The cloud API this gateway was provisioned from (https://...); "
        "what anju provision rotate and check talk to.",
    )
    state_dir: Path = Field(
        default=Path("/var/lib/anju"),
        description="Where the spool and the command audit log live; must survive reboots.",
    )
    spool_budget_mb: Annotated[float, Field(gt=0)] = Field(
        default=512.0,
        description="Disk the spool may use; past it the oldest telemetry is dropped "
        "(and reported), events never are.",
    )
    uplink: UplinkSettings = Field(
        default_factory=UplinkSettings,
        description="How long the gateway waits for the cloud's acknowledgement of a batch "
        "before it sends it again.",
    )
    tls_ca_file: Path | None = Field(
        default=None, description="CA bundle for an mqtts:// broker; default: the system's."
    )
    tls_cert_file: Path | None = Field(
        default=None, description="Client certificate, for brokers that authenticate by it."
    )
    tls_key_file: Path | None = None
    profiles: Path | None = Field(
        default=None, description="Folder of device profiles; default: the bundled ones."
    )
    telemetry_linger_s: Annotated[float, Field(ge=0, le=60)] = 0.5
    device_timeout_s: Annotated[float, Field(gt=0, le=30)] = Field(
        default=1.0,
        description="How long one request to a device may wait for its answer, every protocol.",
    )
    offline_after_misses: Annotated[int, Field(ge=1, le=100)] = 3
    offline_retry_max_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=30.0,
        description="Longest wait between tries of an offline device (backoff doubles to it).",
    )
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    drivers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Each driver's own settings by its name, checked by the driver at "
        "start-up: ble (adapter, max_connections, out_of_range_s, ...; docs/wearables.md).",
    )
    wearables: AnalysisSettings = Field(
        default_factory=AnalysisSettings,
        description="The analysis of wearables' heart rate, motion and falls (docs/wearables.md).",
    )
    cameras: CameraSiteSettings = Field(
        default_factory=CameraSiteSettings,
        description="Camera zones' names and armed hours, and the doors counting lines "
        "guard (docs/cameras.md).",
    )
    devices: list[DeviceConfig] = Field(default_factory=list)

    @field_validator("broker")
    @classmethod
    def _broker_parses(cls, value: str) -> str:
        try:
            parse_broker_url(value)
        except SchemaError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("cloud")
    @classmethod
    def _cloud_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError(f"expected the cloud API's URL, https://HOST[:PORT], not {value!r}")
        return value

    @field_validator("devices")
    @classmethod
    def _unique_ids(cls, devices: list[DeviceConfig]) -> list[DeviceConfig]:
        seen: set[str] = set()
        for device in devices:
            if device.id in seen:
                raise ValueError(f"device id {device.id!r} appears twice")
            seen.add(device.id)
        return devices

    @model_validator(mode="after")
    def _cameras_name_devices(self) -> Self:
        """Each camera and each line's door is a device here: a mistyped door would
        make everyone crossing its line a tailgater. Their kinds need the profiles:
        ``check_camera_kinds``."""
        known = {device.id for device in self.devices}
        for camera, settings in self.cameras.devices.items():
            key = f"cameras.devices.{camera}"
            if camera not in known:
                raise _KeyedError(key, f"no device {camera!r} in devices")
            for line, line_settings in settings.lines.items():
                if line_settings.door not in known:
                    raise _KeyedError(
                        f"{key}.lines.{line}.door", f"no device {line_settings.door!r} in devices"
                    )
        return self

    @property
    def broker_address(self) -> BrokerAddress:
        return parse_broker_url(self.broker)


class _KeyedError(ValueError):
    """A fault found across sections, with the key it concerns (pydantic gives none)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(problem)


def check_camera_kinds(
    config: GatewayConfig, profiles: Mapping[str, DeviceProfile], source: str
) -> None:
    """Raise ConfigError naming the key when the ``cameras`` section names a device of
    the wrong kind: each key under ``cameras.devices`` must be a camera, each line's
    ``door`` a door.

    Needs the profiles, so the agent calls it once they are loaded; a device whose
    profile is unknown is left to the agent's own check of ``devices.N.profile``.
    """
    kinds = {
        device.id: profiles[device.profile].kind
        for device in config.devices
        if device.profile in profiles
    }

    def expect(kind: DeviceKind, device_id: str, key: str) -> None:
        found = kinds.get(device_id)
        if found is not None and found is not kind:
            raise ConfigError(
                source, key, f"{device_id} is a {found} device, not a {kind}: name a {kind} here"
            )

    for camera, settings in config.cameras.devices.items():
        key = f"cameras.devices.{camera}"
        expect(DeviceKind.CAMERA, camera, key)
        for line, line_settings in settings.lines.items():
            expect(DeviceKind.DOOR, line_settings.door, f"{key}.lines.{line}.door")


def parse_config(document: Any, source: str) -> GatewayConfig:
    """Validate a config mapping; raises ConfigError naming ``source``, the key and the fault."""
    if not isinstance(document, dict):
        raise ConfigError(
            source, "(top level)", "expected a mapping with gateway, community, devices"
        )
    try:
        return GatewayConfig.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        keyed = first.get("ctx", {}).get("error")
        if isinstance(keyed, _KeyedError):
            raise ConfigError(source, keyed.key, keyed.problem) from None
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        key += _device_named(document, first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            model = _section_model(first["loc"])
            message = f"unknown key; allowed keys here are {', '.join(model.model_fields)}"
        raise ConfigError(source, key, message) from None


_MODELS: dict[str, type[BaseModel]] = {
    "devices": DeviceConfig,
    "wearables": AnalysisSettings,
    "cameras": CameraSiteSettings,
    "uplink": UplinkSettings,
}
"""The model of each nested section, to list its keys when one is unknown."""


def _section_model(loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The model holding the last key of ``loc``; cameras nest it up to three deep."""
    if loc[0] == "cameras" and len(loc) == 4:
        return CameraSettings
    if loc[0] == "cameras" and len(loc) == 6:
        return ZoneSettings if loc[3] == "zones" else LineSettings
    return _MODELS.get(str(loc[0]), GatewayConfig)


def _device_named(document: dict[str, Any], loc: tuple[int | str, ...]) -> str:
    """`` (device ID)`` when the fault is inside a device entry that has an id, so an
    installer with forty devices finds the one at fault without counting entries."""
    if len(loc) < 2 or loc[0] != "devices" or not isinstance(loc[1], int):
        return ""
    devices = document.get("devices")
    if not isinstance(devices, list) or loc[1] >= len(devices):
        return ""
    entry = devices[loc[1]]
    device_id = entry.get("id") if isinstance(entry, dict) else None
    return f" (device {device_id})" if isinstance(device_id, str) and device_id else ""


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a gateway config file (YAML)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), "(file)", f"cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "(file)", f"not valid YAML: {exc}") from None
    return parse_config(document, str(path))
