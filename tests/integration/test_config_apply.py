"""A config pushed over the command channel, applied by a running agent in place.

Real parts: the session's Mosquitto, simulated Modbus detectors over TCP (one server
each, so each is a bus of its own), the agent as ``anju edge run`` builds it. The
cloud's side is a plain MQTT client here; tests/e2e/test_config_push.py drives the
same command from the cloud's pusher.
"""

import asyncio
import itertools
import shutil
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import yaml

from edge.app import Agent
from edge.config import parse_config
from edge.pushed_config import PUSHED_FILE, stored_version
from firmware_sim.door_controller import DoorController
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.smoke_detector import SmokeDetector
from schemas.broker import parse_broker_url
from schemas.profile import DeviceProfile, load_profiles
from schemas.topics import Channel, parse_topic, topic_for
from schemas.vocabulary import EventType
from schemas.wire import (
    Command,
    CommandName,
    CommandResult,
    Event,
    EventBatch,
    GatewayConfigDocument,
    PushedDevice,
    Reading,
    Status,
    TelemetryBatch,
    decode,
    encode,
)
from tests.waiting import until

BUNDLED = Path(__file__).resolve().parents[2] / "device_profiles"
COMMUNITY = "xijin/fenghuang"
INTERVAL_S = 0.5
SMOKE = "anju-smoke-mb"
DOOR = "anju-door-mb"


def profiles_every_poll(folder: Path) -> Path:
    """The bundled profiles, the smoke detector's sending every reading at every poll
    (heartbeat below the poll interval), so a missing poll shows as a missing seq."""
    shutil.copytree(BUNDLED, folder)
    path = folder / "smoke" / f"{SMOKE}.yaml"
    document = yaml.safe_load(path.read_text())
    document["heartbeat_s"] = INTERVAL_S / 5
    path.write_text(yaml.safe_dump(document))
    return folder


@dataclass
class Cloud:
    """The cloud's end: what the gateway published, and a way to send it commands."""

    client: aiomqtt.Client
    gateway: str
    readings: dict[str, dict[int, Reading]] = field(default_factory=lambda: defaultdict(dict))
    """Per device, its readings by seq (a batch sent twice counts once)."""
    results: dict[str, CommandResult] = field(default_factory=dict)
    statuses: list[Status] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def take(self, message: aiomqtt.Message) -> None:
        assert isinstance(message.payload, bytes)
        channel = parse_topic(str(message.topic)).channel
        if channel is Channel.TELEMETRY:
            for reading in decode(message.payload, TelemetryBatch).items:
                self.readings[reading.device][reading.seq] = reading
        elif channel is Channel.COMMAND_RESULT:
            result = decode(message.payload, CommandResult)
            self.results[result.id] = result
        elif channel is Channel.STATUS:
            self.statuses.append(decode(message.payload, Status))
        elif channel is Channel.EVENTS:
            self.events.extend(decode(message.payload, EventBatch).items)

    async def send(self, command_id: str, name: CommandName, **args: Any) -> None:
        """Publish a command once."""
        now = datetime.now(UTC)
        command = Command(
            id=command_id,
            name=name,
            args=args,
            issued_at=now,
            expires_at=now + timedelta(minutes=5),
        )
        topic = topic_for(COMMUNITY, self.gateway, Channel.COMMAND, command_id)
        await self.client.publish(topic, encode(command), qos=1)

    async def command(self, command_id: str, name: CommandName, **args: Any) -> CommandResult:
        """Send a command until its result comes (same id: the gateway acts once)."""
        for _ in range(30):
            # The agent subscribes once online; a command sent before that has no taker.
            await self.send(command_id, name, **args)
            try:
                await until(f"result of {command_id}", 1.0, lambda: command_id in self.results)
            except AssertionError:
                continue
            return self.results[command_id]
        raise AssertionError(f"no result for {command_id}")

    async def apply(self, command_id: str, document: GatewayConfigDocument) -> CommandResult:
        return await self.command(
            command_id,
            CommandName.APPLY_CONFIG,
            version=document.version,
            document=encode(document).decode(),
        )

    def seqs(self, device: str) -> list[int]:
        return sorted(self.readings[device])

    def all_seqs(self, device: str) -> list[int]:
        """The device's readings' and events' seqs together (one counter numbers both)."""
        events = {event.seq for event in self.events if event.device == device}
        return sorted(events | self.readings[device].keys())

    def fire_releases(self, device: str) -> list[Event]:
        return [
            event
            for event in self.events
            if event.device == device and event.type is EventType.DOOR_UNLOCKED_BY_FIRE
        ]

    def reading_times(self, device: str) -> list[datetime]:
        return sorted({reading.ts for reading in self.readings[device].values()})


