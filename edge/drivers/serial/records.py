"""Which of a profile's points each serial record fills, and where each point lives.

A record carries several points at once (a people count and its zone); the reader
hands over whole records, and this turns one into the values of the points it holds.
"""

from collections import defaultdict

from edge.drivers.serial.framing import Record, Value
from schemas.profile import DeviceProfile
from schemas.protocols.serial import (
    BinaryRecord,
    FieldsFraming,
    FieldType,
    JsonFraming,
    KeyValueFraming,
    RegexFraming,
    SerialAddress,
    SerialSettings,
)


class RecordPoints:
    """Which of a profile's points each record type fills."""

    def __init__(self, profile: DeviceProfile) -> None:
        settings = profile.settings_as(SerialSettings)
        if settings is None:
            raise ValueError(f"profile {profile.id} has no serial settings")
        self._settings = settings
        self._addresses: dict[str, SerialAddress] = {}
        self._by_record: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for point in profile.points:
            address = point.address_as(SerialAddress)
            self._addresses[point.name] = address
            self._by_record[address.record].append((point.name, address.field))

    def sample(self, record: Record) -> dict[str, Value]:
        """The values of the profile's points that ``record`` carries, by point name.

        Empty when the record fills none of them.
        """
        return {
            point: record.fields[field]
            for point, field in self._by_record.get(record.type, ())
            if field in record.fields
        }

    def where(self, point_name: str) -> str:
        """Where a point lives, for an installer: ``"PCNT field 3 (count)"``.

        Raises KeyError when the profile has no point of that name.
        """
        address = self._addresses[point_name]
        record, field = address.record, address.field
        layout = self._settings.records[record]
        if isinstance(layout, BinaryRecord):
            typed = layout.fields[field]
            if typed.type is FieldType.BOOL and typed.bit is not None:
                return f"{record} byte {typed.offset} bit {typed.bit} ({field})"
            return f"{record} byte {typed.offset} {typed.type} ({field})"
        framing = self._settings.framing
        if isinstance(framing, FieldsFraming):
            return f"{record} field {layout.index(field) + 1} ({field})"
        if isinstance(framing, RegexFraming):
            return f"{record} group {field!r}"
        assert isinstance(framing, KeyValueFraming | JsonFraming)
        return f"{record} key {field!r}"
