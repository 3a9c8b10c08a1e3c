"""``anju cloud ingest --processes N`` as an operator runs it: N ingest processes on one
shared subscription, started, stopped and failed together, on the real broker and
database."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import psycopg

from cloud.registry import register_community, register_device, register_gateway
from schemas.broker import parse_broker_url
from schemas.topics import Channel, topic_for
from schemas.vocabulary import DeviceKind, EventType, Metric, Severity
from schemas.wire import Event, EventBatch, Reading, TelemetryBatch, encode

ANJU = Path(sys.executable).with_name("anju")
WAIT_S = 60.0
"""Generous: each step takes seconds; this only bounds a hang."""
DEVICES = 20
BATCHES = 40


class Ingest:
    """A running ``anju cloud ingest --processes 2`` and the output read from it so far."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.output = b""

    async def read_until(self, pattern: bytes, count: int = 1) -> None:
        assert self.process.stdout is not None
        while self.output.count(pattern) < count:
            line = await self.process.stdout.readline()
            assert line, f"ingest ended early:\n{self.text()}"
            self.output += line

    async def finish(self) -> int:
        rest, _ = await self.process.communicate()
        self.output += rest
        assert self.process.returncode is not None
        return self.process.returncode

    def children(self) -> list[int]:
        pid = self.process.pid
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]

    def text(self) -> str:
        return self.output.decode(errors="replace")


