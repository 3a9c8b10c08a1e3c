"""Fire linkage with no broker at all: simulated detectors and door controllers over Modbus TCP.

Building 3 has a smoke detector, two egress doors (on two buses, so they are
released concurrently) and one door that is not on an escape route; building 4 has
an egress door of its own. The pollers are the agent's own (``BusPoller``), their
sink feeds the linkage as the agent's does, and nothing MQTT is started: the fire
path must not need the uplink.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.actions import DeviceActions
from edge.addresses import parse_address
from edge.config import DeviceConfig
from edge.drivers.modbus.bus import ModbusBus
from edge.local_rules import RETRY_CAP_S, FireLinkage
from edge.poller import BusPoller, PolledDevice
from firmware_sim.door_controller import DoorController, EventCode
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.register_device import RegisterDevice
from firmware_sim.smoke_detector import SmokeDetector
from schemas.profile import Action, ActionName, DeviceProfile, load_profile
from schemas.vocabulary import EventType
from schemas.wire import Event, Reading

PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"
SMOKE = load_profile(PROFILES / "smoke/anju-smoke-mb.yaml")
REPEAT_S = 0.6
# The shipped profile repeats every 120 s; the test holds the release with a short
# repeat so that it sees the second write.
DOOR = load_profile(PROFILES / "door/anju-door-mb.yaml").model_copy(
    update={
        "actions": {
            **load_profile(PROFILES / "door/anju-door-mb.yaml").actions,
            ActionName.FIRE_RELEASE: Action(point="unlock_pulse", value=255, repeat_s=REPEAT_S),
        }
    }
)
DOOR_IO = load_profile(PROFILES / "door/anju-door-io-mb.yaml")
# The detector polled twice a second (a per-device poll_interval_s in the gateway
# config): the profile's 1 s would spend the whole budget before the gateway knew.
SMOKE_POLL_S = 0.5
RELEASE_BUDGET_S = 1.0
Emit = Callable[[list[Event]], None]
WAIT_S = 5.0


def remote_unlocks(door: DoorController) -> int:
    return sum(event.code is EventCode.REMOTE_UNLOCK for event in door.events())


async def until(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> float:
    """Poll ``condition`` every 5 ms; returns the seconds it took, fails after ``timeout_s``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


@dataclass
class Gateway:
    """The agent's fire path: pollers feeding the linkage, and what they produced."""

    linkage: FireLinkage
    pollers: list[BusPoller]
    emitted: list[Event] = field(default_factory=list)
    polled: list[Reading | Event] = field(default_factory=list)
    alarm_seen_at: float | None = None
    """Monotonic time the pollers' sink first saw a smoke.alarm."""

    def fire_events(self) -> list[Event]:
        return [e for e in self.emitted if e.type is EventType.DOOR_UNLOCKED_BY_FIRE]


@dataclass
class Site:
    """The simulated buildings and the gateway serving them."""

    detector: SmokeDetector
    doors: dict[str, DoorController]
    servers: dict[str, ModbusSimServer]
    gateway: Gateway


@asynccontextmanager
async def site(*, polling: bool = True, emit: Emit | None = None) -> AsyncIterator[Site]:
    detector = SmokeDetector()
    doors = {name: DoorController() for name in ("b3-door-a", "b3-door-b", "b3-door-c", "b4-door")}
    bus_a = ModbusSimServer({1: detector, 2: doors["b3-door-a"], 3: doors["b3-door-c"]})
    bus_b = ModbusSimServer({1: doors["b3-door-b"], 2: doors["b4-door"]})
    async with bus_a, bus_b:
        configs = [
            DeviceConfig(id="b3-smoke", profile=SMOKE.id, address=bus_a.url_for(1), building="3"),
            DeviceConfig(
                id="b3-door-a", profile=DOOR.id, address=bus_a.url_for(2), building="3", egress=True
            ),
            DeviceConfig(id="b3-door-c", profile=DOOR.id, address=bus_a.url_for(3), building="3"),
            DeviceConfig(
                id="b3-door-b", profile=DOOR.id, address=bus_b.url_for(1), building="3", egress=True
            ),
            DeviceConfig(
                id="b4-door", profile=DOOR.id, address=bus_b.url_for(2), building="4", egress=True
            ),
        ]
        profiles = {SMOKE.id: SMOKE, DOOR.id: DOOR}
        async with running_gateway(configs, profiles, polling=polling, emit=emit) as gw:
            yield Site(detector, doors, {"a": bus_a, "b": bus_b}, gw)


