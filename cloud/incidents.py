"""Incidents: opened from rule drafts, joined by repeats, every state change logged.

Rules (``cloud.rules``) produce ``IncidentDraft``s; this module turns them into rows.
It sits below the rules and above the queue: it imports neither ``cloud.rules`` nor
anything that imports it back.

Guarantees, inside the caller's transaction (so an incident exists exactly when the
event that caused it is committed):

- a device has at most one active (not resolved, not false_alarm) incident of a type;
  a repeat joins it (``event_count`` + 1, an ``incident_events`` row) even when several
  ingest workers race, because a partial unique index arbitrates the opening insert;
- opening writes an ``incident_log`` row (from ``NULL`` to ``open``) with the actor,
  the webhook deliveries announcing it (the outbox, ``cloud.webhooks.outbox``) and
  its escalation timer (``cloud.queue.timers``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any, Final

from psycopg import AsyncConnection

from cloud.errors import StorageError
from cloud.queue.timers import arm_unclaimed
from cloud.settings import QueueSettings
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries
from cloud.webhooks.outbox import WebhookEvent, enqueue

SYSTEM_ACTOR: Final = "system"

_UPSERTS: Final = {
    "device": "open_or_join_incident",
    "resident": "open_or_join_resident_incident",
    "building": "open_or_join_building_incident",
}
"""The statement that opens or joins an incident of each scope (see IncidentDraft)."""


class Priority(IntEnum):
    """1 is the most urgent; the dispatch queue is ordered by it."""

    CRITICAL = 1
    URGENT = 2
    ROUTINE = 3


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

    @property
    def lock_order(self) -> tuple[str, str, str]:
        """Scope, subject, type: the order every writer opens or joins incidents in, so
        that two transactions touching the same subjects lock them in the same order
        and cannot deadlock."""
        if self.scope == "resident":
            return ("resident", f"{self.resident_id:020d}", self.type)
        if self.scope == "building":
            return ("building", f"{self.community_id:020d}/{self.building}", self.type)
        return ("device", self.device_id or "", self.type)


@dataclass(frozen=True, slots=True)
class IncidentOutcome:
    """Which incident an event landed in, and whether it was opened by it."""

    incident_id: int
    opened: bool


async def open_or_join(
    conn: AsyncConnection[Any],
    draft: IncidentDraft,
    *,
    event_id: int | None,
    event_ts: datetime,
    actor: str = SYSTEM_ACTOR,
    queue: QueueSettings | None = None,
) -> IncidentOutcome:
    """Open the incident ``draft`` describes, or join its subject's active one of its type
    (the device's, the resident's or the building's, by ``draft.scope``).

    Links the event (None for an incident no event caused, such as a silent device)
    to the incident either way, logs the opening and arms its unclaimed timer with
    ``queue``'s limits (the defaults when ``None``). Must run inside a transaction (the
    caller's), so the incident commits with its event. Raises
    StorageError when the database refuses.
    """
    sql = queries()
    query = _UPSERTS[draft.scope]
    with storage_errors(query):
        cur = await conn.execute(
            sql[query],
            {
                "type": draft.type,
                "priority": int(draft.priority),
                "community_id": draft.community_id,
                "building": draft.building,
                "unit": draft.unit,
                "device_id": draft.device_id,
                "resident_id": draft.resident_id,
                "event_id": event_id,
                "event_ts": event_ts,
            },
        )
        row = await cur.fetchone()
    if row is None:
        raise StorageError("no incident row returned", query=query)
    incident_id, status, opened = int(row[0]), str(row[1]), bool(row[2])
    if event_id is not None:
        with storage_errors("link_incident_event"):
            await conn.execute(
                sql["link_incident_event"], {"incident_id": incident_id, "event_id": event_id}
            )
    if opened:
        await enqueue(conn, incident_id=incident_id, event=WebhookEvent.OPENED)
        await arm_unclaimed(conn, incident_id, queue or QueueSettings())
        with storage_errors("log_incident_change"):
            await conn.execute(
                sql["log_incident_change"],
                {
                    "incident_id": incident_id,
                    "from_status": None,
                    "to_status": status,
                    "actor": actor,
                    "note": f"{draft.cause} from device {draft.device_id}"
                    if draft.resident_id is None
                    else f"{draft.cause}: resident {draft.resident_id}",
                },
            )
    return IncidentOutcome(incident_id, opened)
