"""Emergency-call rules (DESIGN.md section 7): which events open which incidents.

A table, not a chain of conditions: adding a rule is adding a row. Each entry maps an
event type to the incident it opens and that incident's priority; events of other
types open nothing here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from cloud.rules.drafts import DeviceContext, IncidentDraft, IncidentType, Priority
from schemas.vocabulary import EventType
from schemas.wire import Event


@dataclass(frozen=True, slots=True)
class EmergencyRule:
    incident_type: IncidentType
    priority: Priority


EMERGENCY_RULES: Final[Mapping[EventType, EmergencyRule]] = MappingProxyType(
    {
        EventType.SMOKE_ALARM: EmergencyRule(IncidentType.FIRE, Priority.CRITICAL),
        EventType.WEARABLE_SOS: EmergencyRule(IncidentType.SOS, Priority.CRITICAL),
        EventType.WEARABLE_FALL: EmergencyRule(IncidentType.FALL, Priority.CRITICAL),
        EventType.WEARABLE_HEART_RATE_ABNORMAL: EmergencyRule(
            IncidentType.HEART_RATE_ABNORMAL, Priority.URGENT
        ),
    }
)


def evaluate(event: Event, device: DeviceContext) -> IncidentDraft | None:
    """The incident ``event`` calls for, located at ``device``; None when it calls for none."""
    rule = EMERGENCY_RULES.get(event.type)
    if rule is None:
        return None
    return IncidentDraft(
        type=rule.incident_type,
        priority=rule.priority,
        community_id=device.community_id,
        building=device.building,
        unit=device.unit,
        device_id=device.device_id,
        cause=event.type,
    )
