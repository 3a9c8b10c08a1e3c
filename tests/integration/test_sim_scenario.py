"""Scenarios: a timed script played on served devices, watched by a plain Modbus master."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import typer
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from typer.testing import CliRunner

from anju.commands import sim as sim_commands
from firmware_sim import ScenarioError
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.scenario import Step, load_scenario, parse_scenario, run_scenario

SMOKE_ALARM = 0x01
DOOR_OPEN, DOOR_FORCED = 0x01, 0x04

SCENARIO = """\
devices:
  1: anju-smoke-mb
  2: anju-door-mb
steps:
  - {at: 0.1, unit: 2, action: present_card, card_id: "04:A2:19:7C", granted: false}
  - {at: 0.2, unit: 2, action: force_open}
  - {at: 0.3, unit: 1, action: trigger_alarm}
  - {at: 0.4, unit: 1, action: fault_drop, count: 1}
"""


async def test_scenario_end_to_end_over_tcp(tmp_path: Path) -> None:
    path = tmp_path / "drill.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    scenario = load_scenario(path)
    devices = scenario.create_devices()
    ran: list[Step] = []
    async with ModbusSimServer(devices) as server:
        client = AsyncModbusTcpClient(
            "127.0.0.1", port=server.port, timeout=0.3, retries=0, reconnect_delay=0
        )
        assert await asyncio.wait_for(client.connect(), 5)
        try:
            before = await client.read_input_registers(0, count=1, device_id=1)
            assert before.registers == [0]
            await run_scenario(scenario, devices, server.faults, on_step=ran.append)
            door = await client.read_input_registers(16, count=2, device_id=2)
            assert door.registers == [2, 5], "two events, the newest a forced opening"
            status = await client.read_input_registers(0, count=1, device_id=2)
            assert status.registers == [DOOR_OPEN | DOOR_FORCED]
            with pytest.raises(ModbusIOException):
                await client.read_input_registers(0, count=1, device_id=1)
            smoke = await client.read_input_registers(0, count=1, device_id=1)
            assert smoke.registers == [SMOKE_ALARM]
        finally:
            client.close()
    assert [step.action for step in ran] == [
        "present_card",
        "force_open",
        "trigger_alarm",
        "fault_drop",
    ]


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ({"devices": {1: "nope"}, "steps": []}, "no simulated device"),
        (
            {"devices": {1: "anju-smoke-mb"}, "steps": [{"at": 1, "unit": 2, "action": "x"}]},
            "unit 2",
        ),
        (
            {
                "devices": {1: "anju-smoke-mb"},
                "steps": [{"at": 1, "unit": 1, "action": "force_open"}],
            },
            "has no action 'force_open'",
        ),
        (
            {
                "devices": {1: "anju-smoke-mb"},
                "steps": [{"at": 1, "unit": 1, "action": "set_smoke"}],
            },
            "does not take",
        ),
        (
            {"devices": {1: "anju-door-mb"}, "steps": [{"unit": 1, "action": "force_open"}]},
            "give at",
        ),
    ],
)
def test_bad_scenarios_name_the_step(document: object, complaint: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(complaint)):
        parse_scenario(document, source="drill.yaml")


def test_sim_run_plays_the_scenario(tmp_path: Path) -> None:
    path = tmp_path / "drill.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    root = typer.Typer()
    root.add_typer(sim_commands.app, name="sim")
    result = CliRunner().invoke(
        root, ["sim", "run", "--scenario", str(path), "--listen", "modbus-tcp://127.0.0.1:0"]
    )
    assert result.exit_code == 0, result.output
    assert re.search(
        r"serving AC-MB210 as unit 2 at modbus-tcp://127\.0\.0\.1:\d+\?unit=2", result.output
    )
    assert "step t+0.3s unit 1: trigger_alarm()" in result.output
    assert "unit 1 status: normal -> alarm" in result.output
    assert result.output.rstrip().endswith("stopped")
    help_text = CliRunner().invoke(root, ["sim", "run", "--help"]).output
    assert "fault_drop" in help_text
