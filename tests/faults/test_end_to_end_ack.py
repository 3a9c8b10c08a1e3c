"""Nothing held, lost or late between gateway and queue, whatever the broker does.

Two gateways (in process, 20 simulated detectors each, polled twice a second) publish
through a durable Mosquitto to ``anju cloud ingest`` processes on the shared
subscription, while a test restarts the broker, kills an ingest process for good, or
stops the database for 30 s. A gateway deletes a batch only when the cloud says it is
committed (``ack``), and resends one that no acknowledgement named within its ack
timeout; afterwards every item each gateway spooled must be stored exactly once (see
``platform.check_exactly_once``).
"""

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from anju.services.mosquitto import MosquittoServer
from anju.services.postgres import PostgresServer
from edge.app import Agent
from edge.config import parse_config
from schemas.profile import DeviceProfile, load_profiles
from tests.faults.platform import (
    IngestProcess,
    Site,
    caught_up,
    check_exactly_once,
    device_id,
    durable_broker,
    ingest_processes,
    register,
    settle,
    site,
    stored,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")
DEVICES = 20
ACK_TIMEOUT_S = 8.0
"""The gateways' ack timeout here: longer than the shared workers' session expiry (5 s),
so a resend of what a dead worker's session held finds only live members."""
ACK_TIMEOUT_CAP_S = 16.0


@dataclass
class Gateway:
    site: Site
    agent: Agent
    stop: asyncio.Event
    task: asyncio.Task[None]

    def last_seqs(self) -> dict[str, int]:
        return {device.device_id: device.normaliser.seq for device in self.agent.devices}


@dataclass
class Run:
    gateways: list[Gateway]
    broker: MosquittoServer
    database_url: str

    async def first_readings(self) -> None:
        async with asyncio.timeout(60):
            while len((await stored(self.database_url)).seqs) < DEVICES * len(self.gateways):  # noqa: ASYNC110 (a table)
                await asyncio.sleep(0.2)

    async def stop_gateways(self, timeout_s: float = 90) -> dict[str, int]:
        """Once every spool has caught up, resends included (nothing the broker took
        waits for the cloud's acknowledgement: a batch a dead worker's session swallowed
        waits for its resend), stop the gateways, which drain the last batches; their
        final sequences."""
        async with asyncio.timeout(timeout_s):
            while any(not caught_up(g.agent) for g in self.gateways):  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        final: dict[str, int] = {}
        for gateway in self.gateways:
            gateway.stop.set()
            await asyncio.wait_for(gateway.task, timeout=60)
            assert gateway.agent.spool.empty, f"{gateway.site.gateway} stopped with items unsent"
            final |= gateway.last_seqs()
        return final


def _gateway_config(current: Site, broker_url: str, state: Path) -> dict[str, object]:
    return current.gateway_config(
        broker_url,
        state,
        uplink={"ack_timeout_s": ACK_TIMEOUT_S, "ack_timeout_cap_s": ACK_TIMEOUT_CAP_S},
    )


@asynccontextmanager
async def gateways(
    tmp_path: Path,
    broker: MosquittoServer,
    database_url: str,
    unique_id: Callable[[str], str],
    *,
    count: int = 2,
    registered: bool = True,
) -> AsyncIterator[Run]:
    """``count`` gateways of ``DEVICES`` detectors each, publishing until the run stops."""
    async with AsyncExitStack() as stack:
        running: list[Gateway] = []
        for n in range(count):
            name = unique_id(f"gw{n}")
            first = 1 + n * DEVICES
            if registered:
                await register(database_url, name, list(range(first, first + DEVICES)))
            current = await stack.enter_async_context(site(name, DEVICES, first=first))
            document = _gateway_config(current, broker.url, tmp_path / f"state-{n}")
            agent = Agent(parse_config(document, "test"), dict[str, DeviceProfile](PROFILES))
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop), name=f"agent {name}")
            running.append(Gateway(current, agent, stop, task))
        run = Run(running, broker, database_url)
        try:
            yield run
        finally:
            for gateway in running:
                gateway.stop.set()
            await asyncio.gather(*(g.task for g in running), return_exceptions=True)


@contextmanager
def workers(
    tmp_path: Path,
    database_url: str,
    broker: MosquittoServer,
    unique_id: Callable[[str], str],
    *,
    processes: int = 1,
) -> Iterator[list[IngestProcess]]:
    """``processes`` times ``anju cloud ingest --shared --workers 2`` on one shared group."""
    with ingest_processes(
        tmp_path,
        database_url,
        broker.url,
        unique_id("grp"),
        [unique_id(f"ingest{n}") for n in range(processes)],
        ["--workers", "2"],
        workers=2,
        env={"ANJU_INGEST_BACKOFF_CAP_S": "2"},
    ) as started:
        yield started


async def test_broker_restarted_while_gateways_publish(
    tmp_path: Path, database_url: str, unique_id: Callable[[str], str]
) -> None:
    async with durable_broker(tmp_path / "broker") as broker:
        with workers(tmp_path, database_url, broker, unique_id):
            async with gateways(tmp_path, broker, database_url, unique_id) as run:
                await run.first_readings()
                await asyncio.to_thread(broker.stop)
                await asyncio.sleep(3)
                run.gateways[0].site.detectors[4].trigger_alarm()
                await asyncio.sleep(2)
                await asyncio.to_thread(broker.start)
                # Mosquitto does not restore shared subscriptions: what the gateways
                # publish until the workers are back is acknowledged by the broker and
                # dropped, and only the cloud's acknowledgement tells the gateways.
                await asyncio.sleep(10)
                final = await run.stop_gateways()
                found = await settle(database_url, lambda: final, timeout_s=60)
    check_exactly_once(found, final)
    assert "smoke.alarm" in found.event_types[device_id(4)]


