"""Modbus TCP and RTU buses over pymodbus.

One ``ModbusBus`` per physical bus (a TCP endpoint or a serial line) holds one client
and one lock: RS-485 is half duplex and many TCP converters serve one request at a
time, so every request on a bus waits its turn. pymodbus' own retries are off; the
poller decides what a miss means for a device.

``read(device)`` and ``write(device, point, value)`` are the driver contract's
(``edge.drivers.contract.PolledBus``): a device's points are planned into as few
requests as its profile allows once per set of points, on its first read. ``read_block``,
``write_registers`` and ``write_coils`` are the Modbus requests underneath, for the
installer's tools.

A connection the device closes or resets while a request waits is reported at once,
as DeviceDisconnected. pymodbus learns of it (its ``trace_connect`` callback says so)
but leaves the request waiting out its timeout, which would then read as a silent
device and send an installer to check RS-485 wiring on a TCP link. pymodbus also
drops a TCP connection itself when an answer cannot be decoded; a connection that
ends after part of an answer arrived is therefore reported as a bad response.
"""

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from edge.addresses import DeviceAddress
from edge.drivers.contract import DeviceSpec, PolledBus, RawValue, Sample
from edge.drivers.modbus.plan import PlannedRead, decode_point, plan_reads
from edge.drivers.modbus.writes import encode_for_write
from edge.errors import DeviceDisconnected, DeviceRejected, DeviceTimeout, DeviceUnreachable
from schemas.profile import Point
from schemas.protocols.modbus import ModbusAddress, ModbusTable
from schemas.vocabulary import Protocol

MODBUS_PROTOCOLS: Final = frozenset({Protocol.MODBUS_TCP, Protocol.MODBUS_RTU})
"""The address schemes and profile protocols a Modbus bus speaks."""

