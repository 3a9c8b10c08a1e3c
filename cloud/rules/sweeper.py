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

from psycopg_pool import AsyncConnectionPool, PoolTimeout

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
    ``queue`` (its defaults when None); return how many."""
    now = datetime.now(UTC)
    with storage_errors("sweep"):
        async with pool.connection(timeout=30) as conn, conn.transaction():
            drafts = await sweep(conn, rules, now)
            for draft in drafts:
                await open_or_join(conn, draft, event_id=None, event_ts=now, queue=queue)
    for draft in drafts:
        log.warning("%s: %s %s", draft.type, draft.device_id, draft.cause)
    return len(drafts)


async def sweep_forever(
    pool: AsyncConnectionPool[Any],
    rules: RuleSet,
    queue: QueueSettings | None = None,
    every_s: float = SWEEP_EVERY_S,
) -> None:
    """Sweep every ``every_s`` seconds (jittered) until cancelled; failures are logged
    and the next round tries again."""
    while True:
        try:
            await sweep_once(pool, rules, queue)
        except (StorageError, PoolTimeout) as exc:
            log.warning("silence sweep failed, next round retries: %s", exc)
        await asyncio.sleep(every_s * random.uniform(0.9, 1.1))
