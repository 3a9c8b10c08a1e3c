"""The windowed rules' checker: burst and tailgating decided at their window's end.

Ingest records a check for each event such a rule must judge (``engine.evaluate``),
due once the window plus the rule's lateness has passed. This loop takes due checks
and, in one transaction per round, judges each on committed data (``engine.judge``),
opens or joins the incident it calls for, dated by the event, and deletes the check.

Any number of ingest processes may run it: checks are taken with ``FOR UPDATE SKIP
LOCKED``, so none is judged twice, and a checker stopped mid-round rolls its round back
for the next round (of any checker) to take. Repeats join the subject's active
incident, so the several checks of one burst make one incident.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from cloud.backoff import Backoff
from cloud.errors import StorageError
from cloud.incidents import IncidentDraft, open_or_join
from cloud.rules.config import RuleSet
from cloud.rules.context import DeviceContext
from cloud.rules.engine import DueCheck, after_opening, judge
from cloud.settings import QueueSettings
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries

log = logging.getLogger(__name__)

CHECK_LIMIT: Final = 200
"""Checks one round takes, so a backlog is worked off in bounded transactions."""
POLL_S: Final = 1.0
"""The longest a checker sleeps: a check recorded meanwhile is due at the earliest
after its rule's lateness, so it is judged at most this much late."""
_MIN_SLEEP_S: Final = 0.005


@dataclass(frozen=True, slots=True)
class CheckRound:
    """What one round did: checks judged, incidents opened and joined from them."""

    checked: int
    opened: int
    joined: int


async def check_once(
    pool: AsyncConnectionPool[Any], rules: RuleSet, queue: QueueSettings | None = None
) -> CheckRound:
    """Judge up to ``CHECK_LIMIT`` due checks in one transaction; incidents' escalation
    is timed by ``queue`` (its defaults when None). Raises StorageError when the
    database fails: nothing is then judged, and the checks stay due."""
    # Also wraps the checkout and the COMMIT, which fail with psycopg errors of their own.
    with storage_errors("rule_checks"):
        async with pool.connection(timeout=30) as conn, conn.transaction():
            return await _judge_due(conn, rules, queue)


async def _judge_due(
    conn: AsyncConnection[Any], rules: RuleSet, queue: QueueSettings | None
) -> CheckRound:
    checks = await _take_due(conn)
    drafts = [
        (draft, check)
        for _, check in checks
        if check is not None and (draft := await judge(conn, rules, check)) is not None
    ]
    tally: Counter[bool] = Counter()
    # One order for every checker and ingest worker (by subject), as the writer keeps,
    # so two transactions touching the same incidents never deadlock.
    while drafts:
        follow_ups: list[tuple[IncidentDraft, DueCheck]] = []
        for draft, check in sorted(drafts, key=lambda pair: pair[0].lock_order):
            incident = await open_or_join(
                conn, draft, event_id=check.event_id, event_ts=check.ts, queue=queue
            )
            tally[incident.opened] += 1
            if incident.opened:
                log.warning("%s: %s %s", draft.type, draft.device_id, draft.cause)
                follow_ups.extend(
                    (extra, check) for extra in await after_opening(conn, rules, draft)
                )
        drafts = follow_ups
    if checks:
        with storage_errors("delete_rule_checks"):
            await conn.execute(
                queries()["delete_rule_checks"], {"ids": [check_id for check_id, _ in checks]}
            )
    return CheckRound(len(checks), tally[True], tally[False])


async def check_forever(
    pool: AsyncConnectionPool[Any], rules: RuleSet, queue: QueueSettings | None = None
) -> None:
    """Judge checks as they fall due until cancelled: a full round goes again at once,
    otherwise the checker sleeps until the earliest check is due (at most ``POLL_S``).
    A failed round is logged and retried with backoff (the checks stay due): an
    unforeseen failure must not end the ingest process this task runs in."""
    backoff = Backoff(initial=0.5, cap=30.0)
    while True:
        try:
            done = await check_once(pool, rules, queue)
            if done.checked >= CHECK_LIMIT:
                continue
            with storage_errors("next_rule_check_due_in"):
                async with pool.connection(timeout=30) as conn:
                    wait = await _next_due_in(conn)
            backoff.reset()
        except StorageError as exc:
            wait = backoff.next_delay()
            log.warning("rule checks failed, retrying in %.1f s: %s", wait, exc)
        except Exception:
            wait = backoff.next_delay()
            log.exception("rule checks failed unexpectedly; retrying in %.1f s", wait)
        else:
            wait = POLL_S if wait is None else min(max(wait, _MIN_SLEEP_S), POLL_S)
        await asyncio.sleep(wait)


async def _take_due(conn: AsyncConnection[Any]) -> list[tuple[int, DueCheck | None]]:
    """Due checks by id, each with what its rule needs; None for an event whose device
    is no longer registered, which has nothing to open an incident for."""
    with storage_errors("take_due_rule_checks"):
        cur = await conn.execute(queries()["take_due_rule_checks"], {"limit": CHECK_LIMIT})
        rows = await cur.fetchall()
    if not rows:
        return []
    with storage_errors("devices_for_rules"):
        cur = await conn.execute(
            queries()["devices_for_rules"], {"devices": sorted({row[6] for row in rows})}
        )
        contexts = {row[0]: DeviceContext(*row) for row in await cur.fetchall()}
    return [
        (
            check_id,
            DueCheck(rule, event_id, ts, event_type, door, contexts[device])
            if device in contexts
            else None,
        )
        for check_id, rule, event_id, ts, event_type, door, device in rows
    ]


async def _next_due_in(conn: AsyncConnection[Any]) -> float | None:
    with storage_errors("next_rule_check_due_in"):
        cur = await conn.execute(queries()["next_rule_check_due_in"])
        row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])
