"""Evaluating the rule file against events as they are ingested, and sweeping for silence.

``evaluate`` runs inside the ingest transaction that stored the event, so the incidents
it asks for commit with the event. Rules that compare events within a window (burst,
tailgating) cannot be decided there: an event of the window may still be in flight, in
a later batch or in another worker's uncommitted group. For them ``evaluate`` records a
check, due when the window plus the rule's ``lateness_s`` has passed, and ``judge``
decides it then on committed data (``cloud.rules.checker`` takes due checks). A burst
already complete in what the transaction sees opens at once: more events can only add
to a burst, so deciding early never needs undoing. ``after_opening`` adds the incidents
an opened incident brings with it (a fire's evacuation help). ``sweep`` finds devices
and gateways silent past their rule's limit; it runs on a timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Final

from psycopg import AsyncConnection

from cloud.errors import StorageError
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
    """The incidents ``event`` calls for now under the rules of its device's community.

    ``event`` must be stored in ``conn``'s transaction already, exactly as given (its
    ``ts`` as stored): a windowed rule's check names the stored row. Raises
    StorageError when it is not there, or when the database fails.
    """
    drafts: list[IncidentDraft] = []
    for name, rule in rules.triggered_by(event.type, device.community):
        if rule.kind == "resident":
            drafts.extend(await _residents_at_home(conn, rule, event, device))
        elif rule.kind == "burst":
            if await _burst_holds(conn, rule, device.device_id, str(event.type), event.ts):
                drafts.append(_draft(rule, device, str(event.type)))
            else:
                await _record_check(conn, name, rule, event)
        elif rule.kind == "tailgating":
            if event.data.door is not None:
                await _record_check(conn, name, rule, event)
        elif _holds(rules, rule, event):
            drafts.append(_draft(rule, device, str(event.type)))
    return drafts


@dataclass(frozen=True, slots=True)
class DueCheck:
    """A windowed rule's check of one committed event, as the checker takes it."""

    rule: str
    """The rule's name in the rule file."""
    event_id: int
    ts: datetime
    type: str
    door: str | None
    """The door a line crossing names (``data.door``)."""
    device: DeviceContext


async def judge(
    conn: AsyncConnection[Any], rules: RuleSet, check: DueCheck
) -> IncidentDraft | None:
    """The incident a due check calls for, judged on what is committed now; None when
    none, or when its rule is no longer an enabled windowed rule of the community."""
    rule = rules.for_community(check.device.community).get(check.rule)
    if rule is None:
        return None
    if rule.kind == "burst":
        holds = await _burst_holds(conn, rule, check.device.device_id, check.type, check.ts)
    elif rule.kind == "tailgating" and check.door is not None:
        assert rule.within_s is not None
        holds = await _tailgated(conn, check.door, check.ts, rule.within_s)
    else:
        return None
    return _draft(rule, check.device, check.type) if holds else None


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


def _holds(rules: RuleSet, rule: Rule, event: Event) -> bool:
    """Whether a rule that needs no window holds for ``event``."""
    if rule.kind == "event":
        return True
    if rule.kind == "at_least":
        assert rule.field is not None
        assert rule.value is not None
        measured = getattr(event.data, rule.field, None)
        return isinstance(measured, int | float) and measured >= rule.value
    if rule.kind == "schedule":
        return (event.data.zone is not None and event.data.zone in rule.zones) or in_hours(
            rule, event.ts.astimezone(rules.zone).time()
        )
    return False


async def _record_check(conn: AsyncConnection[Any], name: str, rule: Rule, event: Event) -> None:
    """Record the check of ``event`` by the windowed rule ``name``, due when every event
    that can still change the answer has had ``lateness_s`` to arrive: a burst's windows
    reach ``within_s`` past the event, a tailgating window ends at the crossing; counted
    from now when the window has passed already (a gateway's backlog)."""
    assert rule.within_s is not None
    reach = rule.within_s if rule.kind == "burst" else 0.0
    with storage_errors("record_rule_check"):
        cur = await conn.execute(
            queries()["record_rule_check"],
            {
                "rule": name,
                "device": event.device,
                "type": str(event.type),
                "ts": event.ts,
                "seq": event.seq,
                "window_end": event.ts + timedelta(seconds=reach),
                "lateness": timedelta(seconds=rule.lateness_s),
            },
        )
        found = await cur.fetchone()
    if found is None:
        raise StorageError(
            f"rule {name}: no stored event of device {event.device} ({event.type}, seq "
            f"{event.seq}, ts {event.ts.isoformat()}) to check: evaluate needs the event "
            "as stored in this transaction",
            query="record_rule_check",
        )


def in_hours(rule: Rule, local: time) -> bool:
    """Whether ``local`` falls in the rule's closed hours (a span may cross midnight)."""
    span = rule.closed_hours
    if span is None:
        return False
    start, end = span
    return start <= local < end if start <= end else local >= start or local < end


async def _burst_holds(
    conn: AsyncConnection[Any], rule: Rule, device: str, event_type: str, at: datetime
) -> bool:
    """Whether ``rule.count`` events of the type at ``device`` fit in one window of
    ``rule.within_s`` holding the event at ``at``, in what ``conn`` sees."""
    assert rule.count is not None
    assert rule.within_s is not None
    with storage_errors("burst_around"):
        cur = await conn.execute(
            queries()["burst_around"],
            {
                "device": device,
                "type": event_type,
                "at": at,
                "within": timedelta(seconds=rule.within_s),
            },
        )
        row = await cur.fetchone()
    return row is not None and int(row[0]) >= rule.count


async def _tailgated(conn: AsyncConnection[Any], door: str, at: datetime, within_s: float) -> bool:
    """Whether more people crossed ``door`` inward than its grants let through in the
    ``within_s`` up to the crossing at ``at``."""
    with storage_errors("door_traffic"):
        cur = await conn.execute(
            queries()["door_traffic"],
            {"door": door, "since": at - timedelta(seconds=within_s), "until": at},
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
