"""Escalation workers: incidents left unclaimed or unacknowledged get more urgent.

A round (``fire_due``) is one transaction: it takes due timers and their incidents
with ``FOR UPDATE SKIP LOCKED``, and for each one raises the incident's priority one
step (P3 → P2 → P1; a P1 stays P1) and its escalation level by one, logs it, writes
the ``incident.escalated`` webhook outbox rows (the supervisors' subscription filters
on that event) and re-arms the timer ``repeat_s`` later, so it repeats until a
dispatcher claims or acknowledges the incident, which deletes the timer.

Guarantees, for any number of workers in any number of processes:

- no timer fires twice for one due time: a worker holds the timer's row lock from
  taking it to committing its new due time, and other workers skip locked rows;
- a worker killed or cancelled mid-round loses nothing: its transaction rolls back,
  the timer stays due, and the next round (of any worker) fires it;
- a timer never fires before its due time, both read from the database's clock; a
  worker sleeps until the earliest known due time or ``poll_interval_s``, whichever is
  sooner, so a timer fires within a few milliseconds of due when workers are idle.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection

from cloud.backoff import Backoff
from cloud.errors import StorageError
from cloud.queue import timers
from cloud.queue.states import IncidentStatus
from cloud.queue.timers import TimerKind
from cloud.settings import QueueSettings
from cloud.storage.database import storage_errors
from cloud.storage.pool import Pool
from cloud.storage.sql import queries
from cloud.webhooks.outbox import WebhookEvent, enqueue

log = logging.getLogger(__name__)

ESCALATION_ACTOR: Final = "escalation"
"""The ``actor`` of the log rows escalations write."""

_WAITING_STATUS: Final = {
    TimerKind.UNCLAIMED: IncidentStatus.OPEN,
    TimerKind.UNACKNOWLEDGED: IncidentStatus.CLAIMED,
}
"""The status an incident is in while each kind of timer still has a reason to fire."""

_MIN_SLEEP_S: Final = 0.005
_BUSY_RETRY_S: Final = 0.05
"""How soon to look again at a due timer another worker or a transition holds."""


@dataclass(frozen=True, slots=True)
class Escalation:
    """One timer firing: the incident went from ``from_priority`` to ``to_priority``."""

    incident_id: int
    kind: TimerKind
    due_at: datetime
    fired_at: datetime
    from_priority: int
    to_priority: int
    level: int
    repeat: int
    """1 for the first firing of this timer, 2 for the next, and so on."""


async def fire_due(conn: AsyncConnection[Any], settings: QueueSettings) -> list[Escalation]:
    """Fire up to ``settings.batch_size`` due timers in one transaction; return them.

    Takes an autocommit connection and commits before returning. A timer whose
    incident has moved on (which the transitions prevent by deleting it) is deleted
    without firing. Raises StorageError when the database fails; nothing is then fired.
    """
    sql = queries()
    fired: list[Escalation] = []
    async with conn.transaction():
        with storage_errors("take_due_timers"):
            cur = await conn.execute(sql["take_due_timers"], {"limit": settings.batch_size})
            due = await cur.fetchall()
        for incident_id, kind_name, due_at, fired_count, status, priority, waited_s, now in due:
            kind = TimerKind(kind_name)
            if status != _WAITING_STATUS[kind]:
                await timers.cancel(conn, incident_id, kind)
                continue
            with storage_errors("escalate_incident"):
                cur = await conn.execute(sql["escalate_incident"], {"incident_id": incident_id})
                raised = await cur.fetchone()
            assert raised is not None  # the row is locked, so it still exists
            to_priority, level = int(raised[0]), int(raised[1])
            limit_s = (
                settings.unclaimed_s(priority)
                if kind is TimerKind.UNCLAIMED
                else settings.unacknowledged_s(priority)
            )
            note = (
                f"still {kind} {waited_s:.0f} s after opening (P{priority} limit {limit_s:g} s): "
                f"priority P{priority} → P{to_priority}, escalation level {level}"
            )
            with storage_errors("log_incident_change"):
                await conn.execute(
                    sql["log_incident_change"],
                    {
                        "incident_id": incident_id,
                        "from_status": status,
                        "to_status": status,
                        "actor": ESCALATION_ACTOR,
                        "note": note,
                    },
                )
            await enqueue(conn, incident_id=incident_id, event=WebhookEvent.ESCALATED)
            with storage_errors("rearm_timer"):
                await conn.execute(
                    sql["rearm_timer"],
                    {"incident_id": incident_id, "kind": str(kind), "repeat_s": settings.repeat_s},
                )
            fired.append(
                Escalation(
                    incident_id=incident_id,
                    kind=kind,
                    due_at=due_at,
                    fired_at=now,
                    from_priority=int(priority),
                    to_priority=to_priority,
                    level=level,
                    repeat=int(fired_count) + 1,
                )
            )
    return fired


async def next_due_in(conn: AsyncConnection[Any]) -> float | None:
    """Seconds until the earliest timer is due (negative when overdue); None when none."""
    with storage_errors("next_timer_due_in"):
        cur = await conn.execute(queries()["next_timer_due_in"])
        row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


class EscalationWorker:
    """Fires due timers round after round until cancelled.

    Several may share ``pool``; each round checks out a connection for its one
    transaction. A failed round (the database unavailable, or any unforeseen error) is
    logged, counted in ``errors`` and retried with capped, jittered backoff: its
    transaction rolled back, so its timers are still due. ``fired`` counts the
    escalations this worker committed.
    """

    def __init__(self, pool: Pool, settings: QueueSettings, *, name: str = "escalation") -> None:
        self.pool = pool
        self.settings = settings
        self.name = name
        self.fired = 0
        self.errors = 0
        self._backoff = Backoff(initial=min(0.5, settings.poll_interval_s), cap=30.0)

    async def run(self) -> None:
        """Run rounds forever; returns only by cancellation."""
        while True:
            try:
                delay = await self.round()
            except (StorageError, psycopg.Error) as exc:
                self.errors += 1
                delay = self._backoff.next_delay()
                log.warning("%s: round failed, next in %.1f s: %s", self.name, delay, exc)
            except Exception:
                # The outer loop of a long-lived task: an escaping error would stop every
                # escalation and, through the TaskGroup, the rest of ``anju cloud run``.
                self.errors += 1
                delay = self._backoff.next_delay()
                log.exception("%s: round failed unexpectedly, next in %.1f s", self.name, delay)
            else:
                self._backoff.reset()
            await asyncio.sleep(delay)

    async def round(self) -> float:
        """Fire what is due now; return how long to sleep before the next round."""
        async with self.pool.connection(timeout=10) as conn:
            fired = await fire_due(conn, self.settings)
            for escalation in fired:
                log.info(
                    "%s: incident %d %s, escalated P%d → P%d (level %d, repeat %d)",
                    self.name,
                    escalation.incident_id,
                    escalation.kind,
                    escalation.from_priority,
                    escalation.to_priority,
                    escalation.level,
                    escalation.repeat,
                )
            self.fired += len(fired)
            if len(fired) >= self.settings.batch_size:
                return 0.0
            due_in = await next_due_in(conn)
        poll = self.settings.poll_interval_s
        if due_in is None:
            return poll
        if due_in <= 0:
            return min(poll, _BUSY_RETRY_S)
        return min(poll, max(due_in, _MIN_SLEEP_S))
