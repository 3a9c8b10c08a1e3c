"""Evaluating the rule file against events as they are ingested, and sweeping for silence.

``evaluate`` runs inside the ingest transaction that stored the event, so the incidents
it asks for commit with the event, and its windows (counted with SQL over ``events``)
already include the event itself and the rest of its group. ``after_opening`` adds the
incidents an opened incident brings with it (a fire's evacuation help). ``sweep``
finds devices and gateways silent past their rule's limit; it runs on a timer.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any, Final

from psycopg import AsyncConnection

from cloud.incidents import IncidentDraft, Priority
from cloud.rules.config import Rule, RuleSet
from cloud.rules.context import DeviceContext
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries
from schemas.wire import Event

SWEEP_LIMIT: Final = 500
"""Subjects one liveness rule opens incidents for per sweep round, so a city-wide outage
is taken in bounded transactions."""


async def evaluate(
    conn: AsyncConnection[Any], rules: RuleSet, event: Event, device: DeviceContext
) -> list[IncidentDraft]:
    """The incidents ``event`` calls for under the rules of its device's community."""
    drafts: list[IncidentDraft] = []
    for _, rule in rules.triggered_by(event.type, device.community):
        if rule.kind == "resident":
            drafts.extend(await _residents_at_home(conn, rule, event, device))
        elif await _holds(conn, rules, rule, event, device):
            drafts.append(_draft(rule, device, str(event.type)))
    return drafts


async def after_opening(
    conn: AsyncConnection[Any], rules: RuleSet, draft: IncidentDraft
) -> list[IncidentDraft]:
    """Incidents that an incident just opened brings: for a fire, evacuation help for
    every registered resident of the building who needs it."""
    if draft.type != rules.rules[rules.evacuation.after].incident or draft.building is None:
        return []
    with storage_errors("residents_needing_evacuation_help"):
        cur = await conn.execute(
            queries()["residents_needing_evacuation_help"],
            {"community_id": draft.community_id, "building": draft.building},
        )
        rows = await cur.fetchall()
    return [
        IncidentDraft(
            type=rules.evacuation.incident,
            priority=Priority(rules.evacuation.priority),
            community_id=draft.community_id,
            building=draft.building,
            unit=unit,
            device_id=None,
            cause=f"{draft.cause} in building {draft.building}",
            resident_id=resident,
        )
        for resident, unit in rows
    ]


async def sweep(conn: AsyncConnection[Any], rules: RuleSet, now: datetime) -> list[IncidentDraft]:
    """Incidents for devices and gateways silent past their liveness rule's limit.

    Only things seen at least once count: a device never heard from is an installation
    matter, not a fault. One incident per silence: a subject with an incident of the
    type opened since it fell silent is skipped, even once that incident was closed;
    devices behind a silent gateway are the gateway's incident. At most
    ``SWEEP_LIMIT`` subjects per rule and round; the next round takes the rest.
    """
    drafts: list[IncidentDraft] = []
    for name, base in rules.rules.items():
        if base.kind != "liveness" or base.after_s is None:
            continue
        # The shortest limit of any community finds every candidate; each is then held
        # to its own community's rule.
        shortest = min(
            [base.after_s]
            + [
                float(o[name]["after_s"])
                for o in rules.overrides.values()
                if "after_s" in o.get(name, {})
            ]
        )
        since = now - timedelta(seconds=shortest)
        if base.device_kind == "gateway":
            with storage_errors("silent_gateways"):
                cur = await conn.execute(
                    queries()["silent_gateways"],
                    {"since": since, "incident": base.incident, "limit": SWEEP_LIMIT},
                )
                found = [
                    (DeviceContext(g, "gateway", cid, path, None, None), seen)
                    for g, cid, path, seen in await cur.fetchall()
                ]
        else:
            with storage_errors("silent_devices"):
                cur = await conn.execute(
                    queries()["silent_devices"],
                    {
                        "kind": str(base.device_kind),
                        "since": since,
                        "incident": base.incident,
                        "limit": SWEEP_LIMIT,
                    },
                )
                found = [
                    (DeviceContext(d, k, cid, path, b, u), seen)
                    for d, k, cid, path, b, u, seen in await cur.fetchall()
                ]
        for context, last_seen in found:
            rule = rules.for_community(context.community).get(name)
            if rule is None or rule.after_s is None:
                continue
            if now - last_seen >= timedelta(seconds=rule.after_s):
                drafts.append(_draft(rule, context, f"silent since {last_seen:%Y-%m-%d %H:%M:%S}"))
    return drafts


def _draft(rule: Rule, device: DeviceContext, cause: str) -> IncidentDraft:
    return IncidentDraft(
        type=rule.incident,
        priority=Priority(rule.priority),
        community_id=device.community_id,
        building=device.building,
        unit=device.unit,
        device_id=device.device_id,
        cause=cause,
        per_building=rule.per == "building",
    )


async def _holds(
    conn: AsyncConnection[Any], rules: RuleSet, rule: Rule, event: Event, device: DeviceContext
) -> bool:
    if rule.kind == "event":
        return True
    if rule.kind == "at_least":
        assert rule.field is not None
        assert rule.value is not None
        measured = getattr(event.data, rule.field, None)
        return isinstance(measured, int | float) and measured >= rule.value
    if rule.kind == "burst":
        assert rule.count is not None
        assert rule.within_s is not None
        return await _burst(conn, event, device.device_id, rule.within_s) >= rule.count
    if rule.kind == "schedule":
        return (event.data.zone is not None and event.data.zone in rule.zones) or in_hours(
            rule, event.ts.astimezone(rules.zone).time()
        )
    if rule.kind == "tailgating":
        assert rule.within_s is not None
        return await _tailgated(conn, event, rule.within_s)
    return False


def in_hours(rule: Rule, local: time) -> bool:
    """Whether ``local`` falls in the rule's closed hours (a span may cross midnight)."""
    span = rule.closed_hours
    if span is None:
        return False
    start, end = span
    return start <= local < end if start <= end else local >= start or local < end


async def _burst(conn: AsyncConnection[Any], event: Event, device: str, within_s: float) -> int:
    with storage_errors("burst_around"):
        cur = await conn.execute(
            queries()["burst_around"],
            {
                "device": device,
                "type": str(event.type),
                "at": event.ts,
                "within": timedelta(seconds=within_s),
            },
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _tailgated(conn: AsyncConnection[Any], event: Event, within_s: float) -> bool:
    """Whether more people crossed the event's door than its grants let through."""
    door = event.data.door
    if door is None:
        return False
    with storage_errors("door_traffic"):
        cur = await conn.execute(
            queries()["door_traffic"],
            {"door": door, "since": event.ts - timedelta(seconds=within_s), "until": event.ts},
        )
        row = await cur.fetchone()
    return row is not None and int(row[0]) > int(row[1])


async def _residents_at_home(
    conn: AsyncConnection[Any], rule: Rule, event: Event, device: DeviceContext
) -> list[IncidentDraft]:
    if device.building is None or device.unit is None:
        return []
    with storage_errors("residents_at_home"):
        cur = await conn.execute(
            queries()["residents_at_home"],
            {"community_id": device.community_id, "building": device.building, "unit": device.unit},
        )
        rows = await cur.fetchall()
    return [
        IncidentDraft(
            type=rule.incident,
            priority=Priority(rule.priority),
            community_id=device.community_id,
            building=device.building,
            unit=device.unit,
            device_id=None,
            cause=f"{event.type} from device {device.device_id}",
            resident_id=resident,
        )
        for (resident,) in rows
    ]
