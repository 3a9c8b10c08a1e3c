"""What the ingest tests share: the settings of a test's ingest workers and a running
``run_ingest`` whose counters the test reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from cloud.app import run_ingest
from cloud.ingest.counters import IngestCounters
from cloud.settings import ApiSettings, CloudSettings, IngestSettings
from schemas.broker import parse_broker_url

START_S = 20.0


def ingest_settings(
    database_url: str, mqtt_url: str, unique_id: Callable[[str], str], **ingest: Any
) -> CloudSettings:
    """Settings of a test's own ingest: its own group and client ids, quick reconnects,
    and ``ingest`` over those."""
    return CloudSettings(
        database_url=database_url,
        mqtt=parse_broker_url(mqtt_url),
        api=ApiSettings(port=0),
        ingest=IngestSettings(
            **{
                "group": unique_id("group"),
                "client_id": unique_id("ingest"),
                "session_expiry_s": 120,
                "backoff_initial_s": 0.1,
                "backoff_cap_s": 1.0,
                "write_timeout_s": 10.0,
                "checkout_timeout_s": 2.0,
                **ingest,
            }
        ),
    )


@asynccontextmanager
async def running_ingest(settings: CloudSettings) -> AsyncIterator[IngestCounters]:
    """``run_ingest`` with ``settings``, subscribed before this yields its counters, and
    stopped on the way out."""
    totals = IngestCounters()
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_ingest(settings, stop=stop, counters=totals, started=started), name="test-ingest"
    )
    async with asyncio.timeout(START_S):
        await started.wait()
    try:
        yield totals
    finally:
        stop.set()
        async with asyncio.timeout(START_S):
            await task
