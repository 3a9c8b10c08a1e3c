"""Bluetooth LE addressing: a point is a GATT characteristic and the decoder for its value.

The settings say how the gateway recognises the device when scanning. No BLE driver
is built yet; profiles are validated so that one can be written against them.
"""

from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

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


class HeartRateField(StrEnum):
    """The fields of a Heart Rate Measurement a point may take."""

    BPM = "bpm"
    RR_INTERVAL_MS = "rr_interval_ms"
    SENSOR_CONTACT = "sensor_contact"
    ENERGY_EXPENDED_KJ = "energy_expended_kj"


class BleAccess(StrEnum):
    READ = "read"
    NOTIFY = "notify"


class BleAddress(Strict):
    """Where a point lives on a BLE device: a GATT characteristic and how to decode it."""

    service: Uuid
    characteristic: Uuid
    access: BleAccess
    decoder: BleDecoder
    field: HeartRateField | None = Field(
        default=None,
        description="For heart_rate_measurement, which of its fields this point takes "
        "(bpm when left out).",
    )
    offset: int = Field(
        default=0,
        ge=0,
        le=511,
        description="For the fixed-width decoders: the byte where the field starts in the "
        "characteristic's value, so one vendor characteristic packing several fields is "
        "several points, each at its offset.",
    )

    @model_validator(mode="after")
    def _fits_decoder(self) -> Self:
        if self.field is not None and self.decoder is not BleDecoder.HEART_RATE_MEASUREMENT:
            raise ValueError(f"field applies to heart_rate_measurement, not {self.decoder}")
        if self.offset and self.decoder is BleDecoder.HEART_RATE_MEASUREMENT:
            raise ValueError(
                "offset applies to the fixed-width decoders, not heart_rate_measurement"
            )
        return self


class BleSettings(Strict):
    advertised_services: list[Uuid] = Field(default_factory=list)
    name_prefix: str | None = None


register(
    Addressing(key="ble", protocols=frozenset({"ble"}), point=BleAddress, settings=BleSettings)
)
