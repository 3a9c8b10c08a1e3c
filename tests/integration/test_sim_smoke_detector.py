"""The SD-MB100 simulator: its register image (pure) and over a real Modbus socket.

Expected words are written from the SD-MB100 register map, not computed with the
simulator's own helpers, so a slip in either shows up here.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import typer
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU
from typer.testing import CliRunner

from anju.commands import sim as sim_commands
from anju.commands.sim import parse_listen_url
from edge.addresses import DeviceAddress
from edge.errors import AddressError
from firmware_sim import IllegalDataAddress, IllegalDataValue, SimServerError
from firmware_sim.modbus_server import ModbusRtuSimServer, ModbusSimServer
from firmware_sim.models import SIMULATED_MODELS, get_model
from firmware_sim.smoke_detector import SmokeDetector, Status
from schemas.vocabulary import Protocol

ILLEGAL_FUNCTION = 0x01
ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03
GATEWAY_NO_RESPONSE = 0x0B

# Status word bits (datasheet): alarm, fault, self-test, tamper, battery low.
ALARM, FAULT, SELF_TEST, TAMPER, BATTERY_LOW = 0x01, 0x02, 0x04, 0x08, 0x10


# -- register image, no I/O -------------------------------------------------------------


def test_factory_register_image() -> None:
    detector = SmokeDetector(serial_number=0x12345678)
    assert detector.input_registers() == {
        0: 0,
        1: 0,
        2: 210,  # 21.0 °C
        3: 0,
        4: 100,
        10: 0x1234,
        11: 0x5678,
    }
    assert detector.holding_registers() == {100: 350, 101: 0}


@pytest.mark.parametrize(
    ("celsius", "word"),
    [(-5.5, 0xFFC9), (0.0, 0x0000), (-0.1, 0xFFFF), (23.4, 0x00EA), (-40.0, 0xFE70)],
)
def test_temperature_is_s16_tenths(celsius: float, word: int) -> None:
    detector = SmokeDetector()
    detector.set_temperature(celsius)
    assert detector.read_input_registers(2, 1) == [word]


def test_alarm_latches_at_threshold_and_resets_only_without_smoke() -> None:
    detector = SmokeDetector()
    detector.set_smoke(3.49)
    assert detector.read_input_registers(0, 2) == [0, 349]
    detector.set_smoke(3.5)
    assert detector.read_input_registers(0, 2) == [ALARM, 350]
    assert detector.reset_alarm() is False
    detector.clear_smoke()
    assert detector.read_input_registers(0, 2) == [ALARM, 0]
    assert detector.reset_alarm() is True
    assert detector.read_input_registers(0, 1) == [0]


def test_trigger_alarm_puts_smoke_well_above_threshold() -> None:
    detector = SmokeDetector()
    detector.trigger_alarm()
    assert detector.alarm
    assert detector.obscuration_pct_per_m >= 2 * detector.alarm_threshold_pct_per_m


def test_lowering_the_threshold_under_the_smoke_latches_the_alarm() -> None:
    detector = SmokeDetector()
    detector.set_smoke(2.0)
    assert not detector.alarm
    detector.write_holding_registers(100, [150])
    assert detector.read_input_registers(0, 1) == [ALARM]


def test_status_bits() -> None:
    detector = SmokeDetector()
    detector.set_fault(True)
    detector.self_test(True)
    detector.set_tamper(True)
    detector.set_battery(14)
    assert detector.read_input_registers(0, 1) == [FAULT | SELF_TEST | TAMPER | BATTERY_LOW]
    assert detector.status == Status.FAULT | Status.SELF_TEST | Status.TAMPER | Status.BATTERY_LOW
    detector.set_battery(15)
    detector.self_test(False)
    assert detector.read_input_registers(0, 1) == [FAULT | TAMPER]


def test_self_test_does_not_raise_the_alarm_bit() -> None:
    detector = SmokeDetector()
    detector.self_test(True)
    assert detector.read_input_registers(0, 1) == [SELF_TEST]


def test_writes_are_checked_whole_before_any_applies() -> None:
    detector = SmokeDetector()
    with pytest.raises(IllegalDataValue) as excinfo:
        detector.write_holding_registers(100, [200, 7])
    assert excinfo.value.address == 101
    assert detector.read_holding_registers(100, 1) == [350]
    with pytest.raises(IllegalDataValue):
        detector.write_holding_registers(100, [99])
    with pytest.raises(IllegalDataValue):
        detector.write_holding_registers(100, [1001])
    with pytest.raises(IllegalDataAddress):
        detector.write_holding_registers(101, [0, 0])


def test_reads_of_unmapped_registers_are_refused() -> None:
    detector = SmokeDetector()
    with pytest.raises(IllegalDataAddress) as excinfo:
        detector.read_input_registers(3, 3)
    assert excinfo.value.address == 5
    with pytest.raises(IllegalDataAddress):
        detector.read_holding_registers(0, 1)


def test_reset_register_reads_back_zero() -> None:
    detector = SmokeDetector()
    detector.write_holding_registers(101, [1])
    assert detector.read_holding_registers(100, 2) == [350, 0]


def test_temperature_noise_is_seeded_and_bounded() -> None:
    first = SmokeDetector(temperature_c=20.0, temperature_noise_c=0.3, seed=7)
    second = SmokeDetector(temperature_c=20.0, temperature_noise_c=0.3, seed=7)
    seen = []
    for _ in range(50):
        first.tick()
        second.tick()
        assert first.temperature_c == second.temperature_c
        assert 19.7 <= first.temperature_c <= 20.3
        seen.append(first.temperature_c)
    assert len(set(seen)) > 1
    quiet = SmokeDetector(temperature_c=20.0)
    quiet.tick()
    assert quiet.temperature_c == 20.0


@pytest.mark.parametrize(
    "call",
    [
        lambda d: d.set_battery(101),
        lambda d: d.set_smoke(-1.0),
        lambda d: d.set_temperature(4000.0),
        lambda d: d.set_co(-1),
        lambda d: d.set_alarm_threshold(0.5),
    ],
)
def test_impossible_values_are_rejected(call: Callable[[SmokeDetector], None]) -> None:
    detector = SmokeDetector()
    with pytest.raises(ValueError, match=r"."):
        call(detector)


def test_registry_knows_the_profile() -> None:
    entry = get_model("anju-smoke-mb")
    assert entry.model == "SD-MB100"
    assert isinstance(entry.create(), SmokeDetector)
    with pytest.raises(LookupError, match="anju-smoke-mb"):
        get_model("anju-smoke-nope")
    assert sorted(SIMULATED_MODELS) == ["anju-door-mb", "anju-smoke-mb"]


# -- over a real Modbus TCP socket ----------------------------------------------------


@pytest.fixture
def detectors() -> tuple[SmokeDetector, SmokeDetector]:
    return SmokeDetector(serial_number=0x12345678), SmokeDetector(serial_number=42)


# The project runs async fixtures on the session loop by default; these belong to one
# test, and a server must run on the loop its test awaits on.
@pytest_asyncio.fixture(loop_scope="function")
async def server(
    detectors: tuple[SmokeDetector, SmokeDetector],
) -> AsyncIterator[ModbusSimServer]:
    async with ModbusSimServer(devices={1: detectors[0], 2: detectors[1]}, port=0) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="function")
async def client(server: ModbusSimServer) -> AsyncIterator[AsyncModbusTcpClient]:
    modbus = AsyncModbusTcpClient(
        "127.0.0.1", port=server.port, timeout=2, retries=0, reconnect_delay=0
    )
    assert await asyncio.wait_for(modbus.connect(), 5)
    yield modbus
    modbus.close()


def _words(response: ModbusPDU) -> list[int]:
    assert not response.isError(), response
    return list(response.registers)


def _exception_code(response: ModbusPDU) -> int:
    assert response.isError(), response
    return int(response.exception_code)


async def test_url_names_the_bound_port(server: ModbusSimServer) -> None:
    assert server.port > 0
    assert server.url == f"modbus-tcp://127.0.0.1:{server.port}"
    assert server.url_for(2) == f"modbus-tcp://127.0.0.1:{server.port}?unit=2"


async def test_golden_registers_over_tcp(
    client: AsyncModbusTcpClient, detectors: tuple[SmokeDetector, SmokeDetector]
) -> None:
    detector = detectors[0]
    detector.set_temperature(-5.5)
    detector.set_co(35)
    detector.set_battery(80)
    detector.set_smoke(1.25)
    measurements = await client.read_input_registers(0, count=5, device_id=1)
    assert _words(measurements) == [0x0000, 125, 0xFFC9, 35, 80]
    serial = await client.read_input_registers(10, count=2, device_id=1)
    assert _words(serial) == [0x1234, 0x5678]
    settings = await client.read_holding_registers(100, count=2, device_id=1)
    assert _words(settings) == [350, 0]


async def test_alarm_latches_and_resets_over_tcp(
    client: AsyncModbusTcpClient, detectors: tuple[SmokeDetector, SmokeDetector]
) -> None:
    detector = detectors[0]
    detector.trigger_alarm()
    status = await client.read_input_registers(0, count=2, device_id=1)
    assert _words(status)[0] & ALARM
    assert _words(status)[1] >= 700

    echo = await client.write_register(101, 1, device_id=1)
    assert _words(echo) == [1], "function code 6 answers with an echo of the request"
    assert _words(await client.read_input_registers(0, count=1, device_id=1)) == [ALARM]

    detector.clear_smoke()
    still = await client.read_input_registers(0, count=2, device_id=1)
    assert _words(still) == [ALARM, 0], "the alarm stays latched after the smoke clears"

    assert not (await client.write_registers(101, [1], device_id=1)).isError()
    assert _words(await client.read_input_registers(0, count=1, device_id=1)) == [0]
    assert _words(await client.read_holding_registers(101, count=1, device_id=1)) == [0]
    assert not detector.alarm


async def test_threshold_write_and_refusal(
    client: AsyncModbusTcpClient, detectors: tuple[SmokeDetector, SmokeDetector]
) -> None:
    assert not (await client.write_registers(100, [200, 0], device_id=1)).isError()
    assert _words(await client.read_holding_registers(100, count=1, device_id=1)) == [200]
    assert detectors[0].alarm_threshold_pct_per_m == 2.0
    assert _exception_code(await client.write_register(100, 5000, device_id=1)) == ILLEGAL_VALUE
    assert _exception_code(await client.write_register(101, 2, device_id=1)) == ILLEGAL_VALUE
    assert _words(await client.read_holding_registers(100, count=1, device_id=1)) == [200]


async def test_two_units_are_independent(
    client: AsyncModbusTcpClient, detectors: tuple[SmokeDetector, SmokeDetector]
) -> None:
    first, second = detectors
    second.trigger_alarm()
    second.set_temperature(30.0)
    assert _words(await client.read_input_registers(0, count=3, device_id=1)) == [0, 0, 210]
    assert _words(await client.read_input_registers(0, count=3, device_id=2))[::2] == [ALARM, 300]
    assert _words(await client.read_input_registers(10, count=2, device_id=2)) == [0, 42]
    await client.write_register(100, 500, device_id=1)
    assert first.alarm_threshold_pct_per_m == 5.0
    assert second.alarm_threshold_pct_per_m == 3.5


@pytest.mark.parametrize(
    ("function", "address", "count"),
    [
        ("read_input_registers", 5, 1),  # gap in the input table
        ("read_input_registers", 3, 3),  # range runs into the gap
        ("read_input_registers", 12, 1),  # past the serial number
        ("read_input_registers", 100, 1),  # a holding register, other table
        ("read_holding_registers", 0, 1),  # an input register, other table
        ("read_holding_registers", 101, 2),  # past the reset register
    ],
)
async def test_unmapped_address_is_illegal_data_address(
    client: AsyncModbusTcpClient, function: str, address: int, count: int
) -> None:
    response = await getattr(client, function)(address, count=count, device_id=1)
    assert _exception_code(response) == ILLEGAL_ADDRESS


async def test_input_registers_cannot_be_written(client: AsyncModbusTcpClient) -> None:
    assert _exception_code(await client.write_register(0, 1, device_id=1)) == ILLEGAL_ADDRESS


async def test_coils_are_an_illegal_function(client: AsyncModbusTcpClient) -> None:
    assert _exception_code(await client.read_coils(0, count=1, device_id=1)) == ILLEGAL_FUNCTION
    response = await client.read_discrete_inputs(500, count=8, device_id=1)
    assert _exception_code(response) == ILLEGAL_FUNCTION


async def test_unknown_unit_answers_like_a_gateway(client: AsyncModbusTcpClient) -> None:
    response = await client.read_input_registers(0, count=1, device_id=9)
    assert _exception_code(response) == GATEWAY_NO_RESPONSE


def _other_tasks() -> set[asyncio.Task[object]]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


async def test_server_stops_cleanly() -> None:
    tasks_before = _other_tasks()
    server = ModbusSimServer(devices={1: SmokeDetector()})
    with pytest.raises(SimServerError):
        _ = server.port
    async with server:
        port = server.port
        modbus = AsyncModbusTcpClient(
            "127.0.0.1", port=port, timeout=1, retries=0, reconnect_delay=0
        )
        assert await asyncio.wait_for(modbus.connect(), 5)
        assert not (await modbus.read_input_registers(0, count=1, device_id=1)).isError()
    assert not server.running
    with pytest.raises(SimServerError):
        _ = server.port
    assert not modbus.connected, "stopping the server closes client connections"
    with pytest.raises(ModbusException):
        await modbus.read_input_registers(0, count=1, device_id=1)
    modbus.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    await server.stop()  # idempotent
    assert _other_tasks() <= tasks_before


async def test_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ModbusSimServer(devices={1: SmokeDetector()}, port=port)
        with pytest.raises(SimServerError, match=f"127.0.0.1:{port}"):
            await server.start()
        assert not server.running


def test_bad_arguments_fail_early() -> None:
    with pytest.raises(ValueError, match="unit id"):
        ModbusSimServer(devices={0: SmokeDetector()})
    with pytest.raises(ValueError, match="host"):
        ModbusSimServer(devices={1: SmokeDetector()}, host="")
    with pytest.raises(ValueError, match="IP address"):
        ModbusSimServer(devices={1: SmokeDetector()}, host="localhost")
    with pytest.raises(ValueError, match="at least one"):
        ModbusSimServer(devices={})


# -- over a serial line (RTU through a socat pseudo-terminal pair) --------------------


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    pytest.importorskip("serial", reason="pymodbus needs pyserial for serial lines")
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat is not installed")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    process = subprocess.Popen(
        [socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 2
        while not (a.exists() and b.exists()):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("socat did not create the pseudo-terminals within 2 s")
            time.sleep(0.02)
        yield str(a), str(b)
    finally:
        process.terminate()
        process.wait(timeout=5)


async def test_rtu_over_a_pseudo_terminal(pty_pair: tuple[str, str]) -> None:
    detector = SmokeDetector(serial_number=0x00010002)
    detector.set_temperature(-5.5)
    served, polled = pty_pair
    async with ModbusRtuSimServer(devices={3: detector}, path=served) as server:
        assert server.url_for(3) == f"modbus-rtu://{served}?baud=9600&parity=N&unit=3"
        modbus = AsyncModbusSerialClient(
            polled, baudrate=9600, timeout=0.5, retries=0, reconnect_delay=0
        )
        assert await asyncio.wait_for(modbus.connect(), 5)
        try:
            words = await modbus.read_input_registers(0, count=5, device_id=3)
            assert _words(words) == [0, 0, 0xFFC9, 0, 100]
            serial = await modbus.read_input_registers(10, count=2, device_id=3)
            assert _words(serial) == [0x0001, 0x0002]
            with pytest.raises(ModbusIOException):
                await modbus.read_input_registers(0, count=1, device_id=4)
        finally:
            modbus.close()


# -- the `anju sim device` command ----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "modbus-tcp://127.0.0.1:5020?unit=3",
            DeviceAddress(Protocol.MODBUS_TCP, unit=3, host="127.0.0.1", port=5020),
        ),
        (
            "modbus-tcp://127.0.0.1:0",
            DeviceAddress(Protocol.MODBUS_TCP, unit=1, host="127.0.0.1", port=0),
        ),
        (
            "modbus-rtu:///dev/ttyUSB0?baud=19200&parity=e&unit=7",
            DeviceAddress(Protocol.MODBUS_RTU, unit=7, path="/dev/ttyUSB0", baud=19200, parity="E"),
        ),
        ("/dev/pts/3", DeviceAddress(Protocol.MODBUS_RTU, unit=1, path="/dev/pts/3")),
    ],
)
def test_listen_url_parses(url: str, expected: DeviceAddress) -> None:
    assert parse_listen_url(url) == expected


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("tcp://127.0.0.1:5020", "scheme"),
        ("modbus-tcp://127.0.0.1", "give the port to serve on"),
        ("modbus-tcp://127.0.0.1:99999", "port"),
        (
            "modbus-tcp://127.0.0.1:5020?unit=0",
            "unit must be a whole number from 1 to 247, not '0'",
        ),
        ("modbus-tcp://127.0.0.1:5020?unit=x", "not 'x'"),
        ("modbus-tcp://127.0.0.1:5020?slave=1", "unknown parameter 'slave'"),
        ("modbus-tcp://127.0.0.1:5020?baud=9600", "'baud' does not apply to modbus-tcp"),
        ("modbus-rtu://dev/ttyUSB0", "three slashes"),
        ("modbus-rtu:///dev/ttyUSB0?parity=X", "parity"),
        ("/dev/pts/3?unit=2&unit=3", "given twice"),
        ("osdp:///dev/ttyUSB1", "anju sim serves modbus-tcp:// and modbus-rtu://"),
    ],
)
def test_bad_listen_url_says_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(AddressError, match=re.escape(complaint)):
        parse_listen_url(url)


def _cli() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(sim_commands.app, name="sim")
    return root


def test_sim_device_serves_and_reports_the_alarm() -> None:
    result = CliRunner().invoke(
        _cli(),
        [
            "sim",
            "device",
            "--profile",
            "anju-smoke-mb",
            "--listen",
            "modbus-tcp://127.0.0.1:0?unit=5",
            "--alarm-after",
            "0.2",
            "--duration",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert re.search(
        r"serving SD-MB100 .* unit 5 at modbus-tcp://127\.0\.0\.1:\d+\?unit=5", result.output
    )
    assert "status: normal -> alarm" in result.output
    assert result.output.rstrip().endswith("stopped")


def test_sim_device_unknown_profile_lists_the_known_ones() -> None:
    result = CliRunner().invoke(
        _cli(),
        ["sim", "device", "--profile", "nope", "--listen", "modbus-tcp://127.0.0.1:0"],
    )
    assert result.exit_code == 2
    assert "anju-smoke-mb" in result.output
