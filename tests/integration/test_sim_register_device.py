"""The generic register device and `anju sim device` for profiles without a dedicated simulator.

The layout from a profile is tested where it lives, in tests/unit/test_sim_profile_device.py.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest
import typer
from pymodbus.client import AsyncModbusTcpClient
from typer.testing import CliRunner

from anju.commands import sim as sim_commands
from anju.commands.common import profile_root
from firmware_sim import IllegalDataAddress
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.register_device import RegisterDevice

ILLEGAL_ADDRESS = 0x02


def _device() -> RegisterDevice:
    return RegisterDevice(
        coils={0: False, 1: True, 17: True},
        discrete_inputs={3: True},
        input_registers={0: 7, 1: 0xFFFF},
        holding_registers={10: 1, 11: 2},
        writable_coils=[0, 1],
        writable_holding_registers=[10],
    )


def test_tables_setters_and_refusals() -> None:
    device = _device()
    device.set_input_registers(0, [1, 2])
    device.set_coil(17, False)
    assert device.input_registers() == {0: 1, 1: 2}
    assert device.coils() == {0: False, 1: True, 17: False}
    device.write_holding_registers(10, [99])
    with pytest.raises(IllegalDataAddress) as excinfo:
        device.write_holding_registers(10, [1, 2])
    assert excinfo.value.address == 11
    assert device.holding_registers() == {10: 99, 11: 2}
    with pytest.raises(IllegalDataAddress):
        device.set_input_registers(1, [0, 0])
    with pytest.raises(ValueError, match="u16"):
        device.set_holding_registers(11, [70000])
    device.power_cycle()
    assert device.holding_registers() == {10: 1, 11: 2}
    with pytest.raises(ValueError, match="writable holding register 12"):
        RegisterDevice(holding_registers={10: 0}, writable_holding_registers=[12])


async def test_served_over_tcp_with_coils() -> None:
    device = _device()
    async with ModbusSimServer({9: device}) as server:
        client = AsyncModbusTcpClient(
            "127.0.0.1", port=server.port, timeout=2, retries=0, reconnect_delay=0
        )
        assert await asyncio.wait_for(client.connect(), 5)
        try:
            words = await client.read_input_registers(0, count=2, device_id=9)
            assert words.registers == [7, 0xFFFF]
            coils = await client.read_coils(0, count=2, device_id=9)
            assert coils.bits[:2] == [False, True]
            high = await client.read_coils(17, count=1, device_id=9)
            assert high.bits[0] is True
            inputs = await client.read_discrete_inputs(3, count=1, device_id=9)
            assert inputs.bits[0] is True
            assert not (await client.write_coil(0, True, device_id=9)).isError()
            assert device.coils()[0] is True
            refused = await client.write_register(11, 5, device_id=9)
            assert refused.exception_code == ILLEGAL_ADDRESS
            assert (await client.read_coils(5, count=1, device_id=9)).exception_code == 2
        finally:
            client.close()


def _cli() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(sim_commands.app, name="sim")
    return root


@pytest.fixture
def profile_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped profiles plus a Modbus meter that has no dedicated simulator."""
    root = tmp_path / "profiles"
    shutil.copytree(profile_root(), root)
    text = (root / "smoke" / "anju-smoke-mb.yaml").read_text(encoding="utf-8")
    (root / "smoke" / "test-smoke-generic.yaml").write_text(
        text.replace("id: anju-smoke-mb", "id: test-smoke-generic"), encoding="utf-8"
    )
    monkeypatch.setenv("ANJU_PROFILE_DIR", str(root))
    return root


def test_sim_device_serves_any_modbus_profile(profile_dir: Path) -> None:
    result = CliRunner().invoke(
        _cli(),
        [
            "sim",
            "device",
            "--profile",
            "test-smoke-generic",
            "--listen",
            "modbus-tcp://127.0.0.1:0?unit=4",
            "--set",
            "co=35",
            "--duration",
            "0.3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"serving SD-MB100 \(register table .*unit 4 at modbus-tcp://", result.output)
    assert "co 35" in result.output


def test_sim_device_refuses_a_non_modbus_profile(profile_dir: Path) -> None:
    result = CliRunner().invoke(
        _cli(),
        ["sim", "device", "--profile", "anju-wearable-ble", "--listen", "modbus-tcp://127.0.0.1:0"],
    )
    assert result.exit_code == 2
    assert "Modbus" in result.output


def test_sim_device_set_needs_a_register_table(profile_dir: Path) -> None:
    result = CliRunner().invoke(
        _cli(),
        [
            "sim",
            "device",
            "--profile",
            "anju-smoke-mb",
            "--listen",
            "modbus-tcp://127.0.0.1:0",
            "--set",
            "co=3",
        ],
    )
    assert result.exit_code == 2
    assert "dedicated" in result.output


def test_sim_device_bad_set_value_names_the_point(profile_dir: Path) -> None:
    result = CliRunner().invoke(
        _cli(),
        [
            "sim",
            "device",
            "--profile",
            "test-smoke-generic",
            "--listen",
            "modbus-tcp://127.0.0.1:0",
            "--set",
            "co=lots",
        ],
    )
    assert result.exit_code == 2
    assert "--set" in result.output
    assert "co='lots': give a number" in result.output
