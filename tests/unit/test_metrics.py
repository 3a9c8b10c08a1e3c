"""The agent's Prometheus endpoint, scraped over real HTTP on loopback."""

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.actions import DeviceActions
from edge.addresses import parse_address
from edge.cameras.settings import CameraSiteSettings
from edge.cameras.site import CameraSite
from edge.drivers.modbus.bus import ModbusBus
from edge.local_rules import FireLinkage
from edge.metrics import EdgeCollector, MetricsError, MetricsServer, build_registry, serve_metrics
from edge.poller import BusPoller, PolledDevice
from edge.uplink import UplinkState
from schemas.profile import load_profile
from schemas.topics import Channel
from schemas.vocabulary import EventType, Severity
from schemas.wire import Event, EventData, Reading

SMOKE = load_profile(
    Path(__file__).resolve().parents[2] / "device_profiles/smoke/anju-smoke-mb.yaml"
)


@dataclass
class SpoolStandIn:
    """The attributes the collector reads of the durable spool."""

    depth: dict[Channel, int] = field(default_factory=dict)
    sent_unacked: dict[Channel, int] = field(default_factory=dict)
    oldest_unsent_age_s: float | None = None
    dropped_readings: int = 0


@dataclass
class UplinkStandIn:
    state: UplinkState = UplinkState.CONNECTING
    published_batches: int = 0
    published_items: int = 0
    connection_failures: int = 0
    acknowledged_batches: int = 0
    refused_batches: int = 0
    resent_batches: int = 0
    unreadable_acks: int = 0
    ack_version_mismatches: int = 0


@dataclass
class IntakeStandIn:
    spool_failures: int = 0
    held_events: int = 0
    readings_dropped_unspooled: int = 0
    events_dropped_unspooled: int = 0


def ignore(readings: list[Reading], events: list[Event]) -> None:
    """A poller sink for pollers that never poll here."""


def make_poller(url: str, *device_ids: str) -> BusPoller:
    address = parse_address(url)
    devices = [PolledDevice(device_id, SMOKE, address, 1.0) for device_id in device_ids]
    return BusPoller(ModbusBus(address), devices, ignore)


@dataclass
class Agent:
    pollers: list[BusPoller]

    spool: SpoolStandIn
    uplink: UplinkStandIn
    linkage: FireLinkage
    intake: IntakeStandIn

    @property
    def devices(self) -> list[PolledDevice]:
        return [device for poller in self.pollers for device in poller.devices]


@pytest.fixture
def agent() -> Agent:
    pollers = [
        make_poller("modbus-tcp://192.0.2.10:502?unit=1", "b3-smoke-01", "b3-smoke-02"),
        make_poller("modbus-tcp://192.0.2.11:502?unit=1", "b4-smoke-01"),
    ]
    linkage = FireLinkage(DeviceActions({}), [], {}, emit=lambda events: None)
    return Agent(pollers, SpoolStandIn(), UplinkStandIn(), linkage, IntakeStandIn())


