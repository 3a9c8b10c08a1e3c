"""What the demo reports at the end (``--summary-json``), counted in the database.

The counts come from the tables the cloud wrote, not from the demo's own view, so
the summary shows what reached the cloud: a door counts as released once its
``door.unlocked_by_fire`` event was stored, a webhook as delivered once its outbox
row says so.
"""

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import psycopg

DELIVERY_STATUSES: Final = ("delivered", "pending", "dead")


@dataclass
class DemoSummary:
    """What ``--summary-json`` writes."""

    devices: int = 0
    readings_stored: int = 0
    events: int = 0
    smoke_alarm_events: int = 0
    incidents: int = 0
    open_incidents: int = 0
    escalations: int = 0
    """Escalations of every incident (the sum of their escalation levels)."""
    egress_doors: int = 0
    """Egress doors in the building of the fire: those the fire should release."""
    doors_released: int = 0
    """Doors whose release by the fire reached the cloud (a stored door.unlocked_by_fire)."""
    webhook_subscriptions: int = 0
    webhook_deliveries: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(DELIVERY_STATUSES, 0)
    )
    """Outbox rows by status: delivered, pending (still being tried) and dead."""
    alarm_latency_ms: float | None = None
    pipeline_latency_ms: float | None = None
    alarm_device: str = ""
    broker: str = ""
    database: str = ""
    api: str = ""
    api_key: str = ""
    """The run's admin key, as the start-up lines printed it. Safe to write out: it is
    revoked when the run ends, and the embedded database is deleted with the run."""
    escalation_limits: str = ""
    duration_s: float = 0.0
    incident: dict[str, Any] = field(default_factory=dict)
    """The fire's incident as ``GET /incidents/{id}`` showed it when the run ended,
    with its log (opening and escalations)."""


_COUNTS: Final = {
    "devices": "SELECT count(*) FROM devices",
    "readings_stored": "SELECT count(*) FROM readings",
    "events": "SELECT count(*) FROM events",
    "smoke_alarm_events": "SELECT count(*) FROM events WHERE type = 'smoke.alarm'",
    "incidents": "SELECT count(*) FROM incidents",
    "open_incidents": "SELECT count(*) FROM incidents WHERE status = 'open'",
    "escalations": "SELECT coalesce(sum(escalation_level), 0) FROM incidents",
    "doors_released": (
        "SELECT count(DISTINCT device_id) FROM events WHERE type = 'door.unlocked_by_fire'"
    ),
    "webhook_subscriptions": "SELECT count(*) FROM webhook_subscriptions",
}


async def count_into(summary: DemoSummary, database_url: str) -> None:
    """Fill ``summary``'s counts, and the alarm's pipeline latency, from the database."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        for name, query in _COUNTS.items():
            row = await (await conn.execute(query)).fetchone()
            setattr(summary, name, int(row[0]) if row else 0)
        rows = await (
            await conn.execute("SELECT status, count(*) FROM webhook_deliveries GROUP BY status")
        ).fetchall()
        summary.webhook_deliveries.update({str(status): int(n) for status, n in rows})
        summary.pipeline_latency_ms = await _pipeline_latency_ms(conn, summary.alarm_device)


async def _pipeline_latency_ms(conn: psycopg.AsyncConnection[Any], device_id: str) -> float | None:
    """From the edge reading the alarm bit (event ts) to the incident's commit."""
    query = """
        SELECT extract(epoch FROM i.opened_at - e.ts) * 1000
        FROM incidents i JOIN events e ON e.id = i.first_event_id
        WHERE i.device_id = %s ORDER BY i.opened_at LIMIT 1
    """
    row = await (await conn.execute(query, (device_id,))).fetchone()
    return round(float(row[0]), 1) if row and row[0] is not None else None


def summary_json(summary: DemoSummary) -> dict[str, Any]:
    data = asdict(summary)
    data["finished_at"] = datetime.now(UTC).isoformat()
    return data