_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusBus(PolledBus):
    """A connection to one Modbus bus, shared by every device on it."""

    def __init__(self, address: DeviceAddress, *, timeout_s: float = 1.0) -> None:
        self.name = address.bus
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._address = address
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        # Resolved when the current connection ends other than by close(); one per
        # connection, made by _on_connection when pymodbus reports it made.
        self._lost: asyncio.Future[None] | None = None
        # Whether any bytes came back on this connection since the last request went out.
        self._heard = False
        # Each device's read plan per set of points, made on its first read: profiles
        # and points are fixed for the life of the agent. Keyed by the points too, so a
        # read of every point (a test through the gateway) and the poller's routine
        # read of the same device each keep their own plan.
        self._plans: dict[tuple[str, tuple[str, ...]], list[PlannedRead]] = {}

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        # pymodbus clients bind to the running event loop when created, so the bus
        # makes its client on first use, inside the loop that will drive it.
        address, timeout_s = self._address, self._timeout_s
        if address.protocol is Protocol.MODBUS_TCP:
            return AsyncModbusTcpClient(
                address.host,
                port=address.port,
                timeout=timeout_s,
                retries=0,
                trace_packet=self._on_packet,
                trace_connect=self._on_connection,
            )
        return AsyncModbusSerialClient(
            address.path,
            baudrate=address.baud,
            parity=address.parity,
            timeout=timeout_s,
            retries=0,
            trace_packet=self._on_packet,
            trace_connect=self._on_connection,
        )

    def _on_connection(self, connected: bool) -> None:
        """pymodbus' trace_connect: called when a connection is made and when it is lost."""
        if connected:
            self._lost = asyncio.get_running_loop().create_future()
            self._heard = False
        elif self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def _on_packet(self, sending: bool, packet: bytes) -> bytes:
        """pymodbus' trace_packet: called with every frame sent and every chunk received."""
        self._heard = not sending
        return packet

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    async def _ensure_connected(self, where: str) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        if self._client is None:
            self._client = self._make_client()
        client = self._client
        if client.connected:
            return client
        try:
            connected = await asyncio.wait_for(client.connect(), self._timeout_s * 2)
        except (TimeoutError, OSError):
            connected = False
        if not connected:
            raise DeviceUnreachable(where, f"cannot connect to {self.name}")
        return client

    async def read(self, device: DeviceSpec) -> Sample:
        """Read ``device.points`` with the fewest requests its profile allows."""
        key = (device.device_id, tuple(point.name for point in device.points))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = plan_reads(device.profile, list(device.points))
        unit = device.address.unit
        values: dict[str, RawValue] = {}
        for read in plan:
            block = await self.read_block(read, unit)
            for point in read.points:
                values[point.name] = decode_point(read, block, point)
        return values

    async def write(self, device: DeviceSpec, point: Point, value: float) -> None:
        """Write an engineering value: a coil takes 0 or 1, registers the encoded words.

        Raises PointError before sending when the point cannot hold ``value``.
        """
        words = encode_for_write(device.profile, point.name, value)
        modbus = point.address_as(ModbusAddress)
        if modbus.table is ModbusTable.COIL:
            await self.write_coils(modbus.address, [bool(words[0])], device.address.unit)
        else:
            await self.write_registers(modbus.address, words, device.address.unit)

    async def read_block(self, read: PlannedRead, unit: int) -> list[int] | list[bool]:
        """Execute one planned read against ``unit``; returns registers or bits.

        Raises DeviceTimeout, DeviceUnreachable, DeviceDisconnected or DeviceRejected
        (with the Modbus exception code, or code 0 for an answer that cannot be decoded
        or has fewer bits or registers than asked), each naming the bus, unit and address.
        """
        where = f"{self.name} unit {unit} {read.table} {read.start}+{read.count}"
        async with self._lock:
            client = await self._ensure_connected(where)
            calls = {
                ModbusTable.COIL: client.read_coils,
                ModbusTable.DISCRETE_INPUT: client.read_discrete_inputs,
                ModbusTable.INPUT_REGISTER: client.read_input_registers,
                ModbusTable.HOLDING_REGISTER: client.read_holding_registers,
            }
            request = partial(calls[read.table], read.start, count=read.count, device_id=unit)
            response = await self._call(where, request)
        if read.table.is_bit_table:
            # pymodbus pads bits to whole bytes, so more is normal; fewer is a short answer.
            bits = [bool(bit) for bit in response.bits[: read.count]]
            if len(bits) < read.count:
                raise DeviceRejected(where, f"answered {len(bits)} bits", code=0)
            return bits
        registers: list[int] = list(response.registers)
        if len(registers) != read.count:
            raise DeviceRejected(where, f"answered {len(registers)} registers", code=0)
        return registers

    async def write_registers(self, start: int, values: list[int], unit: int) -> None:
        """Write holding registers (function 6 for one, 16 for several)."""
        where = f"{self.name} unit {unit} holding_register {start}"
        async with self._lock:
            client = await self._ensure_connected(where)
            if len(values) == 1:
                request = partial(client.write_register, start, values[0], device_id=unit)
            else:
                request = partial(client.write_registers, start, values, device_id=unit)
            await self._call(where, request)

    async def write_coils(self, address: int, values: list[bool], unit: int) -> None:
        """Write coils (function 5 for one, 15 for several)."""
        where = f"{self.name} unit {unit} coil {address}"
        async with self._lock:
            client = await self._ensure_connected(where)
            if len(values) == 1:
                request = partial(client.write_coil, address, values[0], device_id=unit)
            else:
                request = partial(client.write_coils, address, values, device_id=unit)
            await self._call(where, request)

    async def _call(self, where: str, request: Callable[[], Awaitable[ModbusPDU]]) -> ModbusPDU:
        """Send ``request()`` on the connection just made; its answer, or a typed error.

        The request races the end of the connection: when the connection ends,
        pymodbus neither answers nor fails the request; it only reports the end.
        """
        lost = self._lost
        assert lost is not None, "pymodbus reports every connection made, before any request"
        call = asyncio.ensure_future(_awaited(request))
        try:
            done, _ = await asyncio.wait(
                (call, lost), timeout=self._timeout_s * 2, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            call.cancel()  # a no-op once it is done
        if call not in done and lost not in done:
            raise DeviceTimeout(where, f"no answer within {self._timeout_s:g} s")
        if call not in done:
            # pymodbus would reconnect on its own; closing leaves that to the next request.
            self.close()
            if self._heard:
                raise DeviceRejected(where, "bad response: could not be decoded", code=0)
            raise self._disconnected(where)
        try:
            response = call.result()
        except (TimeoutError, ModbusIOException):
            raise DeviceTimeout(where, f"no answer within {self._timeout_s:g} s") from None
        except ConnectionException:
            # pymodbus found no connection: it ended between connecting and sending.
            self.close()
            raise self._disconnected(where) from None
        except ModbusException as exc:
            raise DeviceRejected(where, f"bad response: {exc}", code=0) from None
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            name = _EXCEPTION_NAMES.get(code, "unknown exception")
            raise DeviceRejected(where, f"Modbus exception {code} ({name})", code=code)
        return response

    def _disconnected(self, where: str) -> DeviceDisconnected:
        if self._address.protocol is Protocol.MODBUS_TCP:
            return DeviceDisconnected(where, "connection closed by the device")
        return DeviceDisconnected(where, "serial port failed and was closed (adapter unplugged?)")


async def _awaited(request: Callable[[], Awaitable[ModbusPDU]]) -> ModbusPDU:
    """``await request()`` as one coroutine, so that pymodbus raising before it returns an
    awaitable (no connection) reaches the caller as the task's exception."""
    return await request()
