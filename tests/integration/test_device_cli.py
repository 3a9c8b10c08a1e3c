"""``anju device test|write|scan`` as an installer runs them: a process, real sockets.

Two kinds of server stand in for the field device: the SD-MB100 simulator of
firmware_sim (pymodbus underneath, like Anju's own driver), and a server built with
another Modbus library, pyModbusTCP, whose registers are filled by hand from the
register map in device_profiles/smoke/anju-smoke-mb.yaml. The second is the check
that matters: it proves Anju decodes what a device it did not write holds.

The last tests run the command in this process with stand-in BLE drivers defined here,
registered with ``edge.drivers.registry`` in place of the built-in one: the commands
reach drivers only through the registry, so a driver with the installer hooks works
in them unchanged, and one without is refused with the reason. (The built-in BLE
driver against simulated bands: tests/integration/test_ble_cli.py.)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from pyModbusTCP.server import DataBank, ModbusServer
from typer.testing import CliRunner

from anju.cli import root
from anju.services.ports import free_port, wait_for_port
from edge.addresses import DeviceAddress
from edge.drivers.contract import (
    DeviceSpec,
    Driver,
    DriverOptions,
    PolledBus,
    Probe,
    ProbedPoint,
    ProfileCheck,
    RawRead,
    ScanHit,
    ScanProgress,
)
from edge.drivers.registry import registered
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.smoke_detector import SmokeDetector
from schemas.profile import DeviceProfile

ANJU = [sys.executable, "-m", "anju.cli"]
CLI_TIMEOUT_S = 60


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        """The one JSON object the command printed (json.loads rejects anything more)."""
        document: dict[str, Any] = json.loads(self.stdout)
        return document


def _env(profile_dir: Path | None) -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "200"}
    if profile_dir is not None:
        env["ANJU_PROFILE_DIR"] = str(profile_dir)
    return env


async def anju(*args: str, profile_dir: Path | None = None) -> Run:
    """Run ``anju ARGS`` in a process while the test's event loop keeps serving."""
    process = await asyncio.create_subprocess_exec(
        *ANJU,
        *args,
        env=_env(profile_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


def anju_sync(*args: str, profile_dir: Path | None = None) -> Run:
    """Run ``anju ARGS`` in a process, for servers that run in threads of their own."""
    done = subprocess.run(
        [*ANJU, *args],
        env=_env(profile_dir),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def _points(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {point["name"]: point for point in document["points"]}


def _detector() -> SmokeDetector:
    """A detector in alarm: 4.12 %/m of smoke (threshold 3.50), -5.5 °C, 17 ppm CO, 88 %."""
    detector = SmokeDetector(serial_number=0x12345678)
    detector.set_temperature(-5.5)
    detector.set_smoke(4.12)
    detector.set_co(17)
    detector.set_battery(88)
    return detector


# -- against the SD-MB100 simulator ---------------------------------------------------


async def test_device_test_shows_decoded_values_labels_and_events() -> None:
    async with ModbusSimServer({1: _detector()}) as sim:
        run = await anju(
            "device", "test", "--profile", "anju-smoke-mb", "--address", sim.url_for(1)
        )
    assert run.code == 0, run.stderr
    rows = {line.split("│")[1].strip(): line for line in run.stdout.splitlines() if "│" in line}
    assert "alarm" in rows["status"]
    assert "4.12 %/m" in rows["obscuration"]
    assert "-5.5 °C" in rows["temperature"]
    assert "17 ppm" in rows["co"]
    assert "88 %" in rows["battery"]
    assert "305419896" in rows["serial_number"]
    assert "3.5" in rows["alarm_threshold (writable)"]
    assert "idle" in rows["alarm_reset (writable)"]
    assert "event: smoke.alarm (critical)" in run.stdout
    assert "0x" not in run.stdout, "raw registers only with --raw"


async def test_device_test_json_is_one_object_with_requests_points_and_events() -> None:
    async with ModbusSimServer({1: _detector()}) as sim:
        address = sim.url_for(1)
        run = await anju(
            "device", "test", "--profile", "anju-smoke-mb", "--address", address, "--json"
        )
    assert run.code == 0, run.stderr
    document = run.json()
    assert document["profile"] == "anju-smoke-mb"
    assert document["driver"] == "modbus"
    assert document["address"] == address
    assert document["elapsed_ms"] > 0
    points = _points(document)
    assert points["status"] | {"raw": 1, "label": "alarm"} == points["status"]
    assert points["obscuration"]["value"] == 4.12
    assert points["obscuration"]["unit"] == "%/m"
    assert points["obscuration"]["metric"] == "smoke.obscuration_pct_per_m"
    assert points["temperature"]["where"] == "IR 2 s16"
    assert points["temperature"]["raw_text"] == "0xFFC9"
    assert points["temperature"]["raw"] == -55
    assert points["temperature"]["value"] == -5.5
    assert points["temperature"]["unit"] == "°C"
    assert points["serial_number"]["where"] == "IR 10-11 u32"
    assert points["serial_number"]["raw_text"] == "0x1234 0x5678"
    assert points["serial_number"]["value"] == 0x12345678
    assert points["alarm_threshold"]["value"] == 3.5
    assert points["alarm_threshold"]["writable"] is True
    requests = [request["request"] for request in document["requests"]]
    assert requests == ["input_register 0+5", "input_register 10+2", "holding_register 100+2"]
    assert document["requests"][0]["response"] == "0x0001 0x019C 0xFFC9 0x0011 0x0058"
    assert document["requests"][2]["points"] == ["alarm_threshold", "alarm_reset"]
    assert [(e["type"], e["severity"]) for e in document["events"]] == [("smoke.alarm", "critical")]
    assert document["events"][0]["data"]["value"] == 4.12


async def test_device_test_raw_shows_register_hex() -> None:
    async with ModbusSimServer({1: _detector()}) as sim:
        run = await anju(
            "device", "test", "--profile", "anju-smoke-mb", "--address", sim.url_for(1), "--raw"
        )
    assert run.code == 0, run.stderr
    assert "0x0001 0x019C 0xFFC9 0x0011 0x0058" in run.stdout
    assert "0x1234 0x5678" in run.stdout
    assert "0x015E 0x0000" in run.stdout
    assert "0xFFC9 -> -55" in run.stdout
    assert "IR 10-11 u32" in run.stdout


async def test_device_write_changes_the_threshold_the_detector_holds() -> None:
    detector = SmokeDetector()
    async with ModbusSimServer({1: detector}) as sim:
        address = sim.url_for(1)
        run = await anju(
            "device", "write", "--profile", "anju-smoke-mb", "--address", address,
            "--point", "alarm_threshold", "--value", "2.5",
        )  # fmt: skip
        assert run.code == 0, run.stderr
        assert detector.alarm_threshold_pct_per_m == 2.5
        assert "before: 3.5  [0x015E -> 350]" in run.stdout
        assert "after:  2.5  [0x00FA -> 250]" in run.stdout

        as_json = await anju(
            "device", "write", "--profile", "anju-smoke-mb", "--address", address,
            "--point", "alarm_threshold", "--value", "4", "--json",
        )  # fmt: skip
        assert as_json.code == 0, as_json.stderr
        document = as_json.json()
        assert (document["before"]["value"], document["after"]["value"]) == (2.5, 4.0)
        assert document["written"] == [400]
        assert detector.alarm_threshold_pct_per_m == 4.0


async def test_device_write_refusals_name_the_point_or_register() -> None:
    detector = SmokeDetector()
    async with ModbusSimServer({1: detector}) as sim:
        address = sim.url_for(1)
        refused_by_device = await anju(
            "device", "write", "--profile", "anju-smoke-mb", "--address", address,
            "--point", "alarm_threshold", "--value", "20",
        )  # fmt: skip
        not_writable = await anju(
            "device", "write", "--profile", "anju-smoke-mb", "--address", address,
            "--point", "battery", "--value", "50",
        )  # fmt: skip
    assert refused_by_device.code == 1
    assert "holding_register 100" in refused_by_device.stderr
    assert "Modbus exception 3 (illegal data value)" in refused_by_device.stderr
    assert detector.alarm_threshold_pct_per_m == 3.5
    assert not_writable.code == 1
    assert "point 'battery' of anju-smoke-mb" in not_writable.stderr
    assert "writable points: alarm_threshold, alarm_reset" in not_writable.stderr


async def test_device_scan_finds_units_and_suggests_the_smoke_profile() -> None:
    async with ModbusSimServer({1: SmokeDetector(), 3: _detector()}) as sim:
        unit_3 = sim.url_for(3)
        as_json = await anju("device", "scan", "modbus", "--address", sim.url, "--json")
        as_text = await anju("device", "scan", "modbus", "--address", sim.url, "--units", "1-5")
    assert as_json.code == 0, as_json.stderr
    document = as_json.json()
    assert (document["driver"], document["tried"]) == ("modbus", 247)
    found = {hit["candidate"]: hit for hit in document["found"]}
    assert sorted(found) == ["1", "3"]
    assert found["3"]["address"] == unit_3
    assert found["3"]["detail"] == "HR 0: Modbus exception 2 (illegal data address)", (
        "a refusal proves a device as well as registers do"
    )
    for hit in found.values():
        assert hit["suggested"] == ["anju-smoke-mb"]
        checks = {check["profile"]: check for check in hit["checks"]}
        assert checks["anju-door-mb"]["matches"] is False
        assert "illegal data address" in checks["anju-door-mb"]["reason"]
    assert "identification register" in document["suggestion_basis"]
    assert as_text.code == 0, as_text.stderr
    assert "2 of 5 units answered" in as_text.stdout
    assert "anju-smoke-mb" in as_text.stdout
    assert "every read it plans succeeds" in " ".join(as_text.stdout.split())
    assert unit_3 in as_text.stdout, "an address to paste into anju device test"
    assert "trying unit" not in as_text.stdout, "no progress bar without a terminal"


async def test_dead_address_exits_1_naming_the_address() -> None:
    port = free_port()
    address = f"modbus-tcp://127.0.0.1:{port}?unit=1"
    run = await anju("device", "test", "--profile", "anju-smoke-mb", "--address", address)
    as_json = await anju(
        "device", "test", "--profile", "anju-smoke-mb", "--address", address, "--json"
    )
    scan = await anju("device", "scan", "modbus", "--address", address, "--units", "1-3")
    assert run.code == 1
    assert f"127.0.0.1:{port}" in run.stderr
    assert "cannot connect" in run.stderr
    assert "Traceback" not in run.stderr
    assert as_json.code == 1
    assert as_json.json()["ok"] is False
    assert f"127.0.0.1:{port}" in as_json.json()["error"]
    assert scan.code == 1
    assert f"127.0.0.1:{port}" in scan.stderr


async def test_silent_device_times_out_naming_unit_table_and_register() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(256):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        run = await anju(
            "device", "test", "--profile", "anju-smoke-mb",
            "--address", f"modbus-tcp://127.0.0.1:{port}?unit=7", "--timeout", "0.2",
        )  # fmt: skip
    assert run.code == 1
    assert f"tcp://127.0.0.1:{port} unit 7 input_register 0+5: no answer" in run.stderr
    assert "check the unit id, baud rate, parity" in run.stderr


async def test_unknown_profile_and_bad_address_are_refused_before_any_io() -> None:
    unknown = await anju(
        "device", "test", "--profile", "no-such-mb", "--address", "modbus-tcp://127.0.0.1:1"
    )
    bad_address = await anju(
        "device", "test", "--profile", "anju-smoke-mb", "--address", "modbus-tcp://h:1?unit=999"
    )
    bad_units = await anju(
        "device", "scan", "modbus", "--address", "modbus-tcp://127.0.0.1:1", "--units", "5-1"
    )
    assert unknown.code == 1
    assert "no profile 'no-such-mb'" in unknown.stderr
    assert "anju-smoke-mb" in unknown.stderr
    assert bad_address.code == 1
    assert "unit must be a whole number from 0 to 247" in bad_address.stderr
    assert bad_units.code == 1
    assert "runs backwards" in bad_units.stderr


def test_a_bad_reader_key_in_the_environment_is_named_as_such_and_not_echoed() -> None:
    key, address = "c0ffee", "osdp:///dev/ttyS9?address=1"
    done = subprocess.run(
        [*ANJU, "device", "test", "--profile", "anju-osdp-reader", "--address", address],
        env={**_env(None), "ANJU_OSDP_SCBK": key},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 1
    assert "ANJU_OSDP_SCBK: 6 hex digits; expected exactly 32" in done.stderr
    assert key not in done.stderr + done.stdout


async def test_device_that_closes_the_connection_is_reported_at_once_with_a_tcp_hint() -> None:
    """A device that accepts a connection and closes it: a reboot, or its one slot taken."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    async with server:
        started = loop.time()
        run = await anju(
            "device", "test", "--profile", "anju-smoke-mb",
            "--address", f"modbus-tcp://127.0.0.1:{port}?unit=7", "--timeout", "30",
        )  # fmt: skip
        elapsed_s = loop.time() - started
    assert run.code == 1
    assert (
        f"tcp://127.0.0.1:{port} unit 7 input_register 0+5: connection closed by the device"
        in run.stderr
    )
    assert "another master (a SCADA, a second gateway, a stale session)" in run.stderr
    assert "wiring" not in run.stderr
    assert "baud" not in run.stderr
    assert elapsed_s < 15, "reported when the device closed, not after the 30 s timeout"


async def test_address_with_a_parameter_its_scheme_lacks_names_it_and_the_valid_ones() -> None:
    misspelt = await anju(
        "device", "test", "--address", "modbus-tcp://127.0.0.1:5020?unti=7",
        "--profile", "anju-smoke-mb",
    )  # fmt: skip
    serial_setting_on_tcp = await anju(
        "device", "test", "--address", "modbus-tcp://127.0.0.1:5020?unit=7&baud=9600",
        "--profile", "anju-smoke-mb", "--json",
    )  # fmt: skip
    assert misspelt.code != 0
    assert "unknown parameter 'unti'; valid parameters: unit" in misspelt.stderr
    assert serial_setting_on_tcp.code != 0
    assert serial_setting_on_tcp.json()["error"].endswith(
        "parameter 'baud' does not apply to modbus-tcp addresses; valid parameters: unit"
    )


# -- against a Modbus server built with another library ---------------------------------


@pytest.fixture
def foreign_server() -> Iterator[tuple[DataBank, int]]:
    """A pyModbusTCP server on loopback (its own thread); it answers every unit id."""
    port = free_port()
    server = ModbusServer(host="127.0.0.1", port=port, no_block=True)
    server.start()
    try:
        wait_for_port(port, timeout=5)
        yield server.data_bank, port
    finally:
        server.stop()


def test_device_test_decodes_what_a_foreign_modbus_server_holds(
    foreign_server: tuple[DataBank, int],
) -> None:
    bank, port = foreign_server
    # SD-MB100 register map (device_profiles/smoke/anju-smoke-mb.yaml), by hand:
    # IR0 status 1 = alarm; IR1 obscuration 412 = 4.12 %/m; IR2 temperature 0xFFC9 =
    # -55 = -5.5 °C; IR3 CO 17 ppm; IR4 battery 88 %; IR10-11 serial 0x00BC614E
    # (12345678) high word first; HR100 threshold 300 = 3.00 %/m; HR101 reset 0.
    bank.set_input_registers(0, [0x0001, 0x019C, 0xFFC9, 0x0011, 0x0058])
    bank.set_input_registers(10, [0x00BC, 0x614E])
    bank.set_holding_registers(100, [0x012C, 0x0000])
    run = anju_sync(
        "device", "test", "--profile", "anju-smoke-mb",
        "--address", f"modbus-tcp://127.0.0.1:{port}?unit=1", "--json",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    document = run.json()
    values = {name: point["value"] for name, point in _points(document).items()}
    assert values == {
        "status": 1.0,
        "obscuration": 4.12,
        "temperature": -5.5,
        "co": 17.0,
        "battery": 88.0,
        "serial_number": 12345678.0,
        "alarm_threshold": 3.0,
        "alarm_reset": 0.0,
    }
    assert _points(document)["status"]["label"] == "alarm"
    assert [event["type"] for event in document["events"]] == ["smoke.alarm"]


TYPES_PROFILE = """\
id: test-types-mb
kind: smoke
protocol: modbus-tcp
manufacturer: Test
model: every value type
modbus: {max_gap: 0}
points:
  - name: f32_little_words
    metric: temperature_c
    modbus: {table: input_register, address: 0, type: f32, word_order: little}
  - name: s32
    modbus: {table: input_register, address: 2, type: s32}
  - name: u32_little_words
    modbus: {table: input_register, address: 4, type: u32, word_order: little}
  - name: u16_little_bytes
    modbus: {table: input_register, address: 6, type: u16, byte_order: little}
  - name: s16_scaled
    modbus: {table: input_register, address: 8, type: s16}
    scale: 0.1
    offset: -40
  - name: bit_set
    modbus: {table: holding_register, address: 10, type: bool, bit: 3}
  - name: bit_clear
    modbus: {table: holding_register, address: 10, type: bool, bit: 4}
  - name: f32_setpoint
    modbus: {table: holding_register, address: 20, type: f32}
    writable: true
  - name: relay
    modbus: {table: coil, address: 5, type: bool}
    writable: true
  - name: door_contact
    modbus: {table: discrete_input, address: 7, type: bool}
"""


@pytest.fixture
def types_profile_dir(tmp_path: Path) -> Path:
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "test-types-mb.yaml").write_text(TYPES_PROFILE)
    return tmp_path


def test_every_value_type_decodes_from_a_foreign_server(
    foreign_server: tuple[DataBank, int], types_profile_dir: Path
) -> None:
    bank, port = foreign_server
    bank.set_input_registers(0, [0x0000, 0x41AC])  # 21.5 = 0x41AC0000, low word first
    bank.set_input_registers(2, [0xFFFE, 0x7960])  # -100000 = 0xFFFE7960
    bank.set_input_registers(4, [0x5E00, 0xB2D0])  # 3000000000 = 0xB2D05E00, low word first
    bank.set_input_registers(6, [0x3412])  # 0x1234 with its bytes swapped
    bank.set_input_registers(8, [0x028F])  # 655 * 0.1 - 40 = 25.5
    bank.set_holding_registers(10, [0x0008])  # bit 3 set, bit 4 clear
    bank.set_holding_registers(20, [0xC148, 0x0000])  # -12.5 = 0xC1480000
    bank.set_coils(5, [True])
    bank.set_discrete_inputs(7, [True])
    run = anju_sync(
        "device", "test", "--profile", "test-types-mb",
        "--address", f"modbus-tcp://127.0.0.1:{port}?unit=9", "--json",
        profile_dir=types_profile_dir,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    points = _points(run.json())
    assert {name: point["raw"] for name, point in points.items()} == {
        "f32_little_words": 21.5,
        "s32": -100000,
        "u32_little_words": 3000000000,
        "u16_little_bytes": 0x1234,
        "s16_scaled": 655,
        "bit_set": True,
        "bit_clear": False,
        "f32_setpoint": -12.5,
        "relay": True,
        "door_contact": True,
    }
    assert points["f32_little_words"]["value"] == 21.5
    assert points["f32_little_words"]["unit"] == "°C"
    assert points["s16_scaled"]["value"] == 25.5
    assert (points["relay"]["where"], points["relay"]["raw_text"]) == ("coil 5", "1")
    assert (points["bit_set"]["where"], points["bit_set"]["raw_text"]) == ("HR 10 bit 3", "0x0008")
    assert points["u32_little_words"]["where"] == "IR 4-5 u32, words little"
    assert points["u32_little_words"]["raw_text"] == "0x5E00 0xB2D0"


def test_writes_reach_a_foreign_server(
    foreign_server: tuple[DataBank, int], types_profile_dir: Path
) -> None:
    bank, port = foreign_server
    address = f"modbus-tcp://127.0.0.1:{port}?unit=1"
    setpoint = anju_sync(
        "device", "write", "--profile", "test-types-mb", "--address", address,
        "--point", "f32_setpoint", "--value", "12.25", "--json",
        profile_dir=types_profile_dir,
    )  # fmt: skip
    relay = anju_sync(
        "device", "write", "--profile", "test-types-mb", "--address", address,
        "--point", "relay", "--value", "on",
        profile_dir=types_profile_dir,
    )  # fmt: skip
    read_only = anju_sync(
        "device", "write", "--profile", "test-types-mb", "--address", address,
        "--point", "door_contact", "--value", "on",
        profile_dir=types_profile_dir,
    )  # fmt: skip
    assert setpoint.code == 0, setpoint.stderr
    assert bank.get_holding_registers(20, 2) == [0x4144, 0x0000]  # 12.25 = 0x41440000
    assert setpoint.json()["after"]["value"] == 12.25
    assert relay.code == 0, relay.stderr
    assert bank.get_coils(5, 1) == [True]
    assert "after:  true" in relay.stdout
    assert read_only.code == 1
    assert "point 'door_contact' of test-types-mb" in read_only.stderr
    assert "does not mark it writable" in read_only.stderr


# -- a driver of another protocol, registered in this process ---------------------------

BAND = "ble://AA:BB:CC:DD:EE:01"


class HooklessBle(Driver):
    """A BLE driver that runs devices but offers neither installer hook."""

    name = "ble"
    protocols = frozenset({"ble"})

    def open(
        self, address: DeviceAddress, devices: Sequence[DeviceSpec], options: DriverOptions
    ) -> PolledBus:
        raise NotImplementedError("the commands never open a bus")


class BandBle(HooklessBle):
    """A care band in SOS (alert flags 1) at BAND, and nothing else in the air."""

    def __init__(self) -> None:
        self.probed: list[str] = []

    async def probe(self, device: DeviceSpec, options: DriverOptions) -> Probe:
        self.probed = [point.name for point in device.points]
        return Probe(
            points=(
                ProbedPoint("heart_rate", 72, "characteristic 2a37 bpm", "0x16 0x48"),
                ProbedPoint("rr_interval", 830, "characteristic 2a37 rr", "0x16 0x48 0x3e 0x03"),
                ProbedPoint("battery", 64, "characteristic 2a19", "0x40"),
                ProbedPoint("alert_flags", 1, "characteristic 7a1e0002", "0x01"),
                ProbedPoint("steps", 4711, "characteristic 7a1e0002 byte 2", "0x67 0x12 0x00 0x00"),
            ),
            requests=(RawRead("read 2a19", "0x40", ("battery",)),),
        )

    def candidates(self, text: str) -> list[str]:
        return text.upper().split(",") if text else [BAND.removeprefix("ble://")]

    async def scan(
        self,
        address: DeviceAddress,
        candidates: Sequence[str],
        profiles: Sequence[DeviceProfile],
        options: DriverOptions,
        progress: ScanProgress,
    ) -> list[ScanHit]:
        hits = []
        for mac in candidates:
            hit = None
            if f"ble://{mac}" == BAND:
                checks = tuple(
                    ProfileCheck(profile.id, profile.protocol == "ble", "advertises 180d")
                    for profile in profiles
                )
                hit = ScanHit(mac, replace(address, host=mac), "advertising, RSSI -61", checks)
                hits.append(hit)
            progress(mac, hit)
        return hits


def _in_process(*args: str) -> Run:
    result = CliRunner().invoke(root, list(args), env={"COLUMNS": "200", "ANJU_PROFILE_DIR": None})
    return Run(result.exit_code, result.stdout, result.stderr)


def test_a_ble_driver_that_probes_is_shown_like_a_modbus_one() -> None:
    band = BandBle()
    with registered(band, replacing=True):
        text = _in_process("device", "test", "--profile", "anju-wearable-ble", "--address", BAND)
        raw = _in_process(
            "device", "test", "--profile", "anju-wearable-ble", "--address", BAND, "--raw"
        )
        as_json = _in_process(
            "device", "test", "--profile", "anju-wearable-ble", "--address", BAND, "--json"
        )
    assert text.code == 0, text.stderr
    assert band.probed == [
        "heart_rate",
        "rr_interval",
        "battery",
        "alert_flags",
        "motion",
        "steps",
        "skin_temperature",
        "in_range",
    ]
    rows = {line.split("│")[1].strip(): line for line in text.stdout.splitlines() if "│" in line}
    assert "72 1/min" in rows["heart_rate"]
    assert "64 %" in rows["battery"]
    assert "SOS" in rows["alert_flags"]
    assert "event: wearable.sos (critical)" in text.stdout
    assert "characteristic" not in text.stdout, "where and raw data only with --raw"
    assert raw.code == 0, raw.stderr
    assert "characteristic 2a37 bpm" in raw.stdout
    assert "0x16 0x48 -> 72" in raw.stdout
    assert "read 2a19" in raw.stdout
    document = as_json.json()
    assert (document["driver"], document["address"]) == ("ble", BAND)
    assert (
        _points(document)["steps"] | {"value": 4711.0, "raw_text": "0x67 0x12 0x00 0x00"}
        == (_points(document)["steps"])
    )
    assert [event["type"] for event in document["events"]] == ["wearable.sos"]


def test_a_ble_driver_that_scans_is_shown_like_a_modbus_one() -> None:
    other = "AA:BB:CC:DD:EE:02"
    with registered(BandBle(), replacing=True):
        as_json = _in_process(
            "device", "scan", "ble", "--address", BAND, "--candidates", f"{BAND[6:]},{other}",
            "--json",
        )  # fmt: skip
        as_text = _in_process("device", "scan", "ble", "--address", BAND)
    assert as_json.code == 0, as_json.stderr
    document = as_json.json()
    assert (document["driver"], document["tried"]) == ("ble", 2)
    (hit,) = document["found"]
    assert (hit["address"], hit["detail"]) == (BAND, "advertising, RSSI -61")
    assert hit["suggested"] == ["anju-wearable-beacon", "anju-wearable-ble"]
    assert as_text.code == 0, as_text.stderr
    assert "1 of 1 candidates answered" in as_text.stdout
    assert "anju-wearable-ble" in as_text.stdout


def test_a_driver_without_the_hooks_and_one_that_cannot_run_here_are_refused() -> None:
    wearable = ("--profile", "anju-wearable-ble", "--address", BAND)
    with registered(HooklessBle(), replacing=True):
        test = _in_process("device", "test", *wearable)
        scan = _in_process("device", "scan", "ble", "--address", BAND, "--json")
    cannot_run = _in_process("device", "test", *wearable, "--adapter", "bleak:hci97")
    with registered(BandBle(), replacing=True):
        write = _in_process("device", "write", *wearable, "--point", "steps", "--value", "0")
    assert test.code == 1
    assert "the ble driver cannot probe a device" in test.stderr
    assert scan.code == 1
    assert scan.json() == {"ok": False, "error": "the ble driver cannot scan"}
    assert cannot_run.code == 1
    assert "bleak:hci97: no Bluetooth adapter" in cannot_run.stderr
    assert write.code == 1
    assert "the ble driver cannot be used by anju device write" in write.stderr
    assert "Traceback" not in test.stderr + scan.stderr + cannot_run.stderr + write.stderr


def test_an_address_of_another_protocol_than_the_profile_or_scan_is_refused() -> None:
    smoke_at_band = _in_process("device", "test", "--profile", "anju-smoke-mb", "--address", BAND)
    scan_ble_on_modbus = _in_process(
        "device", "scan", "ble", "--address", "modbus-tcp://127.0.0.1:1", "--units", "1"
    )
    assert smoke_at_band.code == 1
    assert (
        "anju-smoke-mb speaks modbus-rtu, which the modbus driver reaches at modbus-rtu:// or "
        "modbus-tcp:// addresses"
    ) in smoke_at_band.stderr
    assert scan_ble_on_modbus.code == 1
    assert "the modbus driver serves it, not 'ble'" in scan_ble_on_modbus.stderr
    assert "anju device scan modbus" in scan_ble_on_modbus.stderr
