"""Every scenario shipped in examples/ plays through ``anju sim run`` and does what it says.

Each ``examples/*.yaml`` is served by the real command in a child process while a
gateway's poller reads its units through their device profiles, as ``anju edge run``
would. Every step that raises something on a device must show up as that event on
the wire, so a new example is checked as soon as it is added. The webhook receiver
runs against the demo in tests/e2e/test_demo.py; here only its refusal to start
without an API key, which would otherwise surface as a 401 after waiting for the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from anju.services.ports import free_port
from edge.addresses import parse_address
from edge.drivers.modbus.bus import ModbusBus
from edge.poller import BusPoller, PolledDevice
from firmware_sim.scenario import Scenario, load_scenario
from schemas.profile import load_profiles
from schemas.wire import Event, Reading

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
PROFILES = load_profiles(ROOT / "device_profiles")
RUN_LIMIT_S = 60.0

RAISES: Mapping[tuple[str, str], Callable[[Mapping[str, Any]], str]] = {
    ("anju-smoke-mb", "trigger_alarm"): lambda _: "smoke.alarm",
    ("anju-door-mb", "trigger_alarm"): lambda _: "door.forced_open",
    ("anju-door-mb", "force_open"): lambda _: "door.forced_open",
    ("anju-door-mb", "fire_release"): lambda _: "door.unlocked_by_fire",
    ("anju-door-mb", "present_card"): lambda args: (
        "access.granted" if args["granted"] else "access.denied"
    ),
}
"""The event a gateway must see for each step that raises one (profile, action)."""


def _expected(scenario: Scenario) -> Counter[tuple[int, str]]:
    expected: Counter[tuple[int, str]] = Counter()
    for step in scenario.steps:
        raises = RAISES.get((scenario.profiles[step.unit], step.action))
        if raises is not None:
            expected[step.unit, raises(step.arguments)] += 1
    return expected


def test_every_scenario_the_docs_and_help_name_is_shipped() -> None:
    naming = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "anju/commands/sim.py"]
    named = {
        (source.name, scenario)
        for source in naming
        for scenario in re.findall(r"--scenario (\S+\.yaml)", source.read_text(encoding="utf-8"))
    }
    assert named, "the README and anju sim --help show a scenario file"
    for source, scenario in sorted(named):
        assert (ROOT / scenario).is_file(), f"{source} names {scenario}, which is not shipped"


def test_the_webhook_receiver_asks_for_a_key_before_anything_else() -> None:
    env = {name: value for name, value in os.environ.items() if name != "ANJU_API_KEY"}
    refused = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "webhook_receiver.py"), "--wait", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "no API key: pass --key or set ANJU_API_KEY" in refused.stderr


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
async def test_example_scenario_plays_through_anju_sim_run(path: Path) -> None:
    scenario = load_scenario(path)
    expected = _expected(scenario)
    assert expected, f"{path.name} raises nothing a gateway would see; what does it show?"
    port = free_port()
    seen: Counter[tuple[int, str]] = Counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "anju.cli",
        "sim",
        "run",
        "--scenario",
        str(path),
        "--listen",
        f"modbus-tcp://127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    assert process.stdout is not None
    output: list[str] = []
    try:
        async with asyncio.timeout(RUN_LIMIT_S):
            while sum(line.startswith("serving ") for line in output) < len(scenario.profiles):
                line = (await process.stdout.readline()).decode()
                assert line, f"anju sim run ended before serving:\n{''.join(output)}"
                output.append(line)
            async with _polling(scenario, port, seen):
                output.extend(line.decode() for line in await _read_all(process.stdout))
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = "".join(output)
    assert process.returncode == 0, text
    for step in scenario.steps:
        assert f"step {step.describe()}" in text
    assert text.rstrip().endswith("stopped")
    missing = expected - seen
    assert not missing, f"steps of {path.name} not seen on the wire: {dict(missing)}\n{text}"


async def _read_all(stream: asyncio.StreamReader) -> list[bytes]:
    return [line async for line in stream]


@contextlib.asynccontextmanager
async def _polling(
    scenario: Scenario, port: int, seen: Counter[tuple[int, str]]
) -> AsyncIterator[None]:
    """Poll every unit through its profile, as a gateway would, counting the events."""
    devices = [
        PolledDevice(
            f"unit-{unit}",
            PROFILES[profile],
            parse_address(f"modbus-tcp://127.0.0.1:{port}?unit={unit}"),
            PROFILES[profile].poll_interval_s,
        )
        for unit, profile in scenario.profiles.items()
    ]
    units = {
        device.device_id: unit for device, unit in zip(devices, scenario.profiles, strict=True)
    }

    def sink(readings: list[Reading], events: list[Event]) -> None:
        for event in events:
            seen[units[event.device], str(event.type)] += 1

    bus = ModbusBus(devices[0].address, timeout_s=1.0)
    poller = BusPoller(bus, devices, sink)
    for device in devices:
        assert await poller.poll(device), f"{device.device_id} does not answer"
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task
        bus.close()
