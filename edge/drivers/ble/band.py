"""What the driver does with one band: which characteristics to subscribe to and read,
which advertisement fields to decode, and the samples its values make.

Built once per configured band from its profile, so a notification costs a lookup
and a decode, never a walk over the profile.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from edge.drivers.ble.gatt import decode_point
from edge.drivers.ble.radio import Advertisement
from edge.drivers.contract import DeviceSpec, RawValue
from schemas.profile import Point
from schemas.protocols.ble import BleAccess, BleAddress, HeartRateField

Characteristic = tuple[str, str]
"""A GATT characteristic by (service, characteristic) UUID."""

Timed = tuple[dict[str, RawValue | str], datetime]
"""A sample and when its values were true."""


@dataclass(frozen=True, slots=True)
class BandPoint:
    name: str
    address: BleAddress


@dataclass
class BandPlan:
    """One band's points, grouped by where their values arrive."""

    device_id: str
    mac: str
    notified: dict[Characteristic, list[BandPoint]] = field(default_factory=dict)
    read: dict[Characteristic, list[BandPoint]] = field(default_factory=dict)
    advertised: list[BandPoint] = field(default_factory=list)
    presence: str | None = None
    """The point that holds 1 while the band is heard and 0 once it is out of range."""

    @classmethod
    def of(cls, device: DeviceSpec, points: Sequence[Point] | None = None) -> "BandPlan":
        """The plan for ``points`` (default: the routine ones) of ``device``."""
        notified: dict[Characteristic, list[BandPoint]] = defaultdict(list)
        read: dict[Characteristic, list[BandPoint]] = defaultdict(list)
        plan = cls(device.device_id, device.address.host)
        for point in device.points if points is None else points:
            address = point.address_as(BleAddress)
            item = BandPoint(point.name, address)
            if address.access is BleAccess.PRESENCE:
                plan.presence = point.name
            elif address.access is BleAccess.ADVERTISED:
                plan.advertised.append(item)
            elif (key := address.gatt) is not None:
                (notified if address.access is BleAccess.NOTIFY else read)[key].append(item)
        plan.notified = dict(notified)
        plan.read = dict(read)
        return plan

    @property
    def connects(self) -> bool:
        """Whether the band must be connected to (it has GATT points), or only heard."""
        return bool(self.notified or self.read)

    def gatt_values(
        self, characteristic: Characteristic, value: bytes, ts: datetime
    ) -> list[Timed]:
        """The samples a characteristic's value makes; raises MalformedValue.

        A field with several values (the RR intervals of one Heart Rate Measurement)
        makes one sample per value, each at the time its interval ended, counted back
        from the notification: the last interval ends when the notification leaves.
        """
        points = self.notified.get(characteristic) or self.read.get(characteristic, [])
        sample: dict[str, RawValue | str] = {}
        series: list[Timed] = []
        for point in points:
            values = decode_point(point.address, value)
            if point.address.field is HeartRateField.RR_INTERVAL_MS:
                ends = ts
                for rr in reversed(values):
                    series.append(({point.name: rr}, ends))
                    ends -= timedelta(milliseconds=float(rr))
            elif values:
                sample[point.name] = values[0]
        return [(sample, ts), *reversed(series)] if sample else list(reversed(series))

    def advertised_values(self, advertisement: Advertisement) -> dict[str, RawValue | str]:
        """The advertised points this advertisement carries; raises MalformedValue.

        A band whose advertisement lacks the data a point names (it also sends plain
        advertisements) simply does not set that point this time.
        """
        sample: dict[str, RawValue | str] = {}
        for point in self.advertised:
            address = point.address
            if address.manufacturer_id is not None:
                data = advertisement.manufacturer_data.get(address.manufacturer_id)
            else:
                assert address.service_data is not None
                data = advertisement.service_data.get(address.service_data)
            if data is not None:
                sample[point.name] = decode_point(address, data)[0]
        return sample
