"""The silence sweep on a timer: smoke detectors and gateways quiet past their limit.

Silence is the absence of events, so no ingested event can trigger it; this loop asks
the database every ``every_s`` seconds instead. Any number of ingest processes may
run it: a subject with an active incident of the type is skipped, and two sweeps
racing on one subject end in one incident.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from typing import Any, Final

from psycopg_pool import AsyncConnectionPool

from cloud.errors import StorageError
from cloud.incidents import open_or_join
from cloud.rules.config import RuleSet
from cloud.rules.engine import sweep
from cloud.settings import QueueSettings
from cloud.storage.database import storage_errors

log = logging.getLogger(__name__)

SWEEP_EVERY_S: Final = 30.0


async def sweep_once(
    pool: AsyncConnectionPool[Any], rules: RuleSet, queue: QueueSettings | None = None
) -> int:
    """Open the incidents the liveness rules call for now, their escalation timed by
    ``queue`` (its defaults when None); return how many were opened (not joined)."""
    now = datetime.now(UTC)
    opened = 0
    with storage_errors("sweep"):
        async with pool.connection(timeout=30) as conn, conn.transaction():
            for draft in await sweep(conn, rules, now):
                incident = await open_or_join(conn, draft, event_id=None, event_ts=now, queue=queue)
                if incident.opened:
                    opened += 1
                    log.warning("%s: %s %s", draft.type, draft.device_id, draft.cause)
    return opened


async def sweep_forever(
    pool: AsyncConnectionPool[Any],
    rules: RuleSet,
    queue: QueueSettings | None = None,
    every_s: float = SWEEP_EVERY_S,
) -> None:
    """Sweep every ``every_s`` seconds (jittered) until cancelled. A failure is logged
    and the next round tries again: an unforeseen one must not end the ingest process
    this task runs in."""
    while True:
        try:
            await sweep_once(pool, rules, queue)
        except StorageError as exc:
            log.warning("silence sweep failed, next round retries: %s", exc)
        except Exception:
            log.exception("silence sweep failed unexpectedly; next round retries")
        await asyncio.sleep(every_s * random.uniform(0.9, 1.1))
