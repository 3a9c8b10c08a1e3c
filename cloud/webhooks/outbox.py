"""The transactional outbox: incident changes become webhook deliveries atomically.

Whoever changes an incident (ingest opening it, a dispatcher claiming it, the
escalation worker raising it) calls ``enqueue`` in the same transaction, so a
delivery exists exactly when the change it announces was committed; delivery
workers send it later, retrying until it lands or is dead-lettered.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from psycopg import AsyncConnection

from cloud.storage.database import storage_errors
from cloud.storage.sql import queries


class WebhookEvent(StrEnum):
    """What happened to an incident; subscriptions filter on these names."""

    OPENED = "incident.opened"
    CLAIMED = "incident.claimed"
    ACKNOWLEDGED = "incident.acknowledged"
    DISPATCHED = "incident.dispatched"
    RESOLVED = "incident.resolved"
    ESCALATED = "incident.escalated"


async def enqueue(conn: AsyncConnection[Any], *, incident_id: int, event: WebhookEvent) -> None:
    """Write the deliveries announcing ``event`` of ``incident_id``.

    One per active subscription of the incident's community or an ancestor whose
    filters match. Must run in the transaction that changed the incident. Reads
    nothing back, so in pipeline mode it travels with what follows. Raises
    StorageError when the database refuses (in pipeline mode, when the transaction's
    results are read).
    """
    with storage_errors("enqueue_incident_webhooks"):
        await conn.execute(
            queries()["enqueue_incident_webhooks"],
            {"incident_id": incident_id, "event_type": str(event)},
        )
