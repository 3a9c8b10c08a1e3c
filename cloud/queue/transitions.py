"""Dispatchers' actions on an incident, each one transaction.

Every action locks the incident's row (``SELECT … FOR UPDATE``), checks the move with
the pure state machine (``cloud.queue.states``), then in the same transaction changes
the incident, writes its ``incident_log`` row (who, when, from, to, note), writes the
webhook outbox rows announcing it, and arms or cancels escalation timers. Two
dispatchers claiming at once: the second waits for the first's row lock, then finds
the incident claimed and gets ``AlreadyClaimed``; exactly one wins.

Each function takes an autocommit connection (the pool's kind) and commits before it
returns. The transaction runs in pipeline mode: after the lock, whose row is read, the
statements travel with the COMMIT, so an action costs two round trips, not eight.
Raises IncidentNotFound, TransitionRefused (or a subclass) when the action is
refused, StorageError when the database fails; a refusal changes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from cloud.queue import timers
from cloud.queue.errors import IncidentNotFound
from cloud.queue.states import Action, Current, IncidentStatus, Outcome, next_status
from cloud.queue.timers import TimerKind
from cloud.settings import QueueSettings
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries
from cloud.webhooks.outbox import WebhookEvent, enqueue


@dataclass(frozen=True, slots=True)
class Transition:
    """What an action did: the incident moved from ``from_status`` to ``to_status``."""

    incident_id: int
    action: Action
    from_status: IncidentStatus
    to_status: IncidentStatus
    actor: str


async def claim(
    conn: AsyncConnection[Any], incident_id: int, *, actor: str, settings: QueueSettings
) -> Transition:
    """Claim an open incident for ``actor``; raises AlreadyClaimed if someone has it.

    Cancels the unclaimed timer and arms the unacknowledged one.
    """
    async with _action(conn):
        current = await _lock(conn, incident_id)
        to = next_status(Action.CLAIM, current, actor=actor)
        await _execute(conn, "claim_incident", {"incident_id": incident_id, "actor": actor})
        await timers.cancel(conn, incident_id, TimerKind.UNCLAIMED)
        await timers.arm_unacknowledged(conn, incident_id, settings)
        return await _record(conn, current, Action.CLAIM, to, actor, "", WebhookEvent.CLAIMED)


async def acknowledge(
    conn: AsyncConnection[Any], incident_id: int, *, actor: str, note: str = ""
) -> Transition:
    """Record that the claimant is in contact with the resident; ends escalation."""
    async with _action(conn):
        current = await _lock(conn, incident_id)
        to = next_status(Action.ACKNOWLEDGE, current, actor=actor)
        await _execute(conn, "acknowledge_incident", {"incident_id": incident_id})
        await timers.cancel(conn, incident_id, TimerKind.UNACKNOWLEDGED)
        return await _record(
            conn, current, Action.ACKNOWLEDGE, to, actor, note, WebhookEvent.ACKNOWLEDGED
        )


async def dispatch(
    conn: AsyncConnection[Any],
    incident_id: int,
    *,
    actor: str,
    dispatched_to: str,
    note: str = "",
) -> Transition:
    """Record who was sent to the resident (``dispatched_to``, such as a care team)."""
    async with _action(conn):
        current = await _lock(conn, incident_id)
        to = next_status(Action.DISPATCH, current, actor=actor)
        await _execute(
            conn,
            "dispatch_incident",
            {"incident_id": incident_id, "dispatched_to": dispatched_to},
        )
        text = _join(f"sent {dispatched_to}", note)
        return await _record(
            conn, current, Action.DISPATCH, to, actor, text, WebhookEvent.DISPATCHED
        )


async def resolve(
    conn: AsyncConnection[Any],
    incident_id: int,
    *,
    actor: str,
    outcome: Outcome,
    notes: str = "",
) -> Transition:
    """Close the incident with ``outcome``: status ``false_alarm`` for that outcome,
    ``resolved`` otherwise. ``notes`` go into the log row and, when given, the notes.
    Cancels every timer the incident still has."""
    async with _action(conn):
        current = await _lock(conn, incident_id)
        to = next_status(Action.RESOLVE, current, actor=actor, outcome=outcome)
        await _execute(
            conn,
            "resolve_incident",
            {"incident_id": incident_id, "status": str(to), "outcome": str(outcome)},
        )
        await timers.cancel(conn, incident_id)
        if notes:
            await _execute(
                conn,
                "add_incident_note",
                {"incident_id": incident_id, "author": actor, "text": notes},
            )
        text = _join(f"outcome {outcome}", notes)
        return await _record(conn, current, Action.RESOLVE, to, actor, text, WebhookEvent.RESOLVED)


@dataclass(frozen=True, slots=True)
class Note:
    id: int
    incident_id: int
    at: datetime
    author: str
    text: str


async def add_note(conn: AsyncConnection[Any], incident_id: int, *, author: str, text: str) -> Note:
    """Append a dispatcher's note to the incident, whatever its status.

    A note is not a state change: it is kept in ``incident_notes``, not the log, and
    announces no webhook (webhooks never carry what dispatchers write about residents).
    Raises IncidentNotFound, or ValueError for an empty ``text``.
    """
    if not text.strip():
        raise ValueError("a note needs some text")
    sql = queries()
    with storage_errors("add_incident_note"):
        cur = await conn.execute(sql["incident_exists"], {"incident_id": incident_id})
        if await cur.fetchone() is None:
            raise IncidentNotFound(incident_id)
        cur = await conn.execute(
            sql["add_incident_note"],
            {"incident_id": incident_id, "author": author, "text": text},
        )
        row = await cur.fetchone()
    assert row is not None  # INSERT … RETURNING gives its row
    return Note(int(row[0]), incident_id, row[1], author, text)


@asynccontextmanager
async def _action(conn: AsyncConnection[Any]) -> AsyncIterator[None]:
    """The action's transaction, in pipeline mode. A statement whose result is not read
    fails at the COMMIT, so that is translated here too (StorageError)."""
    with storage_errors("incident_action"):
        async with conn.pipeline(), conn.transaction():
            yield


async def _lock(conn: AsyncConnection[Any], incident_id: int) -> Current:
    with storage_errors("lock_incident"):
        cur = await conn.execute(queries()["lock_incident"], {"incident_id": incident_id})
        row = await cur.fetchone()
    if row is None:
        raise IncidentNotFound(incident_id)
    return Current(incident_id, IncidentStatus(row[0]), row[1])


async def _execute(conn: AsyncConnection[Any], name: str, params: dict[str, object]) -> None:
    with storage_errors(name):
        await conn.execute(queries()[name], params)


async def _record(
    conn: AsyncConnection[Any],
    current: Current,
    action: Action,
    to: IncidentStatus,
    actor: str,
    note: str,
    event: WebhookEvent,
) -> Transition:
    await _execute(
        conn,
        "log_incident_change",
        {
            "incident_id": current.incident_id,
            "from_status": str(current.status),
            "to_status": str(to),
            "actor": actor,
            "note": note,
        },
    )
    await enqueue(conn, incident_id=current.incident_id, event=event)
    return Transition(current.incident_id, action, current.status, to, actor)


def _join(first: str, second: str) -> str:
    return f"{first}; {second}" if second else first
