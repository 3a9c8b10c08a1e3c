"""An escalation worker meets a failure nobody foresaw: it logs and counts it, keeps
running, and the round it lost is fired by its next one, so no timer is lost."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from psycopg import AsyncConnection

from cloud.queue import escalation
from cloud.queue.escalation import EscalationWorker
from cloud.settings import QueueSettings
from cloud.storage.pool import open_pool
from cloud.webhooks.outbox import WebhookEvent
from tests.integration.queue_support import make_site, open_incident, rows

FAST = QueueSettings(
    p1_unclaimed_s=0.5,
    p1_unacknowledged_s=2.0,
    repeat_s=60.0,
    poll_interval_s=0.1,
)


async def test_an_unexpected_error_neither_stops_the_worker_nor_loses_the_timer(
    database_url: str, conn: AsyncConnection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_enqueue = escalation.enqueue
    failures = 0

    async def enqueue_failing_once(
        conn: AsyncConnection[Any], *, incident_id: int, event: WebhookEvent
    ) -> None:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise RuntimeError("a failure nobody foresaw")
        await real_enqueue(conn, incident_id=incident_id, event=event)

    monkeypatch.setattr(escalation, "enqueue", enqueue_failing_once)
    incident = await open_incident(conn, await make_site(conn), device="sos-1", queue=FAST)

    async with open_pool(database_url, name="escalation-test", max_size=1) as pool:
        worker = EscalationWorker(pool, FAST, name="escalation-test")
        task = asyncio.create_task(worker.run(), name="escalation-test")
        deadline = time.monotonic() + 10
        try:
            while worker.fired == 0:
                assert not task.done(), f"the worker stopped: {task.exception()!r}"
                assert time.monotonic() < deadline, "the escalation never fired"
                await asyncio.sleep(0.02)
            assert not task.done()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    assert failures == 1
    assert worker.errors == 1
    assert rows(
        database_url,
        "SELECT count(*) FROM incident_log WHERE incident_id = %s AND actor = 'escalation'",
        incident,
    ) == [(1,)]
    assert rows(database_url, "SELECT fired_count FROM incident_timers") == [(1,)]