@pytest.fixture
async def endpoint(agent: Agent) -> AsyncIterator[str]:
    collector = EdgeCollector(
        devices=lambda: agent.devices,
        pollers=lambda: agent.pollers,
        spool=agent.spool,
        uplink=agent.uplink,
        linkage=agent.linkage,
        intake=agent.intake,
    )
    registry = build_registry(collector, gateway="gw-fh-01", community="xijin/fenghuang")
    async with MetricsServer(registry, port=0) as server:
        yield f"http://127.0.0.1:{server.port}"


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(base: str) -> Samples:
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(f"{base}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_scrape_reads_pollers_as_they_are_now(agent: Agent, endpoint: str) -> None:
    device = agent.pollers[0].devices[0]
    device.polls, device.answered, device.online = 10, 7, False
    device.faults.update({"timeout": 2, "exception": 1})
    agent.pollers[1].overruns = 4
    samples = await scrape(endpoint)
    assert value(samples, "anju_edge_polls_total", device="b3-smoke-01") == 10
    assert value(samples, "anju_edge_polls_answered_total", device="b3-smoke-01") == 7
    assert value(samples, "anju_edge_poll_faults_total", device="b3-smoke-01", kind="timeout") == 2
    assert (
        value(samples, "anju_edge_poll_faults_total", device="b3-smoke-01", kind="exception") == 1
    )
    assert value(samples, "anju_edge_device_online", device="b3-smoke-01") == 0
    assert value(samples, "anju_edge_device_online", device="b4-smoke-01") == 1
    assert value(samples, "anju_edge_bus_overruns_total", bus="tcp://192.0.2.11:502") == 4

    device.polls = 11
    again = await scrape(endpoint)
    assert value(again, "anju_edge_polls_total", device="b3-smoke-01") == 11


async def test_scrape_reads_spool_uplink_and_fire_linkage(agent: Agent, endpoint: str) -> None:
    agent.spool.depth = {Channel.EVENTS: 2, Channel.TELEMETRY: 40}
    agent.spool.sent_unacked = {Channel.EVENTS: 1, Channel.TELEMETRY: 30}
    agent.spool.oldest_unsent_age_s = 12.5
    agent.spool.dropped_readings = 300
    agent.uplink.state = UplinkState.OFFLINE
    agent.uplink.published_batches, agent.uplink.published_items = 5, 120
    agent.uplink.acknowledged_batches, agent.uplink.refused_batches = 3, 1
    agent.uplink.resent_batches = 7
    agent.uplink.unreadable_acks, agent.uplink.ack_version_mismatches = 6, 4
    agent.linkage.releases, agent.linkage.release_failures = 3, 1
    samples = await scrape(endpoint)
    assert value(samples, "anju_edge_spool_depth_batches", lane="events") == 2
    assert value(samples, "anju_edge_spool_depth_batches", lane="telemetry") == 40
    assert value(samples, "anju_edge_spool_sent_unacked_batches", lane="events") == 1
    assert value(samples, "anju_edge_spool_sent_unacked_batches", lane="telemetry") == 30
    assert value(samples, "anju_edge_spool_oldest_unsent_age_seconds") == 12.5
    assert value(samples, "anju_edge_telemetry_dropped_total") == 300
    states = {state: value(samples, "anju_edge_uplink_state", state=state) for state in UplinkState}
    assert states == {state: float(state is UplinkState.OFFLINE) for state in UplinkState}
    assert value(samples, "anju_edge_uplink_published_batches_total") == 5
    assert value(samples, "anju_edge_uplink_published_items_total") == 120
    assert value(samples, "anju_edge_uplink_acknowledged_batches_total") == 3
    assert value(samples, "anju_edge_uplink_refused_batches_total") == 1
    assert value(samples, "anju_edge_uplink_resent_batches_total") == 7
    unreadable = "anju_edge_uplink_unreadable_acks_total"
    assert value(samples, unreadable, kind="schema_version") == 4
    assert value(samples, unreadable, kind="invalid") == 2
    assert value(samples, "anju_edge_fire_releases_total") == 3
    assert value(samples, "anju_edge_fire_release_failures_total") == 1
    assert value(samples, "anju_edge_fire_buildings_in_alarm") == 0
    info = value(samples, "target_info", gateway="gw-fh-01", community="xijin/fenghuang")
    assert info == 1


async def test_scrape_reads_a_failing_spool_and_rejected_values(
    agent: Agent, endpoint: str
) -> None:
    agent.intake.spool_failures, agent.intake.held_events = 4, 17
    agent.intake.readings_dropped_unspooled, agent.intake.events_dropped_unspooled = 90, 0
    agent.linkage.internal_errors = 2
    agent.pollers[0].devices[0].normaliser.rejected_values = 3
    samples = await scrape(endpoint)
    assert value(samples, "anju_edge_spool_write_failures_total") == 4
    assert value(samples, "anju_edge_events_held_in_memory") == 17
    assert value(samples, "anju_edge_readings_lost_unspooled_total") == 90
    assert value(samples, "anju_edge_events_lost_unspooled_total") == 0
    assert value(samples, "anju_edge_fire_linkage_internal_errors_total") == 2
    assert value(samples, "anju_edge_rejected_values_total", device="b3-smoke-01") == 3
    assert value(samples, "anju_edge_rejected_values_total", device="b4-smoke-01") == 0


async def test_nothing_unsent_reads_as_age_zero(endpoint: str) -> None:
    samples = await scrape(endpoint)
    assert value(samples, "anju_edge_spool_oldest_unsent_age_seconds") == 0


async def test_other_paths_and_methods_are_refused(endpoint: str) -> None:
    async with httpx.AsyncClient(timeout=5.0) as client:
        assert (await client.get(f"{endpoint}/")).status_code == 404
        assert (await client.post(f"{endpoint}/metrics")).status_code == 405
        head = await client.head(f"{endpoint}/metrics")
    assert head.status_code == 200
    assert head.content == b""


async def test_a_silent_client_does_not_block_scrapes(endpoint: str) -> None:
    host, port = endpoint.removeprefix("http://").split(":")
    _, idle = await asyncio.open_connection(host, int(port))
    try:
        assert await scrape(endpoint)
    finally:
        idle.close()


async def test_port_zero_means_metrics_off(agent: Agent) -> None:
    registry = build_registry(
        EdgeCollector(devices=lambda: agent.devices, pollers=lambda: agent.pollers),
        gateway="gw",
        community="a/b",
    )
    await asyncio.wait_for(serve_metrics(registry, 0, asyncio.Event()), timeout=1.0)


async def test_a_port_in_use_is_named(agent: Agent, endpoint: str) -> None:
    port = int(endpoint.rsplit(":", 1)[1])
    registry = build_registry(
        EdgeCollector(devices=lambda: agent.devices, pollers=lambda: agent.pollers),
        gateway="gw",
        community="a/b",
    )
    with pytest.raises(MetricsError, match=rf"127\.0\.0\.1:{port}: .*in use"):
        await MetricsServer(registry, port=port).start()


async def test_serve_metrics_runs_on_when_its_port_is_taken(
    agent: Agent, endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The agent's fire linkage must not stop over a metrics port clash."""
    port = int(endpoint.rsplit(":", 1)[1])
    registry = build_registry(
        EdgeCollector(devices=lambda: agent.devices, pollers=lambda: agent.pollers),
        gateway="gw",
        community="a/b",
    )
    await asyncio.wait_for(serve_metrics(registry, port, asyncio.Event()), timeout=1.0)
    assert f"metrics endpoint 127.0.0.1:{port}" in caplog.text
    assert "metrics are off" in caplog.text


async def test_serve_metrics_serves_until_stopped(agent: Agent) -> None:
    registry = build_registry(
        EdgeCollector(devices=lambda: agent.devices, pollers=lambda: agent.pollers),
        gateway="gw",
        community="a/b",
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_metrics(registry, port, stop))
    async with httpx.AsyncClient(timeout=5.0) as client:
        for _ in range(100):
            try:
                response = await client.get(f"http://127.0.0.1:{port}/metrics")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.01)
        else:
            pytest.fail(f"nothing listened on port {port} within 1 s")
    assert response.status_code == 200
    stop.set()
    await asyncio.wait_for(serving, timeout=5.0)


async def test_scrape_counts_camera_events_held_back_by_armed_hours(agent: Agent) -> None:
    site = CameraSite(
        CameraSiteSettings.model_validate(
            {"devices": {"lobby-cam": {"zones": {"Z2": {"name": "lobby", "armed": "22:00-06:00"}}}}}
        )
    )
    # 12:00 in Asia/Shanghai: the lobby is not armed.
    noon = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
    intrusion = Event(
        device="lobby-cam",
        ts=noon,
        seq=1,
        type=EventType.CAMERA_INTRUSION,
        severity=Severity.WARNING,
        data=EventData(zone="Z2"),
    )
    assert site.apply([intrusion, intrusion]) == []
    collector = EdgeCollector(devices=lambda: agent.devices, cameras=site)
    registry = build_registry(collector, gateway="gw-fh-01", community="xijin/fenghuang")
    async with MetricsServer(registry, port=0) as server:
        samples = await scrape(f"http://127.0.0.1:{server.port}")
    assert value(samples, "anju_edge_camera_events_disarmed_total", device="lobby-cam") == 2
