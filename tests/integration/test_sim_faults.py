"""Fault injection on simulated Modbus devices, seen by a plain pymodbus master.

Every test runs over a real TCP socket and over Modbus RTU on a socat pseudo-terminal
pair, with two detectors on the line: the faulty unit 1 and unit 2, which must keep
answering.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import pytest
import pytest_asyncio
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException

from firmware_sim import PtyError, UnknownUnitError
from firmware_sim.faults import FaultKind, FaultStats
from firmware_sim.modbus_server import ModbusRtuSimServer, ModbusSimServer
from firmware_sim.pty_pair import PtyPair
from firmware_sim.smoke_detector import SmokeDetector

ALARM = 0x01
DEVICE_BUSY = 0x06
QUICK_TIMEOUT_S = 0.3

Client = AsyncModbusTcpClient | AsyncModbusSerialClient
Connect = Callable[[float], AbstractAsyncContextManager[Client]]


@dataclass
class Bus:
    server: ModbusSimServer | ModbusRtuSimServer
    faulty: SmokeDetector
    healthy: SmokeDetector
    connect: Connect


@pytest.fixture(params=["tcp", "rtu"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def line(transport: str) -> Iterator[PtyPair | None]:
    if transport == "tcp":
        yield None
        return
    with PtyPair() as pair:
        yield pair


@pytest_asyncio.fixture(loop_scope="function")
async def bus(transport: str, line: PtyPair | None) -> AsyncIterator[Bus]:
    faulty, healthy = SmokeDetector(serial_number=1), SmokeDetector(serial_number=2)
    devices = {1: faulty, 2: healthy}
    server: ModbusSimServer | ModbusRtuSimServer
    polled_end = ""
    if line is None:
        server = ModbusSimServer(devices)
    else:
        server = ModbusRtuSimServer(devices, path=line.a)
        polled_end = line.b

    @asynccontextmanager
    async def connect(timeout_s: float) -> AsyncIterator[Client]:
        client: Client
        if isinstance(server, ModbusSimServer):
            client = AsyncModbusTcpClient(
                "127.0.0.1", port=server.port, timeout=timeout_s, retries=0, reconnect_delay=0
            )
        else:
            client = AsyncModbusSerialClient(
                polled_end, baudrate=9600, timeout=timeout_s, retries=0, reconnect_delay=0
            )
        assert await asyncio.wait_for(client.connect(), 5)
        try:
            yield client
        finally:
            client.close()

    async with server:
        yield Bus(server, faulty, healthy, connect)


async def _status(client: Client, unit: int) -> int:
    response = await client.read_input_registers(0, count=1, device_id=unit)
    assert not response.isError(), response
    return int(response.registers[0])


async def _serial(client: Client, unit: int) -> list[int]:
    response = await client.read_input_registers(10, count=2, device_id=unit)
    assert not response.isError(), response
    return list(response.registers)


async def test_drop_is_a_timeout_and_other_units_answer(bus: Bus) -> None:
    bus.server.faults(1).drop()
    async with bus.connect(QUICK_TIMEOUT_S) as client:
        for _ in range(2):
            with pytest.raises(ModbusIOException):
                await client.read_input_registers(0, count=1, device_id=1)
        assert await _serial(client, 2) == [0, 2]
        bus.server.faults(1).clear()
        assert await _serial(client, 1) == [0, 1]
    assert bus.server.faults(1).stats.dropped == 2
    assert bus.server.faults(2).stats == FaultStats(requests=1)


async def test_dropped_write_is_not_applied(bus: Bus) -> None:
    bus.server.faults(1).drop(count=1)
    async with bus.connect(QUICK_TIMEOUT_S) as client:
        with pytest.raises(ModbusIOException):
            await client.write_register(100, 200, device_id=1)
    assert bus.faulty.alarm_threshold_pct_per_m == 3.5
    assert bus.server.faults(1).active is None


async def test_a_dead_device_does_not_even_refuse_unmapped_addresses(bus: Bus) -> None:
    bus.server.faults(1).drop()
    async with bus.connect(QUICK_TIMEOUT_S) as client:
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(5, count=1, device_id=1)


async def test_drop_count_clears_itself(bus: Bus) -> None:
    faults = bus.server.faults(1)
    faults.drop(count=2)
    assert faults.active is FaultKind.DROP
    async with bus.connect(QUICK_TIMEOUT_S) as client:
        for _ in range(2):
            with pytest.raises(ModbusIOException):
                await client.read_input_registers(0, count=1, device_id=1)
        assert await _serial(client, 1) == [0, 1]
    assert faults.active is None
    assert faults.stats == FaultStats(requests=3, dropped=2)


async def test_garbled_answer_is_rejected(bus: Bus) -> None:
    faults = bus.server.faults(1)
    faults.garble(count=1)
    async with bus.connect(QUICK_TIMEOUT_S) as client:
        assert await _serial(client, 2) == [0, 2]
        with pytest.raises(ModbusException):
            await client.read_input_registers(10, count=2, device_id=1)
    # Over TCP pymodbus drops a connection that sent a frame it cannot decode.
    async with bus.connect(QUICK_TIMEOUT_S) as client:
        assert await _serial(client, 1) == [0, 1]
        assert await _serial(client, 2) == [0, 2]
    assert faults.stats.garbled == 1
    assert faults.active is None


async def test_exception_answers_the_code_and_refuses_the_write(bus: Bus) -> None:
    bus.server.faults(1).exception(DEVICE_BUSY, count=2)
    async with bus.connect(QUICK_TIMEOUT_S) as client:
        write = await client.write_register(100, 200, device_id=1)
        assert write.isError()
        assert write.exception_code == DEVICE_BUSY
        read = await client.read_input_registers(0, count=1, device_id=1)
        assert read.exception_code == DEVICE_BUSY
        assert await _serial(client, 2) == [0, 2]
        assert await _status(client, 1) == 0
    assert bus.faulty.alarm_threshold_pct_per_m == 3.5
    assert bus.server.faults(1).stats.exceptions == 2


async def test_delay_answers_late(bus: Bus) -> None:
    bus.server.faults(1).delay(0.4, count=1)
    loop = asyncio.get_running_loop()
    async with bus.connect(2.0) as client:
        started = loop.time()
        assert await _serial(client, 1) == [0, 1]
        assert loop.time() - started >= 0.4
        started = loop.time()
        assert await _serial(client, 1) == [0, 1]
        assert await _serial(client, 2) == [0, 2]
        assert loop.time() - started < 0.3
    assert bus.server.faults(1).stats.delayed == 1


async def test_reboot_is_silence_then_power_on_state(bus: Bus) -> None:
    detector = bus.faulty
    detector.set_alarm_threshold(2.0)
    detector.trigger_alarm()
    detector.clear_smoke()
    async with bus.connect(QUICK_TIMEOUT_S) as client:
        assert await _status(client, 1) == ALARM
        bus.server.faults(1).reboot(offline_s=0.8)
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=1, device_id=1)
        assert await _serial(client, 2) == [0, 2]
        await asyncio.sleep(0.8)
        assert await _status(client, 1) == 0, "the latched alarm is gone after a reboot"
        threshold = await client.read_holding_registers(100, count=1, device_id=1)
        assert threshold.registers == [200], "the threshold is kept in non-volatile memory"
    stats = bus.server.faults(1).stats
    assert stats.reboots == 1
    assert stats.dropped >= 1
    assert bus.server.faults(1).active is None


async def test_delayed_answer_does_not_outlive_the_server(bus: Bus) -> None:
    bus.server.faults(1).delay(30)
    async with bus.connect(QUICK_TIMEOUT_S) as client:
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=1, device_id=1)
    await asyncio.wait_for(bus.server.stop(), 5)


def test_bad_fault_arguments_are_refused() -> None:
    server = ModbusSimServer({1: SmokeDetector()})
    faults = server.faults(1)
    with pytest.raises(ValueError, match="count"):
        faults.drop(count=0)
    with pytest.raises(ValueError, match="exception code 9"):
        faults.exception(9)
    with pytest.raises(ValueError, match="delay"):
        faults.delay(-1)
    with pytest.raises(UnknownUnitError, match="unit 7") as excinfo:
        server.faults(7)
    assert excinfo.value.unit == 7


def test_pty_pair_names_both_ends_and_cleans_up() -> None:
    with PtyPair() as pair:
        a, b = pair.a, pair.b
        assert a != b
        with open(a, "wb", buffering=0) as one, open(b, "rb", buffering=0) as other:
            one.write(b"\x01\x04")
            assert other.read(2) == b"\x01\x04"
    with pytest.raises(PtyError):
        _ = pair.a


def test_pty_pair_without_socat_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PtyError, match="apt-get install socat"):
        PtyPair().start()
