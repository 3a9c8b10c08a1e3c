"""The uplink fails and the gateway must lose nothing, repeat nothing, and send alarms first.

Each test runs 50 simulated detectors behind one gateway (in process), the cloud
tier, and a durable Mosquitto that the gateway reaches through a proxy the test can
cut or blackhole. Afterwards the database must hold every item the gateway spooled
exactly once (see ``platform.check_exactly_once``).
"""

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
import yaml

from anju.services.mosquitto import MosquittoServer
from edge.app import SPOOL_FILE, Agent
from edge.config import parse_config
from edge.spool import Spool
from schemas.broker import parse_broker_url
from schemas.profile import DeviceProfile, load_profiles
from schemas.topics import Channel, parse_topic
from schemas.vocabulary import EventType
from schemas.wire import EventBatch, TelemetryBatch, decode
from tests.faults.platform import (
    COMMUNITY,
    LinkProxy,
    Site,
    Stored,
    caught_up,
    check_exactly_once,
    cloud,
    device_id,
    durable_broker,
    register,
    settle,
    site,
    stored,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")
DEVICES = 50


@dataclass
class Running:
    site: Site
    agent: Agent
    proxy: LinkProxy
    broker: MosquittoServer
    database_url: str
    stop_event: asyncio.Event
    task: asyncio.Task[None]

    def last_seqs(self) -> dict[str, int]:
        return {device.device_id: device.normaliser.seq for device in self.agent.devices}

    async def drained(self, timeout_s: float = 90) -> None:
        """Wait until the uplink is back and the spool has caught up with the backlog
        (``caught_up``).

        After a long outage the uplink may be deep in its reconnect backoff (up to
        30 s), so this can take a while; what it waits for is on disk meanwhile.
        """
        async with asyncio.timeout(timeout_s):
            while not caught_up(self.agent):  # noqa: ASYNC110 (spool state)
                await asyncio.sleep(0.2)

    async def stop_agent(self) -> dict[str, int]:
        """Stop polling, let the agent drain and say offline; the final sequences."""
        self.stop_event.set()
        await asyncio.wait_for(self.task, timeout=60)
        return self.last_seqs()


@asynccontextmanager
async def running(
    tmp_path: Path, database_url: str, unique_id: Callable[[str], str], **config: object
) -> AsyncIterator[Running]:
    gateway = unique_id("gw")
    await register(database_url, gateway, list(range(1, DEVICES + 1)))
    async with (
        durable_broker(tmp_path / "broker") as broker,
        LinkProxy(broker.port) as proxy,
        cloud(database_url, broker.url, unique_id("ingest")),
        site(gateway, DEVICES) as current,
    ):
        document = current.gateway_config(proxy.url, tmp_path / "state", **config)
        agent = Agent(parse_config(document, "test"), dict[str, DeviceProfile](PROFILES))
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop), name="agent")
        run = Running(current, agent, proxy, broker, database_url, stop, task)
        try:
            yield run
        finally:
            await run.stop_agent()


async def restore_and_settle(
    run: Running,
) -> tuple[Stored, dict[str, int], list[tuple[Channel, EventBatch | TelemetryBatch]]]:
    """Bring the link back, let the spool drain, stop the agent, wait for the database.

    Returns what the database holds, the agent's final sequences, and the order in
    which an observer subscribed at the broker (before the link came back) saw the
    gateway's batches.
    """
    async with Observer(run.broker.url, run.site.gateway) as observer:
        run.proxy.restore()
        await run.drained()
        final = await run.stop_agent()
        found = await settle(run.database_url, lambda: final, timeout_s=90)
        return found, final, list(observer.arrivals)


async def first_readings(database_url: str) -> None:
    async with asyncio.timeout(30):
        while not (await stored(database_url)).seqs:  # noqa: ASYNC110 (a table, not an event)
            await asyncio.sleep(0.2)