@asynccontextmanager
async def cloud_for(mqtt_url: str, gateway: str) -> AsyncIterator[Cloud]:
    broker = parse_broker_url(mqtt_url)
    async with aiomqtt.Client(broker.host, broker.port) as client:
        cloud = Cloud(client, gateway)
        for channel in (Channel.TELEMETRY, Channel.STATUS, Channel.EVENTS):
            await client.subscribe(topic_for(COMMUNITY, gateway, channel), qos=1)
        await client.subscribe(topic_for(COMMUNITY, gateway, Channel.COMMAND_RESULT, "+"), qos=1)

        async def listen() -> None:
            async for message in client.messages:
                cloud.take(message)

        listener = asyncio.create_task(listen(), name="cloud listener")
        try:
            yield cloud
        finally:
            listener.cancel()


@asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop), name="agent")
    try:
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


@dataclass
class Site:
    """Three detectors, each behind a server of its own; the file names the first two."""

    sims: dict[str, ModbusSimServer]
    file: dict[str, Any]
    profiles: dict[str, DeviceProfile]

    def agent(self) -> Agent:
        return Agent(parse_config(self.file, "gateway.yaml"), self.profiles, source="gateway.yaml")

    def device(self, name: str, **overrides: Any) -> PushedDevice:
        fields: dict[str, Any] = {
            "id": name,
            "profile": SMOKE,
            "address": self.sims[name].url_for(1),
            "building": "3",
        }
        return PushedDevice(**{**fields, **overrides})

    def document(self, version: int, devices: list[PushedDevice]) -> GatewayConfigDocument:
        used = {device.profile for device in devices if device.profile in self.profiles}
        return GatewayConfigDocument(
            gateway=self.file["gateway"],
            version=version,
            devices=devices,
            profiles={name: self.profiles[name].model_dump(mode="json") for name in used},
        )


@asynccontextmanager
async def site_for(tmp_path: Path, mqtt_url: str, gateway: str) -> AsyncIterator[Site]:
    folder = profiles_every_poll(tmp_path / "profiles")
    async with AsyncExitStack() as stack:
        sims = {
            name: await stack.enter_async_context(ModbusSimServer({1: SmokeDetector()}))
            for name in ("smoke-a", "smoke-b", "smoke-c")
        }
        file = {
            "gateway": gateway,
            "community": COMMUNITY,
            "broker": mqtt_url,
            "state_dir": str(tmp_path / "state"),
            "profiles": str(folder),
            "devices": [
                {"id": name, "profile": SMOKE, "address": sims[name].url_for(1), "building": "3"}
                for name in ("smoke-a", "smoke-b")
            ],
        }
        yield Site(sims, file, load_profiles(folder))


def assert_no_gap(cloud: Cloud, device: str, across: datetime) -> None:
    """Every seq from the first to the last is there, and no two reads lie two poll
    intervals apart, from before ``across`` to after it."""
    seqs = cloud.seqs(device)
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"{device}: seq gaps"
    times = cloud.reading_times(device)
    assert times[0] < across < times[-1], f"{device}: readings do not span the apply"
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
    assert max(gaps) < 2 * INTERVAL_S, f"{device}: {max(gaps):.2f} s between two reads"