@asynccontextmanager
async def running_gateway(
    configs: list[DeviceConfig],
    profiles: dict[str, DeviceProfile],
    *,
    polling: bool = True,
    emit: Emit | None = None,
) -> AsyncIterator[Gateway]:
    """The agent's fire path, wired as ``edge.app.Agent`` wires it, minus the uplink.

    ``emit``, if given, stands in front of the list the linkage's events go to (it
    gets that list's ``extend`` and may call it, or fail as a full outbox would).
    """
    by_bus: dict[str, list[PolledDevice]] = {}
    for config in configs:
        address = parse_address(config.address)
        profile = profiles[config.profile]
        interval = SMOKE_POLL_S if profile is SMOKE else profile.poll_interval_s
        device = PolledDevice(config.id, profile, address, interval)
        by_bus.setdefault(address.bus, []).append(device)
    emitted: list[Event] = []
    observers: list[Callable[[list[Event]], None]] = []

    def sink(readings: list[Reading], events: list[Event]) -> None:
        gw.polled.extend([*readings, *events])
        if gw.alarm_seen_at is None and any(e.type is EventType.SMOKE_ALARM for e in events):
            gw.alarm_seen_at = time.monotonic()
        for observe in observers:
            observe(events)

    pollers = [
        BusPoller(ModbusBus(devices[0].address, timeout_s=0.5), devices, sink)
        for devices in by_bus.values()
    ]
    actions = DeviceActions(
        {device.device_id: (poller.bus, device) for poller in pollers for device in poller.devices}
    )
    normalisers = {d.device_id: d.normaliser for poller in pollers for d in poller.devices}
    to_list: Emit = emitted.extend
    linkage = FireLinkage(
        actions,
        configs,
        normalisers,
        to_list if emit is None else lambda events: emit(events, to_list),
    )
    gw = Gateway(linkage, pollers, emitted)
    observers.append(gw.linkage.observe)
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(gw.linkage.run(stop), name="fire linkage")
            if polling:
                for poller in pollers:
                    tasks.create_task(poller.run(stop), name=f"poll {poller.bus.name}")
            try:
                yield gw
            finally:
                stop.set()
    finally:
        for poller in pollers:
            poller.bus.close()


def alarm_event(gw: Gateway, event_type: EventType = EventType.SMOKE_ALARM) -> Event:
    """The smoke.alarm the detector's poller would produce, made by its own normaliser."""
    normaliser = next(
        d.normaliser for p in gw.pollers for d in p.devices if d.device_id == "b3-smoke"
    )
    return normaliser.event(event_type, datetime.now(UTC))


async def test_smoke_alarm_releases_the_buildings_egress_doors_within_a_second() -> None:
    async with site() as s:
        # Let every device be polled once so the pollers are in their steady rhythm.
        await until(lambda: all(d.answered for p in s.gateway.pollers for d in p.devices))
        s.detector.trigger_alarm()
        cue = time.monotonic()
        a, b = s.doors["b3-door-a"], s.doors["b3-door-b"]
        await until(lambda: a.strike_released and b.strike_released)
        released = time.monotonic()
        latency = released - cue
        assert s.gateway.alarm_seen_at is not None
        print(
            f"smoke alarm to both egress doors released: {latency * 1000:.0f} ms, "
            f"of which {(released - s.gateway.alarm_seen_at) * 1000:.0f} ms after the poll saw it"
        )
        assert latency < RELEASE_BUDGET_S
        assert a.unlock_seconds_left > 250
        assert b.unlock_seconds_left > 250

        # Held: the release is written again every repeat_s while the alarm lasts.
        linkage = s.gateway.linkage
        await until(lambda: linkage.releases >= 4, REPEAT_S * 3)
        assert remote_unlocks(a) >= 2
        assert remote_unlocks(b) >= 2
        assert s.gateway.linkage.buildings_in_alarm == ["3"]

        assert not s.doors["b3-door-c"].strike_released
        assert not s.doors["b4-door"].strike_released
        assert remote_unlocks(s.doors["b3-door-c"]) == remote_unlocks(s.doors["b4-door"]) == 0

        by_door = sorted(e.device for e in s.gateway.fire_events())
        assert by_door == ["b3-door-a", "b3-door-b"]
        assert {e.data.reason for e in s.gateway.fire_events()} == {"smoke.alarm at b3-smoke"}


