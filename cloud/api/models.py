"""What the API returns: response models, separate from the storage rows they are read from."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from cloud.incidents import IncidentStatus


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class IncidentSummary(_Response):
    """One incident as the dispatch queue lists it."""

    id: int
    type: str
    priority: int
    status: IncidentStatus
    community: str
    """The community path, ``street/community``."""
    building: str | None
    unit: str | None
    device_id: str | None
    opened_at: datetime
    updated_at: datetime
    event_count: int
    first_event_ts: datetime | None
    """When the event that opened the incident happened (device or gateway time)."""


class IncidentLogEntry(_Response):
    """One state change; ``from_status`` is None for the opening."""

    at: datetime
    from_status: IncidentStatus | None
    to_status: IncidentStatus
    actor: str
    note: str


class IncidentDetail(IncidentSummary):
    log: list[IncidentLogEntry]


class Health(_Response):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unavailable"]
    detail: str = ""