class Observer:
    """Subscribes to the gateway's topics directly at the broker and keeps arrival order."""

    def __init__(self, broker_url: str, gateway: str) -> None:
        self._broker = parse_broker_url(broker_url)
        self._gateway = gateway
        self.arrivals: list[tuple[Channel, EventBatch | TelemetryBatch]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "Observer":
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._listen(ready))
        await asyncio.wait_for(ready.wait(), timeout=10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _listen(self, ready: asyncio.Event) -> None:
        async with aiomqtt.Client(self._broker.host, self._broker.port) as client:
            await client.subscribe(f"anju/v1/+/+/{self._gateway}/+", qos=1)
            ready.set()
            async for message in client.messages:
                channel = parse_topic(message.topic.value).channel
                assert isinstance(message.payload, bytes)
                if channel is Channel.EVENTS:
                    self.arrivals.append((channel, decode(message.payload, EventBatch)))
                elif channel is Channel.TELEMETRY:
                    self.arrivals.append((channel, decode(message.payload, TelemetryBatch)))


def assert_alarm_ahead_of_backlog(
    arrivals: list[tuple[Channel, EventBatch | TelemetryBatch]],
) -> None:
    """When the link returns, the alarm raised during the outage goes before any telemetry.

    The observer subscribed before the link came back, so ``arrivals`` is what the
    gateway sent from then on: the events waiting in the spool first, then the
    backlog of readings (whatever of it the disk budget left) and new ones.
    """
    alarm_at = next(
        i
        for i, (_, batch) in enumerate(arrivals)
        if isinstance(batch, EventBatch)
        and any(e.type is EventType.SMOKE_ALARM for e in batch.items)
    )
    first_telemetry = next(
        i for i, (channel, _) in enumerate(arrivals) if channel is Channel.TELEMETRY
    )
    assert alarm_at < first_telemetry, "telemetry went ahead of the alarm raised during the outage"


async def test_broker_down_30_s_then_back(
    tmp_path: Path, database_url: str, unique_id: Callable[[str], str]
) -> None:
    async with running(tmp_path, database_url, unique_id) as run:
        await first_readings(database_url)
        # The gateway reaches the broker through the proxy, so the test can start the
        # broker and subscribe its observer before the gateway gets back in.
        run.proxy.cut()
        await asyncio.to_thread(run.broker.stop)
        await asyncio.sleep(10)
        run.site.detectors[7].trigger_alarm()
        await asyncio.sleep(20)
        await asyncio.to_thread(run.broker.start)
        found, final, arrivals = await restore_and_settle(run)
    check_exactly_once(found, final)
    assert "smoke.alarm" in found.event_types[device_id(7)]
    assert_alarm_ahead_of_backlog(arrivals)


async def test_uplink_blackholed_then_restored(
    tmp_path: Path, database_url: str, unique_id: Callable[[str], str]
) -> None:
    async with running(tmp_path, database_url, unique_id) as run:
        await first_readings(database_url)
        run.proxy.blackhole()
        await asyncio.sleep(5)
        run.site.detectors[3].trigger_alarm()
        await asyncio.sleep(15)
        found, final, arrivals = await restore_and_settle(run)
    assert run.agent.uplink.connection_failures > 0, "the blackhole went unnoticed"
    check_exactly_once(found, final)
    assert "smoke.alarm" in found.event_types[device_id(3)]
    assert_alarm_ahead_of_backlog(arrivals)


async def test_gateway_killed_and_restarted(
    tmp_path: Path, database_url: str, unique_id: Callable[[str], str]
) -> None:
    """``kill -9`` the agent process mid-stream, start it again on the same state dir."""
    gateway = unique_id("gw")
    await register(database_url, gateway, list(range(1, DEVICES + 1)))
    state = tmp_path / "state"
    async with (
        durable_broker(tmp_path / "broker") as broker,
        cloud(database_url, broker.url, unique_id("ingest")),
        site(gateway, DEVICES) as current,
    ):
        config = tmp_path / "gateway.yaml"
        config.write_text(yaml.safe_dump(current.gateway_config(broker.url, state)))

        async def agent() -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "anju.cli", "edge", "run", "--config", str(config),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip

        first = await agent()
        await first_readings(database_url)
        await asyncio.sleep(3)
        first.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(first.wait(), timeout=10) == -signal.SIGKILL
        await asyncio.sleep(3)
        current.detectors[9].trigger_alarm()
        second = await agent()
        await asyncio.sleep(8)
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), timeout=60) == 0
        with Spool(state / SPOOL_FILE, gateway, COMMUNITY, budget_bytes=2**30) as spool:
            final = {device_id(unit): spool.last_seq(device_id(unit)) for unit in current.detectors}
            assert spool.empty, "the agent stopped with items unsent"
        found = await settle(database_url, lambda: final, timeout_s=60)
    check_exactly_once(found, final)
    assert "smoke.alarm" in found.event_types[device_id(9)]


async def test_disk_budget_reached_during_outage(
    tmp_path: Path, database_url: str, unique_id: Callable[[str], str]
) -> None:
    """A spool of 0.25 MB fills within the outage: old telemetry goes, the alarm stays."""
    async with running(tmp_path, database_url, unique_id, spool_budget_mb=0.25) as run:
        await first_readings(database_url)
        run.proxy.cut()
        await asyncio.sleep(10)
        run.site.detectors[5].trigger_alarm()
        await asyncio.sleep(15)
        dropped = run.agent.spool.dropped_readings
        found, final, arrivals = await restore_and_settle(run)
    assert dropped > 0, "the outage never reached the disk budget"
    assert sum(found.gaps.values()) == run.agent.spool.dropped_readings
    check_exactly_once(found, final)
    assert "smoke.alarm" in found.event_types[device_id(5)]
    assert_alarm_ahead_of_backlog(arrivals)