async def test_unlocked_by_fire_continues_the_doors_sequence() -> None:
    async with site() as s:
        await until(lambda: all(d.answered for p in s.gateway.pollers for d in p.devices))
        s.detector.trigger_alarm()
        await until(lambda: len(s.gateway.fire_events()) == 2)
        await asyncio.sleep(0.6)  # a poll of each door after the release
        for door in ("b3-door-a", "b3-door-b"):
            seqs = sorted(
                item.seq for item in [*s.gateway.polled, *s.gateway.emitted] if item.device == door
            )
            assert seqs == list(range(1, len(seqs) + 1)), door


async def test_cleared_alarm_stops_repeating_and_does_not_relock() -> None:
    async with site() as s:
        s.detector.trigger_alarm()
        a = s.doors["b3-door-a"]
        await until(lambda: remote_unlocks(a) >= 2, REPEAT_S * 3 + 1)
        s.detector.clear_smoke()
        assert s.detector.reset_alarm()
        await until(lambda: not s.gateway.linkage.buildings_in_alarm)
        settled = remote_unlocks(a)
        await asyncio.sleep(REPEAT_S * 2.5)
        # One write may have been in flight as the alarm cleared.
        assert remote_unlocks(a) <= settled + 1
        assert a.strike_released
        assert len(s.gateway.fire_events()) == 2


async def test_a_door_that_refuses_the_write_is_tried_again_quickly() -> None:
    async with site(polling=False) as s:
        s.servers["a"].faults(2).exception(4, count=2)  # b3-door-a: server device failure
        cue = time.monotonic()
        s.gateway.linkage.observe([alarm_event(s.gateway)])
        await until(lambda: len(s.gateway.fire_events()) == 2)
        assert time.monotonic() - cue < 3.0
        assert s.doors["b3-door-a"].strike_released
        assert s.gateway.linkage.release_failures == 2
        assert s.doors["b3-door-b"].strike_released
        assert sorted(e.device for e in s.gateway.fire_events()) == ["b3-door-a", "b3-door-b"]


async def test_a_relay_door_is_released_once_and_holds_by_itself() -> None:
    detector = SmokeDetector()
    relay = RegisterDevice(
        model="IO-MB44",
        coils={0: False, 1: False, 2: False, 3: False},
        discrete_inputs={0: False, 1: False, 2: False, 3: False},
        writable_coils=[0],
    )
    async with ModbusSimServer({1: detector, 2: relay}) as bus:
        configs = [
            DeviceConfig(id="b5-smoke", profile=SMOKE.id, address=bus.url_for(1), building="5"),
            DeviceConfig(
                id="b5-stair", profile=DOOR_IO.id, address=bus.url_for(2), building="5", egress=True
            ),
        ]
        async with running_gateway(configs, {SMOKE.id: SMOKE, DOOR_IO.id: DOOR_IO}) as gw:
            detector.trigger_alarm()
            await until(lambda: relay.coils()[0])
            await asyncio.sleep(1.0)
            assert gw.linkage.releases == 1
            assert [e.type for e in gw.emitted] == [EventType.DOOR_UNLOCKED_BY_FIRE]


