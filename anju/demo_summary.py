"""What the demo reports at the end (``--summary-json``), counted in the database.

The counts come from the tables the cloud wrote, not from the demo's own view, so
the summary shows what reached the cloud: a door counts as released once its
``door.unlocked_by_fire`` event was stored, a webhook as delivered once its outbox
row says so, a band as reporting once a reading of it was stored. The wearer's heart
rate is the one the API answered while the demo ran.
"""

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import psycopg

DELIVERY_STATUSES: Final = ("delivered", "pending", "dead")


@dataclass
class WearableSummary:
    """The resident the demo follows: their band's heart rate and their SOS."""

    device: str = ""
    """The wearer's CB-300, whose SOS the demo presses."""
    resident_id: int | None = None
    """The wearer as ``POST /residents`` registered them (location only)."""
    community: str = ""
    building: str = ""
    unit: str = ""
    bands: int = 0
    """Wristbands the demo hands out (CB-300 and CB-100), each bound to its wearer."""
    bands_reporting: int = 0
    """Bands with at least one reading stored by the cloud."""
    heart_rate_bpm: float | None = None
    """The wearer's latest heart rate as ``GET /devices/{id}/readings`` answered."""
    heart_rate_seen: int = 0
    """The wearer's heart-rate readings the demo read back through the API."""
    heart_rate_readings: int = 0
    """The wearer's heart-rate readings stored (counted in the database at the end)."""
    sos_latency_ms: float | None = None
    """From the SOS press on the band to its incident listed by ``GET /incidents``."""
    sos_pipeline_latency_ms: float | None = None
    """From the gateway's ``wearable.sos`` event (its ts) to the incident's commit."""
    sos_resident: dict[str, Any] = field(default_factory=dict)
    """Whom the SOS incident is about, as ``GET /incidents/{id}/resident`` answered."""
    sos_incident: dict[str, Any] = field(default_factory=dict)
    """The SOS incident as ``GET /incidents/{id}`` showed it when the run ended."""


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
    wearable: WearableSummary = field(default_factory=WearableSummary)


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


_BANDS_REPORTING: Final = """
    SELECT count(DISTINCT r.device_id)
    FROM readings r JOIN devices d ON d.id = r.device_id
    WHERE d.kind = 'wearable'
"""
_HEART_RATE_READINGS: Final = (
    "SELECT count(*) FROM readings WHERE device_id = %s AND metric = 'heart_rate_bpm'"
)


async def count_into(summary: DemoSummary, database_url: str) -> None:
    """Fill ``summary``'s counts, and the pipeline latencies of the alarm and the SOS,
    from the database."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        for name, query in _COUNTS.items():
            setattr(summary, name, await _count(conn, query))
        rows = await (
            await conn.execute("SELECT status, count(*) FROM webhook_deliveries GROUP BY status")
        ).fetchall()
        summary.webhook_deliveries.update({str(status): int(n) for status, n in rows})
        summary.pipeline_latency_ms = await _pipeline_latency_ms(conn, summary.alarm_device)
        wearable = summary.wearable
        if wearable.device:
            wearable.bands_reporting = await _count(conn, _BANDS_REPORTING)
            wearable.heart_rate_readings = await _count(conn, _HEART_RATE_READINGS, wearable.device)
            wearable.sos_pipeline_latency_ms = await _pipeline_latency_ms(
                conn, wearable.device, "sos"
            )


async def _count(conn: psycopg.AsyncConnection[Any], query: str, *params: object) -> int:
    row = await (await conn.execute(query, params or None)).fetchone()
    return int(row[0]) if row else 0


async def _pipeline_latency_ms(
    conn: psycopg.AsyncConnection[Any], device_id: str, incident_type: str | None = None
) -> float | None:
    """From the edge reading the alarm bit or SOS flag (event ts) to the commit of the
    device's first incident (of ``incident_type``, when given)."""
    query = """
        SELECT extract(epoch FROM i.opened_at - e.ts) * 1000
        FROM incidents i JOIN events e ON e.id = i.first_event_id
        WHERE i.device_id = %(device)s AND (%(type)s::text IS NULL OR i.type = %(type)s)
        ORDER BY i.opened_at LIMIT 1
    """
    row = await (await conn.execute(query, {"device": device_id, "type": incident_type})).fetchone()
    return round(float(row[0]), 1) if row and row[0] is not None else None


def summary_json(summary: DemoSummary) -> dict[str, Any]:
    data = asdict(summary)
    data["finished_at"] = datetime.now(UTC).isoformat()
    return data
