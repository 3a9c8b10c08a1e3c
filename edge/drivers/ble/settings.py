"""The BLE driver's settings, from the gateway config's ``drivers.ble`` section.

Example::

    drivers:
      ble:
        adapter: bumble:usb:0      # or bleak:hci0 (BlueZ), bumble:tcp-client:HOST:PORT
        max_connections: 5
        out_of_range_s: 60
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.errors import ConfigError

Backend = Literal["bleak", "bumble"]


class BleDriverSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    adapter: str = Field(
        default="bleak:hci0",
        pattern=r"^(bleak:hci[0-9]+|bumble:.+)$",
        description="bleak:hciN for an adapter BlueZ manages (a gateway box's own), or "
        "bumble:TRANSPORT for an HCI controller bumble drives itself: bumble:usb:0 (a USB "
        "dongle), bumble:serial:/dev/ttyACM0, bumble:tcp-client:HOST:PORT (the simulated "
        "bands of `anju sim bands`).",
    )
    max_connections: Annotated[int, Field(ge=1, le=32)] = Field(
        default=5,
        description="Connections held at once; BlueZ adapters cap them (often 5 to 10). "
        "When more bands need one, they take turns (rotation_s).",
    )
    rotation_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0,
        description="How long a band keeps its connection while others wait for one.",
    )
    out_of_range_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0,
        description="Silence after which a band counts as out of range (its presence "
        "point goes to 0, which raises wearable.out_of_range).",
    )
    connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=10.0, description="How long one connection attempt, with discovery, may take."
    )
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0, description="Longest wait between connection attempts to one band."
    )

    @property
    def backend(self) -> Backend:
        return "bleak" if self.adapter.startswith("bleak:") else "bumble"

    @property
    def target(self) -> str:
        """The adapter (hci0) or the HCI transport (usb:0), without the backend."""
        return self.adapter.split(":", 1)[1]


def parse_settings(document: object) -> BleDriverSettings:
    """Validate ``drivers.ble``; raises ConfigError naming the key and the fault."""
    try:
        return BleDriverSettings.model_validate(document or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in ("drivers", "ble", *first["loc"]))
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = (
                f"unknown key; allowed keys here are {', '.join(BleDriverSettings.model_fields)}"
            )
        elif first["type"] == "string_pattern_mismatch":
            message = "expected bleak:hciN or bumble:TRANSPORT (e.g. bumble:usb:0)"
        raise ConfigError("gateway config", key, message) from None
