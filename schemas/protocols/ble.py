"""Bluetooth LE addressing: a point is a GATT characteristic and the decoder for its value.

The settings say how the gateway recognises the device when scanning. No BLE driver
is built yet; profiles are validated so that one can be written against them.
"""

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from schemas.addressing import Addressing, register
from schemas.strict import Strict

Uuid = Annotated[
    str,
    Field(
        pattern=r"^([0-9a-f]{4}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$",
        description="A 16-bit SIG-assigned UUID as 4 hex digits, or a full 128-bit UUID.",
    ),
]


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


class BleAddress(Strict):
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


class BleSettings(Strict):
    advertised_services: list[Uuid] = Field(default_factory=list)
    name_prefix: str | None = None


register(
    Addressing(key="ble", protocols=frozenset({"ble"}), point=BleAddress, settings=BleSettings)
)
