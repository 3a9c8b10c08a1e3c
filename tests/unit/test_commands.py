"""CommandProcessor: refusals, idempotency across repeats and restarts, the audit log.

Devices live on a ``MemoryBus`` (tests/memory_driver.py): the processor reaches them
only through the driver contract, so what a command did is the bus's record of writes,
and a device fault is one the bus is told to raise. Scans, which need a real Modbus
bus, are in tests/integration/test_edge_commands.py. The reload callable is a plain
function of the test's own. Time is a clock the test moves.
"""

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.actions import DeviceActions
from edge.addresses import parse_address
from edge.app import Agent
from edge.commands import CommandLimits, CommandProcessor, ConfigTarget
from edge.config import parse_config
from edge.errors import ConfigError, DeviceTimeout
from edge.poller import PolledDevice
from edge.pushed_config import PUSHED_FILE
from edge.uplink import COMMAND_TIMEOUT_S
from schemas import SCHEMA_VERSION
from schemas.profile import load_profiles
from schemas.wire import (
    ArgValue,
    Command,
    CommandName,
    CommandResult,
    GatewayConfigDocument,
    PushedDevice,
    decode,
    encode,
)
from tests.memory_driver import MemoryBus, Write

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")
DOOR, SMOKE = PROFILES["anju-door-mb"], PROFILES["anju-smoke-mb"]
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
# Addresses that are never connected to: the devices are in memory.
BUS_URL = "modbus-tcp://192.0.2.10:502"
AUDIT_KEYS = ["at", "id", "name", "device", "args", "outcome", "detail", "kept_until", "result"]


