"""What the API returns: response models, separate from the storage rows they are read from."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud.incidents import IncidentStatus
from schemas.vocabulary import Metric

Bucket = Literal["raw", "1m", "1h", "1d"]


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


class ReadingBucket(_Response):
    """Statistics of one device's metric over one bucket that holds readings."""

    start: datetime
    """Where the bucket begins; buckets are counted from the window's ``from``."""
    count: int
    min: float
    avg: float
    max: float


class RawReading(_Response):
    ts: datetime
    value: float


class ReadingSeries(_Response):
    """One metric of one device over ``[from, to)``.

    ``buckets`` holds one entry per bucket with readings (empty buckets are left out)
    unless ``bucket`` is ``raw``; then ``readings`` holds the readings themselves, in
    time order, at most ``limit`` of them, and ``truncated`` says more were left out.
    """

    device_id: str
    metric: Metric
    bucket: Bucket
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    buckets: list[ReadingBucket]
    readings: list[RawReading]
    truncated: bool
    rollup_until: datetime | None
    """For ``1h`` and ``1d``: hours before this came from the hourly rollup, which may
    miss readings that arrived late since the last fold (at most one maintenance
    interval ago); later hours were aggregated from the readings themselves."""


class Health(_Response):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unavailable"]
    detail: str = ""
