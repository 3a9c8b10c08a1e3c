"""The AC-MB210 door controller over a real Modbus TCP socket, read by a plain pymodbus master."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator

import pytest_asyncio
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU

from firmware_sim.door_controller import DoorController
from firmware_sim.modbus_server import ModbusSimServer

KEY = b"site-key-fenghuang"
OPEN, LOCKED, FORCED = 0x01, 0x02, 0x04
ILLEGAL_VALUE = 0x03


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture(loop_scope="function")
async def door_and_client() -> AsyncIterator[tuple[DoorController, Clock, AsyncModbusTcpClient]]:
    clock = Clock()
    door = DoorController(serial_number=7, site_key=KEY, clock=clock)
    async with ModbusSimServer({4: door}) as server:
        client = AsyncModbusTcpClient(
            "127.0.0.1", port=server.port, timeout=2, retries=0, reconnect_delay=0
        )
        assert await asyncio.wait_for(client.connect(), 5)
        try:
            yield door, clock, client
        finally:
            client.close()


def _words(response: ModbusPDU) -> list[int]:
    assert not response.isError(), response
    return list(response.registers)


async def test_one_read_covers_status_and_newest_event(
    door_and_client: tuple[DoorController, Clock, AsyncModbusTcpClient],
) -> None:
    door, clock, client = door_and_client
    first = _words(await client.read_input_registers(0, count=23, device_id=4))
    assert first[:5] == [LOCKED, 0, 0, 7, 0x0204]
    assert first[16] == 0

    door.present_card("04:A2:19:7C", granted=False)
    door.open_door()
    clock.now += 2
    words = _words(await client.read_input_registers(0, count=23, device_id=4))
    digest = hmac.new(KEY, b"04:A2:19:7C", hashlib.sha256).digest()
    assert words[0:2] == [OPEN | FORCED, 2]
    assert words[16:23] == [2, 5, 0, 0, 0x6553, 0xF100, 0], "newest is the forced opening"
    ring = _words(await client.read_input_registers(256, count=16, device_id=4))
    assert ring[0:3] == [2, int.from_bytes(digest[:2], "big"), int.from_bytes(digest[2:4], "big")]
    assert ring[5] == 1, "denied: unknown card"


async def test_remote_unlock_over_modbus(
    door_and_client: tuple[DoorController, Clock, AsyncModbusTcpClient],
) -> None:
    door, clock, client = door_and_client
    echo = await client.write_register(101, 8, device_id=4)
    assert _words(echo) == [8]
    assert _words(await client.read_holding_registers(100, count=2, device_id=4)) == [30, 8]
    assert _words(await client.read_input_registers(0, count=1, device_id=4)) == [0]
    assert _words(await client.read_input_registers(16, count=2, device_id=4)) == [1, 4]
    clock.now += 8
    assert _words(await client.read_input_registers(0, count=1, device_id=4)) == [LOCKED]
    refused = await client.write_register(100, 601, device_id=4)
    assert refused.isError()
    assert refused.exception_code == ILLEGAL_VALUE
    assert door.held_open_limit_s == 30