async def _alarms_stored(database_url: str, devices: list[str]) -> dict[str, datetime]:
    """When each device's smoke alarm was stored: its fire incident opens or grows in the
    same transaction (several detectors of a building join one incident)."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT device_id, min(received_at) FROM events"
            " WHERE type = 'smoke.alarm' AND device_id = ANY(%s) GROUP BY device_id",
            (devices,),
        )
        return {device: opened for device, opened in await cur.fetchall()}


async def test_worker_killed_for_good_while_gateways_publish(
    tmp_path: Path, database_url: str, unique_id: Callable[[str], str]
) -> None:
    """One of two ingest processes stops mid-stream, then is killed and never restarted:
    every alarm its session held arrives within the ack timeout plus 5 s, through the
    other."""
    async with durable_broker(tmp_path / "broker") as broker:
        with workers(tmp_path, database_url, broker, unique_id, processes=2) as (survivor, victim):
            async with gateways(tmp_path, broker, database_url, unique_id) as run:
                await run.first_readings()
                assert victim.process is not None
                # Stopped first, so the broker keeps handing it its share (alarms too)
                # and none of it is committed; then killed for good.
                victim.process.send_signal(signal.SIGSTOP)
                raised = time.time()
                alarmed = []
                for gateway in run.gateways:
                    for unit in list(gateway.site.detectors)[:4]:
                        gateway.site.detectors[unit].trigger_alarm()
                        alarmed.append(device_id(unit))
                await asyncio.sleep(2)
                victim.kill()
                deadline = raised + ACK_TIMEOUT_S + 5 + 1  # + one poll of the detectors
                while time.time() < deadline + 5:
                    incidents = await _alarms_stored(database_url, alarmed)
                    if len(incidents) == len(alarmed):
                        break
                    await asyncio.sleep(0.2)
                resent = sum(g.agent.uplink.resent_batches for g in run.gateways)
                final = await run.stop_gateways()
                found = await settle(database_url, lambda: final, timeout_s=60)
            assert survivor.process is not None
            assert survivor.process.poll() is None, "the surviving worker died too"
    late = {d: t.timestamp() - raised for d, t in incidents.items() if t.timestamp() > deadline}
    assert set(incidents) == set(alarmed), f"alarms never queued: {set(alarmed) - set(incidents)}"
    assert not late, f"alarms queued later than the ack timeout plus 5 s: {late}"
    assert resent > 0, "nothing was held by the stopped worker (nothing resent)"
    check_exactly_once(found, final)


@pytest.mark.own_server
async def test_database_stopped_30_s_gateways_keep_every_batch(
    tmp_path: Path,
    database_url: str,
    postgres: PostgresServer,
    unique_id: Callable[[str], str],
) -> None:
    async with durable_broker(tmp_path / "broker") as broker:
        with workers(tmp_path, database_url, broker, unique_id):
            async with gateways(tmp_path, broker, database_url, unique_id) as run:
                await run.first_readings()
                await asyncio.to_thread(postgres.stop)
                try:
                    await asyncio.sleep(15)
                    run.gateways[1].site.detectors[DEVICES + 2].trigger_alarm()
                    await asyncio.sleep(15)
                    # Nothing could be committed, so nothing may have left the spools.
                    waiting = [g.agent.spool.depth for g in run.gateways]
                finally:
                    await asyncio.to_thread(postgres.start)
                final = await run.stop_gateways(timeout_s=120)
                found = await settle(database_url, lambda: final, timeout_s=60)
    for depth in waiting:
        assert sum(depth.values()) >= 30, f"a gateway let go of batches not committed: {depth}"
    check_exactly_once(found, final)
    assert "smoke.alarm" in found.event_types[device_id(DEVICES + 2)]


async def test_refused_batches_are_counted_and_not_resent(
    tmp_path: Path, database_url: str, unique_id: Callable[[str], str]
) -> None:
    """A gateway the cloud does not know: every batch is quarantined and acknowledged as
    refused; the gateway counts them, lets them go and does not send them again."""
    async with durable_broker(tmp_path / "broker") as broker:
        with workers(tmp_path, database_url, broker, unique_id):
            async with gateways(
                tmp_path, broker, database_url, unique_id, count=1, registered=False
            ) as run:
                agent = run.gateways[0].agent
                async with asyncio.timeout(30):
                    while agent.uplink.refused_batches < 3:  # noqa: ASYNC110 (a counter)
                        await asyncio.sleep(0.2)
                await run.stop_gateways()
                # Past two ack timeouts: a batch that was going to be resent would be.
                await asyncio.sleep(2 * ACK_TIMEOUT_S + 2)
                refused = agent.uplink.refused_batches
                gateway = run.gateways[0].site.gateway
                async with await psycopg.AsyncConnection.connect(database_url) as conn:
                    cur = await conn.execute(
                        "SELECT count(*), count(DISTINCT payload) FROM quarantine"
                        " WHERE gateway_id = %s",
                        (gateway,),
                    )
                    rows, distinct = await cur.fetchone() or (0, 0)
    assert rows == distinct, f"{rows - distinct} refused batches were sent again"
    assert refused == rows, f"the gateway counted {refused} refusals of {rows} quarantined"
