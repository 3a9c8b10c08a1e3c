"""What rules read and what they produce, shared by every rule module."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


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
    community: str
    building: str | None
    unit: str | None


@dataclass(frozen=True, slots=True)
class IncidentDraft:
    """An incident a rule asks for; where it is, what caused it, how urgent it is.

    Its subject is a device (``device_id``), a resident (``resident_id``) or, with
    ``per_building``, the device's building: repeats join the subject's active incident
    of the same type.
    """

    type: str
    priority: Priority
    community_id: int
    building: str | None
    unit: str | None
    device_id: str | None
    cause: str
    resident_id: int | None = None
    per_building: bool = False

    @property
    def scope(self) -> str:
        """What the incident is about: ``device``, ``resident`` or ``building``."""
        if self.resident_id is not None:
            return "resident"
        if self.per_building and self.building is not None:
            return "building"
        return "device"
