"""The agent's record of each configured device: what it is, and how it is doing.

One shape for every protocol, so offline detection, ``device.offline`` events and
``/metrics`` live in the core and mean the same for a Modbus detector, a BLE band or
an OSDP reader. The drivers see these records only as ``DeviceSpec``s.
"""

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from edge.addresses import DeviceAddress
from edge.normalise import DeviceNormaliser, polled_points
from schemas.profile import DeviceProfile, Point
from schemas.vocabulary import EventType
from schemas.wire import Event, EventData, Reading

log = logging.getLogger(__name__)

Sink = Callable[[list[Reading], list[Event]], None]
"""Where the core hands what devices yield: the fire linkage, then the spool."""


@dataclass
class AgentDevice:
    """A configured device, its normaliser and its health.

    ``online`` is False while the device is missed, out of reach or has no driver that
    can run here; ``offline_reason`` then says why. ``faults`` counts failures by
    ``DeviceError.kind`` (timeout, unreachable, disconnected, exception, internal...).
    """

    device_id: str
    profile: DeviceProfile
    address: DeviceAddress
    interval_s: float
    """How often it is read (polled) or expected to be heard from (streaming)."""
    normaliser: DeviceNormaliser = field(init=False)
    points: tuple[Point, ...] = field(init=False)
    """The points a routine read returns: those with a metric and those rules look at."""
    online: bool = True
    offline_reason: str = ""
    polls: int = 0
    """Reads tried (polled) or records received (streaming)."""
    answered: int = 0
    faults: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.normaliser = DeviceNormaliser(self.device_id, self.profile)
        self.normaliser.poll_interval_s = self.interval_s
        self.points = tuple(polled_points(self.profile))

    def heard(self, ts: datetime) -> list[Event]:
        """The device answered or sent something: ``device.online`` if it was offline.

        A device coming back may have rebooted, so its record counters may have
        restarted and a ``for_s`` hold would count the time it was silent: the
        normaliser forgets both.
        """
        if self.online:
            return []
        self.online = True
        self.offline_reason = ""
        log.info("%s is back", self.device_id)
        self.normaliser.device_restarted()
        return [self.normaliser.event(EventType.DEVICE_ONLINE, ts)]

    def lost(self, reason: str, ts: datetime) -> list[Event]:
        """The device is gone for now: ``device.offline`` with ``reason``, once."""
        if not self.online:
            return []
        self.online = False
        self.offline_reason = reason
        log.warning("%s offline: %s", self.device_id, reason)
        return [self.normaliser.event(EventType.DEVICE_OFFLINE, ts, EventData(reason=reason))]
