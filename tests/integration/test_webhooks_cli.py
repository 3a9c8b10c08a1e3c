"""``anju cloud webhooks`` as a separate process beside in-process workers: together
they deliver every delivery exactly once (the failing first attempts retried by
whichever worker comes next), and SIGTERM stops the process cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from psycopg import AsyncConnection

from tests.integration.webhook_support import (
    Receiver,
    Script,
    add_subscription,
    all_settled,
    community,
    deliveries,
    fast_settings,
    open_incidents,
    running_workers,
    wait_until,
)


async def test_a_worker_process_and_in_process_workers_share_the_outbox(
    database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.script = Script(fail_first=1, fail_status=502, delay_s=0.1)
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        community_id = await community(conn)
        await add_subscription(conn, community_id, receiver.url)
        await add_subscription(conn, community_id, receiver.url)
        await open_incidents(conn, community_id, 30)

    env = {
        **os.environ,
        "ANJU_DATABASE_URL": database_url,
        "ANJU_WEBHOOK_ALLOW_PRIVATE": "1",
        "ANJU_WEBHOOK_RETRY_SCHEDULE_S": "0.2,0.2",
        "ANJU_WEBHOOK_JITTER": "0",
        "ANJU_WEBHOOK_POLL_INTERVAL_S": "0.02",
        "ANJU_WEBHOOK_BATCH_SIZE": "4",
        "ANJU_WEBHOOK_TIMEOUT_S": "5",
    }
    anju = Path(sys.executable).with_name("anju")
    process = await asyncio.create_subprocess_exec(
        str(anju),
        "cloud",
        "webhooks",
        "--workers",
        "2",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        # The process starts first (and sends the first request); then workers here join.
        await wait_until(lambda: _heard(receiver), within_s=30, what="the process's first send")
        async with running_workers(
            database_url, fast_settings(batch_size=4, poll_interval_s=0.02), workers=2
        ) as here:
            await wait_until(lambda: all_settled(database_url), within_s=60, what="60 deliveries")
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode(errors="replace")

    rows = await deliveries(database_url)
    assert len(rows) == 60
    assert all((row["status"], row["attempts"]) == ("delivered", 2) for row in rows)
    counts = receiver.ids()
    assert set(counts.values()) == {2}
    assert all(receiver.answered_2xx(row["message_id"]) == 1 for row in rows)
    in_process = sum(worker.counters.delivered for worker in here)
    assert 0 < in_process < 60, f"the process delivered {60 - in_process} of 60"


async def _heard(receiver: Receiver) -> bool:
    return bool(receiver.requests)
