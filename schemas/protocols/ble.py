"""Bluetooth LE addressing: where a band's value comes from and how it is decoded.

A point is a GATT characteristic read or notified over a connection, a field of the
manufacturer or service data a band advertises (read without connecting, which is
what scales to hundreds of bands per gateway), or the band's presence: 1 while the
gateway hears it, 0 once it has been silent past the gateway's grace period. The
settings say how the gateway recognises the band when scanning.
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
    """Read over a connection on each poll interval."""
    NOTIFY = "notify"
    """Pushed by the band over a connection whenever it has a new value."""
    ADVERTISED = "advertised"
    """A field of the manufacturer or service data in the band's advertisements."""
    PRESENCE = "presence"
    """1 while the band is heard, 0 after the gateway's grace period of silence."""


class BleAddress(Strict):
    """Where a point lives on a BLE band and how to decode it.

    ``read`` and ``notify`` name a GATT ``service`` and ``characteristic``;
    ``advertised`` names a ``manufacturer_id`` or a ``service_data`` UUID instead;
    ``presence`` names nothing and takes no decoder.
    """

    access: BleAccess
    service: Uuid | None = None
    characteristic: Uuid | None = None
    manufacturer_id: int | None = Field(
        default=None,
        ge=0,
        le=0xFFFF,
        description="advertised: the company identifier of the manufacturer data to read.",
    )
    service_data: Uuid | None = Field(
        default=None, description="advertised: the service UUID of the service data to read."
    )
    decoder: BleDecoder | None = None
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
        "value, so one vendor characteristic (or advertisement) packing several fields is "
        "several points, each at its offset.",
    )

    @model_validator(mode="after")
    def _fits_access(self) -> Self:
        gatt = self.service is not None or self.characteristic is not None
        advertised = [
            k for k in ("manufacturer_id", "service_data") if getattr(self, k) is not None
        ]
        if self.access in (BleAccess.READ, BleAccess.NOTIFY):
            if self.service is None or self.characteristic is None:
                raise ValueError(f"access {self.access} needs a service and a characteristic")
            if advertised:
                raise ValueError(f"{advertised[0]} applies to access advertised, not {self.access}")
        elif self.access is BleAccess.ADVERTISED:
            if len(advertised) != 1:
                raise ValueError(
                    "access advertised needs exactly one of manufacturer_id, service_data"
                )
            if gatt:
                raise ValueError("access advertised takes no service or characteristic")
            if self.decoder is BleDecoder.HEART_RATE_MEASUREMENT:
                raise ValueError("advertised data takes a fixed-width decoder at an offset")
        elif gatt or advertised or self.decoder is not None or self.offset or self.field:
            raise ValueError("access presence takes nothing else: the gateway knows it")
        if self.access is not BleAccess.PRESENCE and self.decoder is None:
            raise ValueError(f"access {self.access} needs a decoder")
        if self.field is not None and self.decoder is not BleDecoder.HEART_RATE_MEASUREMENT:
            raise ValueError(f"field applies to heart_rate_measurement, not {self.decoder}")
        if self.offset and self.decoder is BleDecoder.HEART_RATE_MEASUREMENT:
            raise ValueError(
                "offset applies to the fixed-width decoders, not heart_rate_measurement"
            )
        return self

    @property
    def gatt(self) -> tuple[str, str] | None:
        """(service, characteristic) for read and notify points, else None."""
        if self.service is None or self.characteristic is None:
            return None
        return (self.service, self.characteristic)

    @property
    def source(self) -> str:
        """Where the value comes from, as an installer reads it (``characteristic 2a37``)."""
        if self.characteristic is not None:
            return f"characteristic {self.characteristic}"
        if self.manufacturer_id is not None:
            return f"manufacturer data 0x{self.manufacturer_id:04x}"
        if self.service_data is not None:
            return f"service data {self.service_data}"
        return "presence"


class BleSettings(Strict):
    """How the gateway recognises a band of this model in a scan."""

    advertised_services: list[Uuid] = Field(default_factory=list)
    name_prefix: str | None = None
    manufacturer_id: int | None = Field(
        default=None, ge=0, le=0xFFFF, description="A company identifier its advertisements carry."
    )


register(
    Addressing(key="ble", protocols=frozenset({"ble"}), point=BleAddress, settings=BleSettings)
)