async def test_a_pushed_device_starts_polling_and_the_others_run_on_untouched(
    tmp_path: Path, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    gateway = unique_id("gw")
    async with (
        site_for(tmp_path, mqtt_url, gateway) as site,
        cloud_for(mqtt_url, gateway) as cloud,
        running(site.agent()) as agent,
    ):
        await until("readings of the file's devices", 15, lambda: len(cloud.seqs("smoke-b")) > 8)
        kept = {poller.devices[0].device_id: (poller, poller.bus) for poller in agent.pollers}

        applied_at = datetime.now(UTC)
        document = site.document(
            1, [site.device("smoke-a"), site.device("smoke-b"), site.device("smoke-c")]
        )
        result = await cloud.apply("cfg-1", document)
        assert result.ok, result.detail
        assert result.data == {
            "version": 1,
            "requested": 1,
            "applied": True,
            "devices": 3,
            "added": "smoke-c",
            "removed": "",
            "changed": "",
        }
        await until("readings of the pushed device", 15, lambda: len(cloud.seqs("smoke-c")) > 4)
        resumed = applied_at + timedelta(seconds=3)
        await until(
            "reads well after the apply",
            15,
            lambda: all(cloud.reading_times(d)[-1] > resumed for d in ("smoke-a", "smoke-b")),
        )
        for device in ("smoke-a", "smoke-b"):
            assert_no_gap(cloud, device, applied_at)
            poller, bus = kept[device]
            assert poller in agent.pollers, f"{device}'s poller was replaced"
            assert poller.bus is bus, f"{device}'s bus was reopened"
        seqs_c = cloud.seqs("smoke-c")
        assert seqs_c == list(range(seqs_c[0], seqs_c[-1] + 1))

        await until(
            "a retained status saying version 1",
            10,
            lambda: any(status.config_version == 1 for status in cloud.statuses),
        )
        pong = await cloud.command("ping-1", CommandName.PING)
        assert pong.data["config_version"] == 1
        assert stored_version(Path(site.file["state_dir"])) == 1
        assert (Path(site.file["state_dir"]) / PUSHED_FILE).stat().st_mode & 0o777 == 0o600

        # The cloud pushes the same version again: answered, nothing done.
        again = await cloud.apply("cfg-1-again", document)
        assert again.ok
        assert again.data["applied"] is False
        assert again.detail == "already runs version 1; nothing done"


async def test_a_bad_document_is_refused_and_the_old_devices_keep_reporting(
    tmp_path: Path, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    gateway = unique_id("gw")
    async with (
        site_for(tmp_path, mqtt_url, gateway) as site,
        cloud_for(mqtt_url, gateway) as cloud,
        running(site.agent()) as agent,
    ):
        good = site.document(1, [site.device("smoke-a"), site.device("smoke-c")])
        assert (await cloud.apply("cfg-1", good)).ok

        ble = site.document(
            2, [site.device("smoke-a"), site.device("smoke-c", address="ble://AA:BB:CC:DD:EE:FF")]
        )
        refused = await cloud.apply("cfg-2", ble)
        assert not refused.ok
        assert refused.detail == (
            "pushed config version 2: devices.1.address: smoke-c is a modbus-rtu "
            "device (anju-smoke-mb): its address must be modbus-rtu:// or modbus-tcp://, "
            "not ble://"
        )
        assert refused.data == {"version": 1, "requested": 2, "invalid": True}

        unknown = site.document(
            3, [site.device("smoke-a"), site.device("smoke-c", profile="anju-nope")]
        )
        refused = await cloud.apply("cfg-3", unknown)
        assert not refused.ok
        assert "devices.1.profile: no profile 'anju-nope'" in refused.detail
        assert refused.data["invalid"] is True

        other_gateway = GatewayConfigDocument(gateway="gw-elsewhere", version=4)
        refused = await cloud.apply("cfg-4", other_gateway)
        assert "it is for gateway 'gw-elsewhere'" in refused.detail

        assert agent.config_version == 1
        assert sorted(device.device_id for device in agent.devices) == ["smoke-a", "smoke-c"]
        after = {device: len(cloud.seqs(device)) for device in ("smoke-a", "smoke-c")}
        await until(
            "the running devices reporting on",
            10,
            lambda: all(len(cloud.seqs(device)) > count + 4 for device, count in after.items()),
        )
        assert stored_version(Path(site.file["state_dir"])) == 1

        # Removing a device stops it and closes its bus.
        removed = await cloud.apply("cfg-5", site.document(5, [site.device("smoke-a")]))
        assert removed.ok, removed.detail
        assert (removed.data["removed"], removed.data["devices"]) == ("smoke-c", 1)
        assert [poller.devices[0].device_id for poller in agent.pollers] == ["smoke-a"]


async def test_a_restart_keeps_the_pushed_devices(
    tmp_path: Path, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    gateway = unique_id("gw")
    async with site_for(tmp_path, mqtt_url, gateway) as site, cloud_for(mqtt_url, gateway) as cloud:
        async with running(site.agent()):
            pushed = site.document(7, [site.device("smoke-b"), site.device("smoke-c")])
            assert (await cloud.apply("cfg-7", pushed)).ok
            await until("readings of the pushed device", 15, lambda: cloud.seqs("smoke-c"))
        before = cloud.seqs("smoke-c")[-1]

        restarted = site.agent()
        assert restarted.config_version == 7
        assert sorted(device.device_id for device in restarted.devices) == ["smoke-b", "smoke-c"]
        async with running(restarted):
            await until(
                "the pushed device polled after the restart",
                15,
                lambda: cloud.seqs("smoke-c")[-1] > before + 4,
            )
            await until(
                "a status saying version 7 after the restart",
                10,
                lambda: cloud.statuses and cloud.statuses[-1].config_version == 7,
            )
        seqs = cloud.seqs("smoke-c")
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), "the seq went on across the restart"


def test_a_stored_document_that_no_longer_fits_the_file_is_ignored(
    tmp_path: Path, caplog: Any
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    unknown = GatewayConfigDocument(
        gateway="gw-fh-01",
        version=3,
        devices=[
            PushedDevice(id="smoke-x", profile="anju-gone", address="modbus-tcp://127.0.0.1:1502")
        ],
    )
    (state / PUSHED_FILE).write_bytes(encode(unknown))
    config = {
        "gateway": "gw-fh-01",
        "community": COMMUNITY,
        "state_dir": str(state),
        "devices": [
            {"id": "smoke-a", "profile": SMOKE, "address": "modbus-tcp://127.0.0.1:1502?unit=1"}
        ],
    }
    agent = Agent(
        parse_config(config, "gateway.yaml"), load_profiles(BUNDLED), source="gateway.yaml"
    )
    try:
        assert agent.config_version == 0
        assert [device.device_id for device in agent.devices] == ["smoke-a"]
        assert "no profile 'anju-gone'" in caplog.text
        assert "running the devices of gateway.yaml" in caplog.text
    finally:
        agent.spool.close()


async def test_a_device_added_to_a_shared_bus_reopens_it_and_its_device_reads_on(
    tmp_path: Path, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    """smoke-a and the pushed smoke-d are units 1 and 2 behind one Modbus TCP server, so
    they share a bus: adding smoke-d changes that bus, which is closed and opened again
    with both. smoke-b, alone behind a server of its own, runs on untouched.

    What is asserted for smoke-a, and why: its seq (readings and events together, one
    counter numbers both) has no hole from before the apply to after it, because its
    record is taken over into the reopened bus and the cloud must see no gap report;
    and no two of its reads lie further apart than two poll intervals plus two device
    timeouts: the old poller may have just polled (one interval), a poll in progress
    is let finish and the new bus connects (each bounded by ``device_timeout_s``), and
    the new poller's first poll falls within one interval of its start. A reopen may
    cost that much time; it may not cost a reading.
    """
    gateway = unique_id("gw")
    async with (
        site_for(tmp_path, mqtt_url, gateway) as site,
        ModbusSimServer({1: SmokeDetector(), 2: SmokeDetector()}) as shared,
        cloud_for(mqtt_url, gateway) as cloud,
    ):
        site.sims["smoke-d"] = shared
        site.file["devices"][0]["address"] = shared.url_for(1)
        timeout_s = parse_config(site.file, "gateway.yaml").device_timeout_s

        def smoke_d() -> PushedDevice:
            return site.device("smoke-d", address=shared.url_for(2))

        async with running(site.agent()) as agent:
            await until("readings of smoke-a", 15, lambda: len(cloud.seqs("smoke-a")) > 8)
            (before,) = [p for p in agent.pollers if p.devices[0].device_id == "smoke-a"]
            (untouched,) = [p for p in agent.pollers if p.devices[0].device_id == "smoke-b"]

            applied_at = datetime.now(UTC)
            document = site.document(
                1,
                [
                    site.device("smoke-a", address=shared.url_for(1)),
                    site.device("smoke-b"),
                    smoke_d(),
                ],
            )
            result = await cloud.apply("cfg-1", document)
            assert result.ok, result.detail
            assert (result.data["added"], result.data["changed"]) == ("smoke-d", "")

            (reopened,) = [
                p for p in agent.pollers if "smoke-a" in {d.device_id for d in p.devices}
            ]
            assert reopened is not before, "the shared bus was not reopened"
            assert reopened.bus is not before.bus
            assert sorted(d.device_id for d in reopened.devices) == ["smoke-a", "smoke-d"]
            assert untouched in agent.pollers

            resumed = applied_at + timedelta(seconds=3)
            await until(
                "smoke-a and smoke-d read well after the apply",
                15,
                lambda: all(cloud.reading_times(d)[-1] > resumed for d in ("smoke-a", "smoke-d")),
            )
        seqs = cloud.all_seqs("smoke-a")
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), "smoke-a: seq gaps across the reopen"
        times = cloud.reading_times("smoke-a")
        assert times[0] < applied_at < times[-1]
        gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
        bound = 2 * INTERVAL_S + 2 * timeout_s
        assert max(gaps) < bound, f"smoke-a: {max(gaps):.2f} s between two reads (< {bound})"
        assert_no_gap(cloud, "smoke-b", applied_at)
        seqs_d = cloud.seqs("smoke-d")
        assert seqs_d == list(range(seqs_d[0], seqs_d[-1] + 1))


@asynccontextmanager
async def fire_site_for(tmp_path: Path, mqtt_url: str, gateway: str) -> AsyncIterator[Site]:
    """Building 3: a smoke detector and an egress door, each behind a server of its own;
    smoke-x (building 9) and smoke-c are a bus each, for pushes to remove and add.

    The file names smoke, door and smoke-x. Requests wait up to 6 s, so that a poll
    held by a ``delay`` fault keeps a bus's poller busy while a test acts.
    """
    folder = profiles_every_poll(tmp_path / "profiles")
    async with AsyncExitStack() as stack:
        sims = {
            name: await stack.enter_async_context(ModbusSimServer({1: device}))
            for name, device in (
                ("smoke", SmokeDetector()),
                ("door", DoorController()),
                ("smoke-x", SmokeDetector()),
                ("smoke-c", SmokeDetector()),
            )
        }
        site = Site(sims, {}, load_profiles(folder))
        site.file = {
            "gateway": gateway,
            "community": COMMUNITY,
            "broker": mqtt_url,
            "state_dir": str(tmp_path / "state"),
            "profiles": str(folder),
            "device_timeout_s": 6.0,
            "devices": [
                msgspec.structs.asdict(device)
                for device in (fire_device(site, "smoke"), fire_device(site, "door"))
            ]
            + [msgspec.structs.asdict(site.device("smoke-x", building="9"))],
        }
        yield site


def fire_device(site: Site, name: str) -> PushedDevice:
    """The building's detector, or its egress door."""
    if name == "door":
        return site.device("door", profile=DOOR, egress=True)
    return site.device(name)


def door_of(site: Site) -> DoorController:
    door = site.sims["door"].devices[1]
    assert isinstance(door, DoorController)
    return door


def detector_of(site: Site) -> SmokeDetector:
    detector = site.sims["smoke"].devices[1]
    assert isinstance(detector, SmokeDetector)
    return detector


async def test_a_fire_release_still_being_retried_carries_on_across_an_apply(
    tmp_path: Path, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    """The door refuses its fire release; the smoke clears (so the push is taken, not
    answered "not now") while the release is still being retried. After the apply the
    new fire linkage goes on retrying, and the door is released once it takes writes:
    a fresh linkage would know nothing of that release and leave the door locked."""
    gateway = unique_id("gw")
    async with (
        fire_site_for(tmp_path, mqtt_url, gateway) as site,
        cloud_for(mqtt_url, gateway) as cloud,
        running(site.agent()) as agent,
    ):
        door, detector = door_of(site), detector_of(site)
        await until("readings of the detector", 15, lambda: cloud.seqs("smoke"))
        site.sims["door"].faults(1).exception(4)  # the door refuses every request
        detector.trigger_alarm()
        await until("a refused fire release", 15, lambda: agent.linkage.release_failures >= 1)
        detector.clear_smoke()
        assert detector.reset_alarm()
        await until("the alarm cleared", 15, lambda: not agent.linkage.buildings_in_alarm)
        assert not door.strike_released
        before = agent.linkage

        document = site.document(
            1,
            [
                fire_device(site, "smoke"),
                fire_device(site, "door"),
                site.device("smoke-x", building="9"),
                site.device("smoke-c"),
            ],
        )
        result = await cloud.apply("cfg-1", document)
        assert result.ok, result.detail
        assert result.data["added"] == "smoke-c"
        assert agent.linkage is not before
        failures = agent.linkage.release_failures
        assert failures >= before.release_failures >= 1, "the counters fell"
        await until(
            "the new linkage retrying the release",
            15,
            lambda: agent.linkage.release_failures > failures,
        )

        site.sims["door"].faults(1).clear()
        await until("the door released", 15, lambda: door.strike_released)
        await until("door.unlocked_by_fire sent", 15, lambda: cloud.fire_releases("door"))
        (released,) = cloud.fire_releases("door")
        assert released.data.reason == "smoke.alarm at smoke"
        assert agent.linkage.buildings_in_alarm == []


async def test_a_smoke_alarm_read_during_the_switch_reaches_the_new_linkage(
    tmp_path: Path, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    """The push removes smoke-x while a poll of it is held (a delay fault longer than
    the 6 s request timeout), so the switch waits for that poll. The detector's alarm
    is read meanwhile, by the old linkage, whose task has stopped; the door must still
    be released, by the new linkage, and building 3 be in alarm there. Were the alarm
    lost in the switch (neither handed over nor replayed), the detector would not say
    smoke.alarm again and the door would stay locked."""
    gateway = unique_id("gw")
    state = Path(tmp_path / "state")
    async with (
        fire_site_for(tmp_path, mqtt_url, gateway) as site,
        cloud_for(mqtt_url, gateway) as cloud,
        running(site.agent()) as agent,
    ):
        door, detector = door_of(site), detector_of(site)
        await until("readings of smoke-x", 15, lambda: cloud.seqs("smoke-x"))
        held = site.sims["smoke-x"].faults(1)
        held.delay(60.0, count=1)
        await until("a poll of smoke-x held", 15, lambda: held.stats.delayed >= 1)

        # Sent once, to a gateway known to take commands (the ping's answer came): the
        # apply takes seconds here, and a command repeated every second meanwhile would
        # pile up repeats for the agent to answer as it stops.
        assert (await cloud.command("ping-1", CommandName.PING)).ok
        document = site.document(1, [fire_device(site, "smoke"), fire_device(site, "door")])
        await cloud.send(
            "cfg-1",
            CommandName.APPLY_CONFIG,
            version=document.version,
            document=encode(document).decode(),
        )
        await until("the document stored", 10, lambda: stored_version(state) == 1)
        assert agent.config_version == 0, "the switch ended before the test could act"
        detector.trigger_alarm()
        await until("the alarm read", 5, lambda: agent.linkage.buildings_in_alarm == ["3"])
        assert agent.config_version == 0, "the alarm was read after the switch, not during it"
        assert not door.strike_released, "the old linkage released the door while stopped"

        result = await until("the apply's result", 20, lambda: cloud.results.get("cfg-1"))
        assert result.ok, result.detail
        assert result.data["removed"] == "smoke-x"
        await until("the door released", 15, lambda: door.strike_released)
        assert agent.linkage.buildings_in_alarm == ["3"]
        await until("door.unlocked_by_fire sent", 15, lambda: cloud.fire_releases("door"))
        assert [e.data.reason for e in cloud.fire_releases("door")] == ["smoke.alarm at smoke"]
