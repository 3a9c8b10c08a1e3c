"""Serial addressing: a point is one field of a line-oriented record a device pushes.

The settings are required because they hold the record layouts: a point names a
record type and a field, and only the settings say where that field sits in a line.
"""

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from schemas.addressing import Addressing, register
from schemas.strict import Name, Strict

if TYPE_CHECKING:
    from schemas.profile import DeviceProfile

RecordType = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{1,7}$")]


class SerialAddress(Strict):
    """Where a point lives in a serial record: the record type and the field name."""

    record: RecordType
    field: Name


class SerialFraming(Strict):
    """A line-oriented record: ``{start}{TYPE}{sep}{field}...[*{checksum}]{terminator}``."""

    start: str = "$"
    separator: str = ","
    terminator: str = "\r\n"
    checksum: Literal["none", "xor8"] = "xor8"


class SerialSettings(Strict):
    baud: Annotated[int, Field(ge=300, le=4_000_000)] = 115200
    framing: SerialFraming = SerialFraming()
    records: dict[RecordType, list[Name]] = Field(
        description="Field names of each record type, in order after the type."
    )


def _fields_exist(profile: "DeviceProfile") -> None:
    """Every point's record and field are laid out in ``serial.records``."""
    settings = profile.settings_as(SerialSettings)
    assert settings is not None, "the serial family requires its settings"
    for index, point in enumerate(profile.points):
        address = point.address_as(SerialAddress)
        fields = settings.records.get(address.record)
        if fields is None or address.field not in fields:
            raise ValueError(
                f"points[{index}] ({point.name}): record {address.record} "
                f"has no field {address.field!r} in serial.records"
            )


register(
    Addressing(
        key="serial",
        protocols=frozenset({"serial"}),
        point=SerialAddress,
        settings=SerialSettings,
        settings_required=True,
        check=_fields_exist,
    )
)
