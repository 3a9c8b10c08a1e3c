"""Applies the site's camera configuration to camera events before they are spooled.

Pure and synchronous, like the normaliser: events in, events out. Armed hours are
judged by each event's own timestamp in the configured time zone, not by the clock
of the moment it is handled, so an event that waited in a driver's buffer is judged
by when it happened.
"""

from collections import Counter
from collections.abc import Iterable

import msgspec

from edge.cameras.settings import CameraSiteSettings
from schemas.vocabulary import EventType
from schemas.wire import Event

_ARMABLE = frozenset({EventType.CAMERA_INTRUSION, EventType.CAMERA_LOITERING})
"""Events that only matter while their zone is armed; tamper and video loss always do."""
_ZONED = _ARMABLE | {EventType.CAMERA_LINE_CROSSING}


class CameraSite:
    """Names zones and lines, holds back events of disarmed zones, ties lines to doors.

    For a configured camera device:

    - intrusion and loitering in a configured zone take the zone's name, and are
      dropped (counted in ``disarmed``) outside its armed hours;
    - a line crossing on a configured line takes the line's name (if it has one) and
      the line's door as ``data.door``, which the cloud's tailgating rule needs;
    - anything else, including events of zones and lines not configured and of
      devices not configured, passes unchanged.
    """

    def __init__(self, settings: CameraSiteSettings) -> None:
        self._settings = settings
        self._zone = settings.zone
        self.disarmed: Counter[str] = Counter()
        """Intrusion and loitering events not sent, per device: their zone was disarmed."""

    def apply(self, events: Iterable[Event]) -> list[Event]:
        """``events`` as they should be sent, in order; those of disarmed zones left out."""
        kept: list[Event] = []
        for event in events:
            applied = self._apply(event)
            if applied is None:
                self.disarmed[event.device] += 1
            else:
                kept.append(applied)
        return kept

    def _apply(self, event: Event) -> Event | None:
        camera = self._settings.devices.get(event.device)
        box_id = event.data.zone
        if camera is None or box_id is None or event.type not in _ZONED:
            return event
        if event.type is EventType.CAMERA_LINE_CROSSING:
            line = camera.lines.get(box_id)
            if line is None:
                return event
            data = msgspec.structs.replace(event.data, zone=line.name or box_id, door=line.door)
            return msgspec.structs.replace(event, data=data)
        zone = camera.zones.get(box_id)
        if zone is None:
            return event
        if not zone.armed_at(event.ts.astimezone(self._zone).time()):
            return None
        return msgspec.structs.replace(
            event, data=msgspec.structs.replace(event.data, zone=zone.name)
        )