async def test_a_failing_emit_does_not_stop_the_linkage_and_is_tried_again() -> None:
    """An outbox that refuses the first door.unlocked_by_fire must not end the linkage."""
    refusals: list[list[Event]] = []

    def flaky_emit(events: list[Event], emit: Emit) -> None:
        if not refusals:
            refusals.append(events)
            raise RuntimeError("outbox full")
        emit(events)

    async with site(polling=False, emit=flaky_emit) as s:
        linkage = s.gateway.linkage
        linkage.observe([alarm_event(s.gateway)])
        await until(lambda: len(s.gateway.fire_events()) == 2)
        assert sorted(e.device for e in s.gateway.fire_events()) == ["b3-door-a", "b3-door-b"]
        assert linkage.internal_errors == 1
        # The door whose event was refused was written again (and reported once).
        refused_door = refusals[0][0].device
        assert refused_door in {"b3-door-a", "b3-door-b"}
        assert s.doors["b3-door-a"].strike_released
        assert s.doors["b3-door-b"].strike_released
        # Still running: the repeats go on.
        before = linkage.releases
        await until(lambda: linkage.releases >= before + 2, REPEAT_S * 3)


async def test_a_door_never_released_is_retried_after_the_smoke_clears() -> None:
    async with site(polling=False) as s:
        linkage = s.gateway.linkage
        s.servers["a"].faults(2).exception(4)  # b3-door-a refuses every write
        linkage.observe([alarm_event(s.gateway)])
        await until(lambda: [e.device for e in s.gateway.fire_events()] == ["b3-door-b"])
        await until(lambda: linkage.release_failures >= 2)
        linkage.observe([alarm_event(s.gateway, EventType.SMOKE_CLEARED)])
        assert linkage.buildings_in_alarm == []
        b_writes = remote_unlocks(s.doors["b3-door-b"])
        failures = linkage.release_failures
        await until(lambda: linkage.release_failures > failures, RETRY_CAP_S + 1)
        s.servers["a"].faults(2).clear()
        await until(lambda: s.doors["b3-door-a"].strike_released, RETRY_CAP_S + 1)
        await until(lambda: len(s.gateway.fire_events()) == 2)
        assert s.gateway.fire_events()[1].device == "b3-door-a"
        # Released once, a door is left alone: no more writes to either.
        a_writes = remote_unlocks(s.doors["b3-door-a"])
        await asyncio.sleep(REPEAT_S * 2)
        assert remote_unlocks(s.doors["b3-door-a"]) == a_writes == 1
        # b3-door-b may have had one repeat in flight as the smoke cleared.
        assert remote_unlocks(s.doors["b3-door-b"]) <= b_writes + 1


def test_detectors_that_release_no_door_are_reported_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configs = [
        DeviceConfig(
            id="yard-smoke", profile=SMOKE.id, address="modbus-tcp://127.0.0.1:1502?unit=1"
        ),
        DeviceConfig(
            id="b7-smoke",
            profile=SMOKE.id,
            address="modbus-tcp://127.0.0.1:1502?unit=2",
            building="7",
        ),
        DeviceConfig(
            id="b8-smoke",
            profile=SMOKE.id,
            address="modbus-tcp://127.0.0.1:1502?unit=3",
            building="8",
        ),
        DeviceConfig(
            id="b8-door",
            profile=DOOR.id,
            address="modbus-tcp://127.0.0.1:1502?unit=4",
            building="8",
            egress=True,
        ),
    ]
    profiles = {SMOKE.id: SMOKE, DOOR.id: DOOR}
    address = parse_address(configs[0].address)
    bus = ModbusBus(address)
    devices = [
        PolledDevice(c.id, profiles[c.profile], parse_address(c.address), 1.0) for c in configs
    ]
    actions = DeviceActions({d.device_id: (bus, d) for d in devices})
    normalisers = {d.device_id: d.normaliser for d in devices}
    with caplog.at_level(logging.WARNING, logger="edge.local_rules"):
        FireLinkage(actions, configs, normalisers, lambda events: None, source="gateway.yaml")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "yard-smoke" in warnings[0]
    assert "no building" in warnings[0]
    assert "b7-smoke" in warnings[1]
    assert "building 7" in warnings[1]
    assert "no egress doors" in warnings[1]
    assert all("gateway.yaml" in w for w in warnings)