class Clock:
    """Gateway wall time, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def unlock_pulse(seconds: float) -> Write:
    """The write an unlock of door-1 for ``seconds`` makes."""
    return Write("door-1", "unlock_pulse", seconds)


@dataclass
class Site:
    bus: MemoryBus
    actions: DeviceActions
    clock: Clock
    audit: Path

    def processor(
        self,
        *,
        reload: Callable[[], Awaitable[str]] | None = None,
        limits: CommandLimits | None = None,
        polled_buses: tuple[str, ...] = (),
        config: ConfigTarget | None = None,
    ) -> CommandProcessor:
        return CommandProcessor(
            "gw-fh-01",
            self.actions,
            reload=reload or _reloaded,
            audit_path=self.audit,
            agent_version="0.1.0-test",
            profiles=[DOOR, SMOKE],
            polled_buses=polled_buses,
            clock=self.clock,
            limits=limits or CommandLimits(),
            config=config,
        )

    def audit_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]


async def _reloaded() -> str:
    return "reloaded: 2 devices"


@pytest.fixture
def site(tmp_path: Path) -> Site:
    bus = MemoryBus(BUS_URL)
    door_address = parse_address(f"{BUS_URL}?unit=1")
    smoke_address = parse_address(f"{BUS_URL}?unit=2")
    actions = DeviceActions(
        {
            "door-1": (bus, PolledDevice("door-1", DOOR, door_address, 0.5)),
            "smoke-2": (bus, PolledDevice("smoke-2", SMOKE, smoke_address, 1.0)),
        }
    )
    return Site(bus, actions, Clock(), tmp_path / "state" / "commands.jsonl")


def command(
    name: str,
    *,
    id: str = "c-1",
    device: str | None = None,
    args: dict[str, ArgValue] | None = None,
    issued_s: float = -1.0,
    expires_s: float = 60.0,
) -> bytes:
    """A command payload; times are seconds from T0."""
    return encode(
        Command(
            id=id,
            name=CommandName(name),
            device=device,
            args=args or {},
            issued_at=T0 + timedelta(seconds=issued_s),
            expires_at=T0 + timedelta(seconds=expires_s),
        )
    )


def raw_command(**fields: Any) -> bytes:
    document = {
        "schema_version": SCHEMA_VERSION,
        "id": "c-1",
        "name": "ping",
        "issued_at": "2025-03-01T07:59:59Z",
        "expires_at": "2025-03-01T08:01:00Z",
    }
    document.update(fields)
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


def result_of(payload: bytes) -> CommandResult:
    return decode(payload, CommandResult)


async def test_ping_answers_with_version_and_uptime(site: Site) -> None:
    result = result_of(await site.processor().handle("c-1", command("ping")))
    assert (result.ok, result.id, result.gateway, result.detail) == (
        True,
        "c-1",
        "gw-fh-01",
        "pong",
    )
    assert result.data["agent_version"] == "0.1.0-test"
    assert isinstance(result.data["uptime_s"], float)
    assert result.data["uptime_s"] >= 0
    assert result.finished_at == T0


async def test_unlock_door_uses_the_profile_value_or_the_seconds_given(site: Site) -> None:
    processor = site.processor()
    first = result_of(await processor.handle("c-1", command("unlock_door", device="door-1")))
    assert (first.ok, first.detail, first.data) == (
        True,
        "unlocked door-1 for 5 s",
        {"seconds": 5, "point": "unlock_pulse"},
    )
    assert site.bus.writes == [unlock_pulse(5)]
    payload = command("unlock_door", id="c-2", device="door-1", args={"seconds": 9})
    second = result_of(await processor.handle("c-2", payload))
    assert (second.ok, second.data["seconds"]) == (True, 9)
    assert site.bus.writes == [unlock_pulse(5), unlock_pulse(9)]


REFUSALS = [
    pytest.param("c-1", b"{not json", "malformed command: JSON is malformed", id="not-json"),
    pytest.param("c-1", raw_command(expires_at=None), "`expires_at`", id="missing-field"),
    pytest.param("c-1", raw_command(name="open_sesame"), "$.name", id="unknown-command"),
    pytest.param("c-1", raw_command(gateway="gw-2"), "unknown field `gateway`", id="extra-field"),
    pytest.param(
        "c-9",
        command("ping"),
        "the payload's id 'c-1' differs from the topic's 'c-9'",
        id="topic-id-differs",
    ),
    pytest.param(
        "c-1",
        command("unlock_door", device="door-1", issued_s=-120, expires_s=-1),
        "expired at 2025-03-01T07:59:59+00:00 (gateway time 2025-03-01T08:00:00+00:00)",
        id="expired",
    ),
    pytest.param(
        "c-1",
        command("unlock_door", device="door-1", issued_s=-60, expires_s=0),
        "expired at 2025-03-01T08:00:00+00:00",
        id="expires-now",
    ),
    pytest.param(
        "c-1",
        command("unlock_door", device="door-1", issued_s=120, expires_s=180),
        "issued at 2025-03-01T08:02:00+00:00, 120 s ahead of gateway time",
        id="issued-in-future",
    ),
    pytest.param(
        "c-1",
        command("ping", issued_s=10, expires_s=5),
        "is not after issued_at",
        id="expires-before-issued",
    ),
    pytest.param(
        "c-1",
        command("ping", expires_s=2 * 86_400),
        "this gateway takes commands that live at most 86400 s",
        id="lives-too-long",
    ),
    pytest.param(
        "c-1",
        command("unlock_door", device="door-9"),
        "unlock_door: door-9: no such device on this gateway",
        id="unknown-device",
    ),
    pytest.param(
        "c-1",
        command("unlock_door", device="smoke-2"),
        "unlock_door: smoke-2: profile anju-smoke-mb has no action unlock (reset_alarm)",
        id="action-not-in-profile",
    ),
    pytest.param(
        "c-1",
        command("reset_alarm", device="door-1"),
        "profile anju-door-mb has no action reset_alarm (fire_release, relock, unlock)",
        id="door-has-no-reset",
    ),
    pytest.param("c-1", command("unlock_door"), "unlock_door needs a device", id="no-device"),
    pytest.param(
        "c-1", command("ping", device="door-1"), "ping takes no device", id="device-not-wanted"
    ),
    pytest.param(
        "c-1",
        command("unlock_door", device="door-1", args={"force": True}),
        "unlock_door has no argument force (it takes seconds)",
        id="unknown-argument",
    ),
    pytest.param(
        "c-1",
        command("unlock_door", device="door-1", args={"seconds": 0}),
        "seconds must be 1-255, not 0",
        id="seconds-zero",
    ),
    pytest.param(
        "c-1",
        command("unlock_door", device="door-1", args={"seconds": 256}),
        "seconds must be 1-255, not 256",
        id="seconds-too-long",
    ),
    pytest.param(
        "c-1",
        command("unlock_door", device="door-1", args={"seconds": "7"}),
        "seconds must be a number, not '7'",
        id="seconds-string",
    ),
    pytest.param(
        "c-1",
        command("unlock_door", device="door-1", args={"seconds": True}),
        "seconds must be a number, not True",
        id="seconds-bool",
    ),
    pytest.param(
        "c-1",
        command("unlock_door", device="door-1", args={"seconds": 2.5}),
        "seconds must be whole, not 2.5",
        id="seconds-fraction",
    ),
    pytest.param("c-1", command("scan"), "scan needs a bus", id="scan-no-bus"),
    pytest.param(
        "c-1",
        command("scan", args={"bus": "door-1", "units": "10-1"}),
        "range '10-1' runs backwards",
        id="scan-bad-units",
    ),
    pytest.param(
        "c-1",
        command("scan", args={"bus": "door-9"}),
        "scan: door-9: no such device on this gateway",
        id="scan-unknown-device",
    ),
    pytest.param(
        "c-1",
        command("scan", args={"bus": "ble://AA:BB:CC:DD:EE:FF"}),
        "the ble driver listens on the gateway's adapter, which the agent holds",
        id="scan-ble-adapter-held",
    ),
    pytest.param(
        "c-1",
        command("scan", args={"bus": "modbus-rtu:///dev/ttyUSB0?baud=9600"}),
        "this gateway polls modbus-rtu:///dev/ttyUSB0",
        id="scan-polled-serial-line",
    ),
]


@pytest.mark.parametrize(("topic_id", "payload", "reason"), REFUSALS)
async def test_refusals_name_the_reason_and_do_nothing(
    site: Site, topic_id: str, payload: bytes, reason: str
) -> None:
    processor = site.processor(polled_buses=("modbus-rtu:///dev/ttyUSB0",))
    result = result_of(await processor.handle(topic_id, payload))
    assert not result.ok
    assert result.id == topic_id
    assert reason in result.detail
    assert site.bus.writes == []
    assert site.bus.requests == 0
    (line,) = site.audit_lines()
    assert (line["id"], line["outcome"], line["detail"]) == (topic_id, "refused", result.detail)


async def test_malformed_or_mismatched_payloads_are_not_kept(site: Site) -> None:
    processor = site.processor()
    await processor.handle("c-1", raw_command(expires_at=None))
    await processor.handle("c-9", command("ping"))
    assert processor.kept == 0
    assert [line["kept_until"] for line in site.audit_lines()] == [None, None]
    assert result_of(await processor.handle("c-1", command("ping"))).ok


async def test_device_fault_is_a_failure_with_the_error_text(site: Site) -> None:
    fault = DeviceTimeout("tcp://192.0.2.10:502 unit 1", "no answer within 0.5 s")
    site.bus.failing["door-1"] = fault
    processor = site.processor()
    payload = command("unlock_door", device="door-1")
    answer = await processor.handle("c-1", payload)
    result = result_of(answer)
    assert not result.ok
    assert str(fault) in result.detail
    assert (site.bus.requests, site.bus.writes) == (1, [])
    assert [line["outcome"] for line in site.audit_lines()] == ["started", "failed"]
    # Final: a redelivery once the device answers again gets the same failure, unretried.
    del site.bus.failing["door-1"]
    site.clock.advance(1)
    assert await processor.handle("c-1", payload) == answer
    assert (site.bus.requests, site.bus.writes) == (1, [])


async def test_same_id_twice_unlocks_once_and_answers_the_same_bytes(site: Site) -> None:
    processor = site.processor()
    payload = command("unlock_door", device="door-1", args={"seconds": 7})
    first = await processor.handle("c-1", payload)
    site.clock.advance(2)
    second = await processor.handle("c-1", payload)
    assert second == first
    assert site.bus.writes == [unlock_pulse(7)]
    assert [line["outcome"] for line in site.audit_lines()] == ["started", "ok", "repeat"]


async def test_a_repeat_during_the_first_delivery_waits_for_its_result(site: Site) -> None:
    entered, gate = asyncio.Event(), asyncio.Event()
    calls = 0

    async def slow_reload() -> str:
        nonlocal calls
        calls += 1
        entered.set()
        await asyncio.wait_for(gate.wait(), timeout=5)
        return "reloaded"

    processor = site.processor(reload=slow_reload)
    payload = command("reload_config")
    first = asyncio.create_task(processor.handle("c-1", payload))
    await asyncio.wait_for(entered.wait(), timeout=5)
    second = asyncio.create_task(processor.handle("c-1", payload))
    await asyncio.sleep(0.05)
    assert not second.done()
    gate.set()
    async with asyncio.timeout(5):
        results = await asyncio.gather(first, second)
    assert results[0] == results[1]
    assert result_of(results[0]).detail == "reloaded"
    assert calls == 1


async def test_restart_answers_kept_results_without_acting_again(site: Site) -> None:
    payload = command("unlock_door", device="door-1")
    first = await site.processor().handle("c-1", payload)
    refused = await site.processor().handle("c-2", command("ping", id="c-2", expires_s=-1))
    site.clock.advance(1)
    restarted = site.processor()
    assert restarted.kept == 2
    assert await restarted.handle("c-1", payload) == first
    assert await restarted.handle("c-2", command("ping", id="c-2", expires_s=-1)) == refused
    assert site.bus.writes == [unlock_pulse(5)]


async def test_restart_after_a_cut_off_command_reports_it_interrupted(site: Site) -> None:
    entered = asyncio.Event()
    calls = 0

    async def hanging_reload() -> str:
        nonlocal calls
        calls += 1
        entered.set()
        await asyncio.sleep(30)
        return "never"

    payload = command("reload_config")
    stopping = site.processor(reload=hanging_reload)
    running = asyncio.create_task(stopping.handle("c-1", payload))
    await asyncio.wait_for(entered.wait(), timeout=5)
    await asyncio.wait_for(stopping.close(), timeout=5)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, timeout=5)
    assert [line["outcome"] for line in site.audit_lines()] == ["started"]

    answer = await site.processor(reload=hanging_reload).handle("c-1", payload)
    result = result_of(answer)
    assert (result.ok, calls) == (False, 1)
    assert result.detail.startswith("interrupted: the gateway stopped while carrying it out")
    assert await site.processor().handle("c-1", payload) == answer
    assert [line["outcome"] for line in site.audit_lines()] == [
        "started",
        "failed",
        "repeat",
        "repeat",
    ]


async def test_results_are_forgotten_once_the_command_is_past_expiry_and_skew(
    site: Site,
) -> None:
    processor = site.processor()
    payload = command("unlock_door", device="door-1", expires_s=60)
    first = await processor.handle("c-1", payload)
    site.clock.advance(60 + 30 - 1)
    assert await processor.handle("c-1", payload) == first
    assert processor.kept == 1
    site.clock.advance(1)
    assert site.processor().kept == 0
    again = result_of(await processor.handle("c-1", payload))
    assert (again.ok, again.detail.startswith("expired at")) == (False, True)
    assert site.bus.writes == [unlock_pulse(5)]


async def test_audit_lines_are_whole_json_and_fsynced_before_the_act(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    seen_before_reload: list[dict[str, Any]] = []

    async def reload() -> str:
        seen_before_reload.extend(site.audit_lines())
        return "reloaded"

    processor = site.processor(reload=reload)
    await processor.handle("c-1", command("unlock_door", device="door-1", args={"seconds": 7}))
    await processor.handle("c-2", command("reload_config", id="c-2"))
    await processor.handle("c-3", b"[]")
    lines = site.audit_lines()
    assert [list(line) for line in lines] == [AUDIT_KEYS] * 5
    assert [(line["id"], line["outcome"]) for line in lines] == [
        ("c-1", "started"),
        ("c-1", "ok"),
        ("c-2", "started"),
        ("c-2", "ok"),
        ("c-3", "refused"),
    ]
    assert seen_before_reload[-1]["outcome"] == "started"
    unlock = lines[1]
    assert unlock["name"] == "unlock_door"
    assert unlock["device"] == "door-1"
    assert unlock["args"] == {"seconds": 7}
    assert unlock["detail"] == "unlocked door-1 for 7 s"
    assert unlock["at"] == "2025-03-01T08:00:00Z"
    assert unlock["kept_until"] == "2025-03-01T08:01:30Z"
    assert unlock["result"]["ok"] is True
    assert lines[0]["result"] is None
    assert (lines[4]["name"], lines[4]["kept_until"]) == (None, None)
    assert synced.count(str(site.audit.resolve())) == 5
    assert synced.index(str(site.audit.parent.resolve())) == 1
    assert os.stat(site.audit).st_mode & 0o777 == 0o600


async def test_unwritable_audit_log_means_no_unlock(site: Site) -> None:
    processor = site.processor()
    site.audit.parent.mkdir(parents=True, exist_ok=True)
    site.audit.mkdir()
    result = result_of(await processor.handle("c-1", command("unlock_door", device="door-1")))
    assert not result.ok
    assert result.detail.startswith("not carried out: command audit log")
    assert (site.bus.requests, site.bus.writes) == (0, [])
    assert processor.audit_failures == 1


async def test_a_torn_last_line_is_skipped_and_closed(site: Site) -> None:
    site.audit.parent.mkdir(parents=True)
    site.audit.write_bytes(b'{"at": "2025-03-01T07:5')
    processor = site.processor()
    assert processor.unreadable_audit_lines == 1
    await processor.handle("c-1", command("ping"))
    torn, ping = site.audit.read_text().splitlines()
    assert torn == '{"at": "2025-03-01T07:5'
    assert json.loads(ping)["outcome"] == "ok"


async def test_reload_config_reports_the_summary_or_the_config_error(site: Site) -> None:
    async def bad_reload() -> str:
        raise ConfigError("/etc/anju/gateway.yaml", "devices.0.profile", "no profile 'x'")

    ok = result_of(await site.processor().handle("c-1", command("reload_config")))
    assert (ok.ok, ok.detail) == (True, "reloaded: 2 devices")
    payload = command("reload_config", id="c-2")
    failed = result_of(await site.processor(reload=bad_reload).handle("c-2", payload))
    assert (failed.ok, failed.detail) == (
        False,
        "/etc/anju/gateway.yaml: devices.0.profile: no profile 'x'",
    )
    assert site.audit_lines()[-1]["outcome"] == "failed"


RUNNING_VERSION = 3
"""The pushed config version the agent of ``pushed_agent`` starts with."""


def pushed_document(version: int, gateway: str = "gw-fh-01") -> GatewayConfigDocument:
    """The two devices of ``site``, pushed as ``version``."""
    return GatewayConfigDocument(
        gateway=gateway,
        version=version,
        devices=[
            PushedDevice(id="door-1", profile=DOOR.id, address=f"{BUS_URL}?unit=1"),
            PushedDevice(id="smoke-2", profile=SMOKE.id, address=f"{BUS_URL}?unit=2"),
        ],
    )


@pytest.fixture
def pushed_agent(tmp_path: Path) -> Iterator[Agent]:
    """A real agent (never run: its buses are never connected) whose state_dir holds
    version RUNNING_VERSION of a pushed config, so it starts running that version: the
    ``ConfigTarget`` apply_config judges documents with."""
    state = tmp_path / "agent-state"
    state.mkdir()
    (state / PUSHED_FILE).write_bytes(encode(pushed_document(RUNNING_VERSION)))
    file = {
        "gateway": "gw-fh-01",
        "community": "xijin/fenghuang",
        "state_dir": str(state),
        "devices": [{"id": "door-1", "profile": DOOR.id, "address": f"{BUS_URL}?unit=1"}],
    }
    agent = Agent(parse_config(file, "gateway.yaml"), PROFILES, source="gateway.yaml")
    assert agent.config_version == RUNNING_VERSION
    try:
        yield agent
    finally:
        agent.spool.close()


def apply_command(*, device: str | None = None, **args: ArgValue) -> bytes:
    return command("apply_config", device=device, args=args)


NEXT = encode(pushed_document(RUNNING_VERSION + 1)).decode()
APPLY_REFUSALS = [
    pytest.param(
        apply_command(document=NEXT),
        "apply_config: version must be a whole number >= 1, not None",
        {},
        id="version-missing",
    ),
    pytest.param(
        apply_command(version=True, document=NEXT),
        "apply_config: version must be a whole number >= 1, not True",
        {},
        id="version-bool",
    ),
    pytest.param(
        apply_command(version=0, document=NEXT),
        "apply_config: version must be a whole number >= 1, not 0",
        {},
        id="version-zero",
    ),
    pytest.param(
        apply_command(version=4.0, document=NEXT),
        "apply_config: version must be a whole number >= 1, not 4.0",
        {},
        id="version-float",
    ),
    pytest.param(
        apply_command(version=4),
        "apply_config: document must be the config document as JSON text",
        {},
        id="document-missing",
    ),
    pytest.param(
        apply_command(version=4, document=4),
        "apply_config: document must be the config document as JSON text",
        {},
        id="document-not-a-string",
    ),
    pytest.param(
        apply_command(device="door-1", version=4, document=NEXT),
        "apply_config takes no device (got 'door-1')",
        {},
        id="device-given",
    ),
    pytest.param(
        apply_command(version=4, document=NEXT, force=True),
        "apply_config has no argument force",
        {},
        id="unknown-argument",
    ),
    pytest.param(
        apply_command(version=4, document="{not json"),
        "pushed config version 4: not a gateway config document: JSON is malformed",
        {"version": RUNNING_VERSION, "requested": 4, "invalid": True},
        id="document-not-json",
    ),
    pytest.param(
        apply_command(version=5, document=NEXT),
        "pushed config version 5: the document says version 4, the command 5",
        {"version": RUNNING_VERSION, "requested": 5, "invalid": True},
        id="versions-differ",
    ),
    pytest.param(
        apply_command(version=4, document=encode(pushed_document(4, "gw-elsewhere")).decode()),
        "pushed config version 4: it is for gateway 'gw-elsewhere', this is 'gw-fh-01'",
        {"version": RUNNING_VERSION, "requested": 4, "invalid": True},
        id="another-gateways-document",
    ),
]


@pytest.mark.parametrize(("payload", "reason", "data"), APPLY_REFUSALS)
async def test_apply_config_refusals_name_the_reason_and_leave_the_config(
    site: Site, pushed_agent: Agent, payload: bytes, reason: str, data: dict[str, ArgValue]
) -> None:
    """Bad arguments are refused with no data (a cloud bug, not a verdict on a
    document); a document the gateway will never run carries ``invalid``, which alone
    stops the cloud pushing that version. Either way nothing changes and, refused
    before anything started, the audit has the refusal alone."""
    stored = (pushed_agent.config.state_dir / PUSHED_FILE).read_bytes()
    processor = site.processor(config=pushed_agent)
    result = result_of(await processor.handle("c-1", payload))
    assert not result.ok
    assert result.detail.startswith(reason), result.detail
    assert result.data == data
    assert pushed_agent.config_version == RUNNING_VERSION
    assert (pushed_agent.config.state_dir / PUSHED_FILE).read_bytes() == stored
    (line,) = site.audit_lines()
    assert (line["outcome"], line["detail"]) == ("refused", result.detail)


@pytest.mark.parametrize("version", [1, RUNNING_VERSION - 1, RUNNING_VERSION])
async def test_apply_config_of_a_version_not_above_the_running_one_is_answered_not_applied(
    site: Site, pushed_agent: Agent, version: int
) -> None:
    """The cloud may push a version again (its result was lost): that is no fault, and
    nothing is judged or done, even for a document that would be refused."""
    processor = site.processor(config=pushed_agent)
    payload = apply_command(version=version, document="{not json")
    result = result_of(await processor.handle("c-1", payload))
    assert (result.ok, result.detail) == (
        True,
        f"already runs version {RUNNING_VERSION}; nothing done",
    )
    assert result.data == {
        "version": RUNNING_VERSION,
        "requested": version,
        "applied": False,
        "devices": 2,
        "added": "",
        "removed": "",
        "changed": "",
    }
    assert pushed_agent.config_version == RUNNING_VERSION
    assert [line["outcome"] for line in site.audit_lines()] == ["started", "ok"]


async def test_scanning_the_serial_line_of_a_gateway_device_is_refused(tmp_path: Path) -> None:
    address = parse_address("modbus-rtu:///dev/ttyUSB7?baud=9600&unit=4")
    actions = DeviceActions(
        {"smoke-4": (MemoryBus(address.bus), PolledDevice("smoke-4", SMOKE, address, 1.0))}
    )
    processor = CommandProcessor(
        "gw-fh-01",
        actions,
        reload=_reloaded,
        audit_path=tmp_path / "commands.jsonl",
        agent_version="0.1.0-test",
        clock=Clock(),
    )
    result = result_of(await processor.handle("c-1", command("scan", args={"bus": "smoke-4"})))
    assert not result.ok
    assert "this gateway polls modbus-rtu:///dev/ttyUSB7" in result.detail


async def test_a_command_that_hangs_fails_after_the_run_timeout(site: Site) -> None:
    async def hanging_reload() -> str:
        await asyncio.sleep(30)
        return "never"

    limits = CommandLimits(run_timeout_s=0.2)
    processor = site.processor(reload=hanging_reload, limits=limits)
    result = result_of(await processor.handle("c-1", command("reload_config")))
    assert (result.ok, result.detail) == (False, "did not finish within 0.2 s")
    assert [line["outcome"] for line in site.audit_lines()] == ["started", "failed"]


async def wait_for_request(bus: MemoryBus) -> None:
    """Until a request has reached the bus (a held one is then being served)."""
    deadline = asyncio.get_running_loop().time() + 5
    while bus.requests == 0:
        assert asyncio.get_running_loop().time() < deadline, "no request reached the device"
        await asyncio.sleep(0.005)


async def test_a_cancelled_caller_does_not_cut_off_an_unlock_nor_repeat_it(site: Site) -> None:
    # The uplink cancels its command task on a reconnect; the broker then redelivers.
    released = asyncio.Event()
    site.bus.held["door-1"] = released  # the door takes the write once released
    processor = site.processor()
    payload = command("unlock_door", device="door-1", args={"seconds": 7})
    first = asyncio.create_task(processor.handle("c-1", payload))
    await wait_for_request(site.bus)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    redelivered = asyncio.create_task(processor.handle("c-1", payload))
    await asyncio.sleep(0.05)
    assert not redelivered.done(), "the redelivery waits for the write still under way"
    released.set()
    second = await asyncio.wait_for(redelivered, timeout=5)
    result = result_of(second)
    assert (result.ok, result.detail) == (True, "unlocked door-1 for 7 s")
    assert site.bus.writes == [unlock_pulse(7)]
    assert site.bus.requests == 1
    assert await processor.handle("c-1", payload) == second
    assert [line["outcome"] for line in site.audit_lines()] == ["started", "ok", "repeat", "repeat"]
    assert site.processor().kept == 1


class ExpiresDuringTheFsync(Clock):
    """Jumps ``jump_s`` ahead once a ``started`` line is on disk: a slow fsync."""

    def __init__(self, audit: Path, jump_s: float) -> None:
        super().__init__()
        self._audit, self._jump_s = audit, jump_s

    def __call__(self) -> datetime:
        if self._jump_s and self._audit.exists() and b'"started"' in self._audit.read_bytes():
            self.advance(self._jump_s)
            self._jump_s = 0.0
        return self.now


async def test_an_unlock_that_expires_during_its_started_fsync_is_not_carried_out(
    site: Site,
) -> None:
    clock = ExpiresDuringTheFsync(site.audit, jump_s=10)
    processor = CommandProcessor(
        "gw-fh-01",
        site.actions,
        reload=_reloaded,
        audit_path=site.audit,
        agent_version="0.1.0-test",
        clock=clock,
    )
    payload = command("unlock_door", device="door-1", expires_s=5)
    answer = await processor.handle("c-1", payload)
    result = result_of(answer)
    assert not result.ok
    assert result.detail.startswith(
        "not carried out: expired at 2025-03-01T08:00:05+00:00 before it could start"
    )
    assert (site.bus.requests, site.bus.writes) == (0, [])
    assert [line["outcome"] for line in site.audit_lines()] == ["started", "refused"]
    assert await processor.handle("c-1", payload) == answer


async def test_an_act_is_cut_off_at_its_expiry_not_after_the_run_timeout(site: Site) -> None:
    async def hanging_reload() -> str:
        await asyncio.sleep(30)
        return "never"

    processor = site.processor(reload=hanging_reload)
    loop = asyncio.get_running_loop()
    began = loop.time()
    result = result_of(await processor.handle("c-1", command("reload_config", expires_s=0.3)))
    assert loop.time() - began < 5
    assert not result.ok
    assert result.detail.startswith(
        "did not finish by its expiry at 2025-03-01T08:00:00.300000+00:00"
    )
    assert result.detail.endswith("whether it took effect is unknown")
    assert [line["outcome"] for line in site.audit_lines()] == ["started", "failed"]


async def test_a_grown_audit_log_is_rotated_keeping_history_and_kept_results(
    site: Site,
) -> None:
    limits = CommandLimits(audit_rotate_lines=20, audit_generations=2)
    processor = site.processor(limits=limits)
    unlock = command("unlock_door", device="door-1", args={"seconds": 7})
    first = await processor.handle("c-1", unlock)
    for n in range(2, 12):
        await processor.handle(f"c-{n}", command("ping", id=f"c-{n}", expires_s=-1))
    small = site.audit.read_bytes()
    site.processor(limits=limits)
    assert site.audit.read_bytes() == small, "not past the limit yet: no rotation"
    assert not site.audit.with_name("commands.jsonl.1").exists()
    for n in range(12, 22):
        await processor.handle(f"c-{n}", command("ping", id=f"c-{n}", expires_s=-1))
    # The refusals are no longer kept; the unlock is, until 08:01:30.
    site.clock.advance(30)
    old = site.audit.read_bytes()
    assert len(old.splitlines()) == 22

    rotated = site.processor(limits=limits)
    assert site.audit.with_name("commands.jsonl.1").read_bytes() == old
    assert [(line["id"], line["outcome"]) for line in site.audit_lines()] == [("c-1", "ok")]
    assert rotated.kept == 1
    assert os.stat(site.audit).st_mode & 0o777 == 0o600
    site.clock.advance(1)
    restarted = site.processor(limits=limits)
    assert await restarted.handle("c-1", unlock) == first
    assert site.bus.writes == [unlock_pulse(7)]
    assert [line["outcome"] for line in site.audit_lines()] == ["ok", "repeat"]

    # A second rotation moves the first up a generation; a third drops the oldest
    # beyond audit_generations (with a warning), and nothing else.
    site.clock.advance(3600)
    site.audit.write_bytes(site.audit.read_bytes() + old)
    grown = site.audit.read_bytes()
    site.processor(limits=limits)
    assert site.audit.read_bytes() == b""
    assert site.audit.with_name("commands.jsonl.1").read_bytes() == grown
    assert site.audit.with_name("commands.jsonl.2").read_bytes() == old
    site.audit.write_bytes(old)
    site.processor(limits=limits)
    assert site.audit.with_name("commands.jsonl.1").read_bytes() == old
    assert site.audit.with_name("commands.jsonl.2").read_bytes() == grown
    assert not site.audit.with_name("commands.jsonl.3").exists()


async def test_a_log_of_kept_results_only_is_not_rotated_at_every_start(site: Site) -> None:
    limits = CommandLimits(audit_rotate_lines=10)
    processor = site.processor(limits=limits)
    for n in range(1, 13):
        await processor.handle(f"c-{n}", command("ping", id=f"c-{n}"))
    full = site.audit.read_bytes()
    assert site.processor(limits=limits).kept == 12
    assert site.audit.read_bytes() == full
    assert not site.audit.with_name("commands.jsonl.1").exists()


def test_the_uplink_waits_longer_than_a_command_can_take() -> None:
    assert CommandLimits().longest_handle_s < COMMAND_TIMEOUT_S
