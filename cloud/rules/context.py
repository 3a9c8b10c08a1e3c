"""What the rules know of the device an event came from, as ingest hands it to them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """What the rules know of the device an event came from (from its registration)."""

    device_id: str
    kind: str
    community_id: int
    community: str
    building: str | None
    unit: str | None