def read(path: str) -> str:
    return Path(path).read_text()


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@asynccontextmanager
async def ingest_processes(
    database_url: str, mqtt_url: str, prefix: str, group: str
) -> AsyncIterator[Ingest]:
    """Two ingest processes of one worker each, subscribed before this yields."""
    env = {
        **os.environ,
        "ANJU_DATABASE_URL": database_url,
        "ANJU_MQTT_URL": mqtt_url,
        "ANJU_INGEST_CLIENT_ID": prefix,
        "ANJU_INGEST_GROUP": group,
        "COLUMNS": "1000",
    }
    process = await asyncio.create_subprocess_exec(
        str(ANJU),
        "cloud",
        "ingest",
        "--processes",
        "2",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    ingest = Ingest(process)
    try:
        # Two processes, one worker each, two lanes (events and telemetry) per worker.
        await asyncio.wait_for(ingest.read_until(b"subscribed on", 4), WAIT_S)
        yield ingest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def site(database_url: str, gateway: str, community: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await register_community(conn, community)
        await register_gateway(conn, gateway, community)
        async with conn.transaction():
            for index in range(DEVICES):
                await register_device(
                    conn,
                    f"{gateway}-dev-{index}",
                    gateway_id=gateway,
                    kind=DeviceKind.WEARABLE,
                    profile_id="anju-wearable-ble",
                )


def messages(gateway: str, community: str) -> list[tuple[str, bytes]]:
    """``BATCHES`` telemetry batches of one reading per device, and one SOS per device."""
    now = datetime.now(UTC)
    out = []
    for seq in range(1, BATCHES + 1):
        batch = TelemetryBatch(
            gateway=gateway,
            community=community,
            spool_epoch="00000000000000aa",
            batch_seq=seq,
            sent_at=now,
            items=[
                Reading(
                    device=f"{gateway}-dev-{index}",
                    ts=now - timedelta(seconds=seq),
                    seq=seq,
                    metric=Metric.HEART_RATE,
                    value=70.0,
                )
                for index in range(DEVICES)
            ],
        )
        out.append((topic_for(community, gateway, Channel.TELEMETRY), encode(batch)))
    for index in range(DEVICES):
        alarm = EventBatch(
            gateway=gateway,
            community=community,
            spool_epoch="00000000000000aa",
            batch_seq=index + 1,
            sent_at=now,
            items=[
                Event(
                    device=f"{gateway}-dev-{index}",
                    ts=now,
                    seq=1,
                    type=EventType.WEARABLE_SOS,
                    severity=Severity.CRITICAL,
                )
            ],
        )
        out.append((topic_for(community, gateway, Channel.EVENTS), encode(alarm)))
    return out


async def publish(mqtt_url: str, gateway: str, batches: list[tuple[str, bytes]]) -> None:
    broker = parse_broker_url(mqtt_url)
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=gateway, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        for topic, payload in batches:
            await client.publish(topic, payload, qos=1, timeout=10)


async def stored(database_url: str, gateway: str) -> tuple[int, int, int, int]:
    """Readings, distinct (device, seq) among them, SOS events, and open SOS incidents."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM readings WHERE gateway_id = %(g)s),"
            " (SELECT count(DISTINCT (device_id, seq)) FROM readings WHERE gateway_id = %(g)s),"
            " (SELECT count(*) FROM events WHERE gateway_id = %(g)s),"
            " (SELECT count(*) FROM incidents i JOIN devices d ON d.id = i.device_id"
            "  WHERE d.gateway_id = %(g)s AND i.type = 'sos')",
            {"g": gateway},
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])


async def stored_in_time(
    database_url: str, gateway: str, expected: tuple[int, int, int, int]
) -> None:
    async with asyncio.timeout(WAIT_S):
        while await stored(database_url, gateway) != expected:  # noqa: ASYNC110 (a table)
            await asyncio.sleep(0.1)


async def test_two_processes_store_every_batch_once_and_stop_together_on_sigterm(
    database_url: str, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    gateway, community = unique_id("gw"), f"{unique_id('street')}/{unique_id('home')}"
    prefix = unique_id("ingest")
    await site(database_url, gateway, community)
    async with ingest_processes(database_url, mqtt_url, prefix, unique_id("group")) as ingest:
        children = ingest.children()
        await publish(mqtt_url, gateway, messages(gateway, community))
        expected = (BATCHES * DEVICES, BATCHES * DEVICES, DEVICES, DEVICES)
        await stored_in_time(database_url, gateway, expected)
        ingest.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(ingest.finish(), WAIT_S)

    output = ingest.text()
    assert code == 0, output
    assert "Traceback" not in output
    assert len(children) == 2
    assert not any(alive(pid) for pid in children), "a child outlived the stop"
    # Worker ids are numbered across the processes, each lane a session of its own.
    sessions = set(re.findall(rf"ingest ({re.escape(prefix)}-\S+): subscribed on", output))
    assert sessions == {f"{prefix}-0", f"{prefix}-0-alarms", f"{prefix}-1", f"{prefix}-1-alarms"}
    # Nothing more arrives after the stop: everything was stored exactly once.
    assert await stored(database_url, gateway) == expected


async def test_a_child_that_dies_stops_the_other_and_fails_the_command(
    database_url: str, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    async with ingest_processes(
        database_url, mqtt_url, unique_id("ingest"), unique_id("group")
    ) as ingest:
        first, second = ingest.children()
        os.kill(second, signal.SIGKILL)
        code = await asyncio.wait_for(ingest.finish(), WAIT_S)

    output = ingest.text()
    assert code == 1, output
    assert (
        f"error: ingest process 2 of 2 (pid {second}) exited with signal SIGKILL; "
        "the others were stopped" in output
    ), output
    assert not alive(first), "the other child outlived the failure"


async def test_children_stop_when_the_parent_is_killed(
    database_url: str, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    """Left running, they would fight a restarted set for the same client ids."""
    async with ingest_processes(
        database_url, mqtt_url, unique_id("ingest"), unique_id("group")
    ) as ingest:
        children = ingest.children()
        ingest.process.kill()
        await asyncio.wait_for(ingest.finish(), WAIT_S)
        async with asyncio.timeout(WAIT_S):
            while any(alive(pid) for pid in children):  # noqa: ASYNC110 (processes)
                await asyncio.sleep(0.1)

    assert "the supervising process is gone (its pipe closed); stopping" in ingest.text()
