"""Escalation timers: armed, cancelled and re-armed in the caller's transaction.

A timer row exists exactly while its condition is unmet (``unclaimed`` from the
opening until the claim, ``unacknowledged`` from the claim until the acknowledgement),
so whatever commits the change commits the timer with it; the ``(incident_id, kind)``
key keeps one of each. Due times come from the database clock (``now()``), never a
process's, so workers on several machines agree on them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from psycopg import AsyncConnection

from cloud.settings import QueueSettings
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries


class TimerKind(StrEnum):
    UNCLAIMED = "unclaimed"
    UNACKNOWLEDGED = "unacknowledged"


async def arm_unclaimed(
    conn: AsyncConnection[Any], incident_id: int, settings: QueueSettings
) -> None:
    """Arm the incident's unclaimed timer, due its priority's limit after the opening.

    Call it in the transaction that opens the incident; arming twice keeps the first.
    Raises StorageError when the database refuses.
    """
    limits = [settings.unclaimed_s(priority) for priority in (1, 2, 3)]
    with storage_errors("arm_unclaimed_timer"):
        await conn.execute(
            queries()["arm_unclaimed_timer"], {"incident_id": incident_id, "limits_s": limits}
        )


async def arm_unacknowledged(
    conn: AsyncConnection[Any], incident_id: int, settings: QueueSettings
) -> None:
    """Arm the unacknowledged timer: due the priority's limit after the opening, and at
    least ``settings.repeat_s`` from now. Call it in the claim's transaction."""
    limits = [settings.unacknowledged_s(priority) for priority in (1, 2, 3)]
    with storage_errors("arm_unacknowledged_timer"):
        await conn.execute(
            queries()["arm_unacknowledged_timer"],
            {"incident_id": incident_id, "limits_s": limits, "grace_s": settings.repeat_s},
        )


async def cancel(
    conn: AsyncConnection[Any], incident_id: int, kind: TimerKind | None = None
) -> None:
    """Delete the incident's timer of ``kind`` (every timer when ``None``)."""
    with storage_errors("cancel_timers"):
        await conn.execute(
            queries()["cancel_timers"],
            {"incident_id": incident_id, "kind": None if kind is None else str(kind)},
        )
