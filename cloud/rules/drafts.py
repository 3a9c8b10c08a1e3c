"""What rules read and what they produce, shared by every rule module."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from schemas.vocabulary import EventType


class IncidentType(StrEnum):
    """Kinds of incident; repeats of one type from one device join one incident."""

    FIRE = "fire"
    SOS = "sos"
    FALL = "fall"
    HEART_RATE_ABNORMAL = "heart_rate_abnormal"


class Priority(IntEnum):
    """1 is the most urgent; the dispatch queue is ordered by it."""

    CRITICAL = 1
    URGENT = 2
    ROUTINE = 3


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """What the rules know of the device an event came from (from its registration)."""

    device_id: str
    kind: str
    community_id: int
    building: str | None
    unit: str | None


@dataclass(frozen=True, slots=True)
class IncidentDraft:
    """An incident a rule asks for; where it is, what caused it, how urgent it is."""

    type: IncidentType
    priority: Priority
    community_id: int
    building: str | None
    unit: str | None
    device_id: str
    cause: EventType
