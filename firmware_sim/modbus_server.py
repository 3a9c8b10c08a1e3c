"""Host simulated Modbus devices behind a real pymodbus server (TCP, or RTU on a serial line).

Several devices share one server by unit id, as detectors on one RS-485 line share an
RTU-to-TCP converter. The server holds no copy of the device state that could go
stale: it is built on pymodbus's ``SimDevice`` datastore, whose ``action`` hook runs
before every register access, and the hook

- copies the model's current register image into the datastore before each read
  (function codes 3 and 4), so state changed in Python shows on the next poll;
- hands each write (function codes 6 and 16) to the model, which may refuse it with
  Modbus exception 2 or 3, before the datastore stores the written words (so a
  function code 6 reply echoes the request, as the standard asks, and the next read
  shows what the model made of the write);
- serves coils and discrete inputs (function codes 1, 2, 5 and 15) the same way for a
  device that has them (``ModbusBitModel``);
- refuses every other function code with exception 1 (illegal function).

Each unit has a ``FaultInjector`` (``server.faults(unit)``, see ``faults``): the action
hook and the server's ``trace_packet`` hook apply its drops, delays, exceptions,
garbled frames and reboots.

Input and holding registers are separate tables, as on the real device. A request for
a unit no device answers gets exception 0x0B (gateway target failed to respond) over
TCP, which is what an RTU-to-TCP converter sends, and silence on a serial line.

Typical use::

    detector = SmokeDetector()
    async with ModbusSimServer(devices={1: detector}) as server:
        ...  # poll server.url_for(1); call detector.trigger_alarm()
        server.faults(1).drop(count=3)  # the next three polls go unanswered
"""

from __future__ import annotations

import abc
import asyncio
import functools
import importlib.util
import ipaddress
import os
import socket
from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Protocol, Self, runtime_checkable

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusBaseServer, ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from firmware_sim import IllegalDataAddress, IllegalDataValue, SimServerError, UnknownUnitError
from firmware_sim.faults import FaultInjector

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ModbusBitModel",
    "ModbusDeviceModel",
    "ModbusRtuSimServer",
    "ModbusSimServer",
]

#: Bound on every start-up and shutdown wait.
DEFAULT_TIMEOUT_S: Final = 5.0

_FC_READ_COILS: Final = 1
_FC_READ_DISCRETE: Final = 2
_FC_READ_HOLDING: Final = 3
_FC_READ_INPUT: Final = 4
_FC_WRITE_COIL: Final = 5
_FC_WRITE_SINGLE: Final = 6
_FC_WRITE_COILS: Final = 15
_FC_WRITE_MULTIPLE: Final = 16
_FC_WRITES: Final = (_FC_WRITE_COIL, _FC_WRITE_SINGLE, _FC_WRITE_COILS, _FC_WRITE_MULTIPLE)
_ALL_REGISTERS: Final = 65536
_ALL_BITS_AS_REGISTERS: Final = 4096
_MBAP_UNIT: Final = 6


class ModbusDeviceModel(Protocol):
    """What a simulated device must offer to be served (``SmokeDetector`` does).

    ``input_registers`` and ``holding_registers`` return the complete register image
    by address; the set of addresses must not change while the device is served.
    ``write_holding_registers`` raises ``IllegalDataAddress`` or ``IllegalDataValue``
    to refuse a write. ``power_cycle`` returns the volatile state to its power-on
    values (a reboot fault calls it).
    """

    @property
    def model(self) -> str: ...

    def input_registers(self) -> Mapping[int, int]: ...

    def holding_registers(self) -> Mapping[int, int]: ...

    def write_holding_registers(self, address: int, values: Sequence[int]) -> None: ...

    def power_cycle(self) -> None: ...


@runtime_checkable
class ModbusBitModel(ModbusDeviceModel, Protocol):
    """A served device that also has coils and discrete inputs (``RegisterDevice`` does).

    A bit read is refused (exception 2) when its first address is not mapped; other
    unmapped bits in the words it spans read 0, because pymodbus tells the action
    hook only the words a bit request spans, not its bit count.
    """

    def coils(self) -> Mapping[int, bool]: ...

    def discrete_inputs(self) -> Mapping[int, bool]: ...

    def write_coils(self, address: int, values: Sequence[bool]) -> None: ...


def _register_table(addresses: Sequence[int]) -> list[SimData]:
    """One SimData per run of consecutive addresses; the gaps answer illegal address."""
    if not addresses:
        return [SimData(address=0, datatype=DataType.INVALID)]
    ordered = sorted(addresses)
    runs: list[SimData] = []
    start = previous = ordered[0]
    for address in [*ordered[1:], None]:
        if address is not None and address == previous + 1:
            previous = address
            continue
        runs.append(SimData(address=start, count=previous - start + 1, datatype=DataType.REGISTERS))
        if address is not None:
            start = previous = address
    return runs


def _no_bits() -> list[SimData]:
    """A coil or discrete-input table spanning every address.

    pymodbus needs a non-empty bit table per device; spanning the whole range lets the
    action hook answer "illegal function" for any address, as a device without coils
    does. The words go in as one list: pymodbus multiplies ``count`` out more than
    once while checking a SimData, and ``count=4096`` took four seconds.
    """
    return [SimData(address=0, values=[0] * _ALL_BITS_AS_REGISTERS, datatype=DataType.BITS)]


async def _serve(
    device: ModbusDeviceModel,
    faults: FaultInjector,
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    """The pymodbus ``SimDevice.action`` hook of one served device (see module docstring)."""
    if function_code in _FC_WRITES and set_values is None:
        # pymodbus reads the register back to build the function code 5 and 6 replies;
        # leaving the stored word alone makes that reply echo the request, and it is
        # the same request, so the fault verdict already applied.
        return None
    verdict = faults.on_request()
    if verdict.drop:
        # Both servers run with ignore_missing_devices=True: this sends nothing.
        raise NoSuchIdException(f"unit {faults.unit} is not answering (fault injected)")
    if verdict.exception is not None:
        return verdict.exception
    if verdict.delay_s > 0:
        await faults.wait(verdict.delay_s)
    if function_code in (_FC_READ_INPUT, _FC_READ_HOLDING):
        image = (
            device.input_registers()
            if function_code == _FC_READ_INPUT
            else device.holding_registers()
        )
        addresses = range(address, address + count)
        if any(a not in image for a in addresses):
            return ExcCodes.ILLEGAL_ADDRESS
        for a in addresses:
            registers[a - start_address] = image[a]
        return None
    if function_code in (_FC_WRITE_SINGLE, _FC_WRITE_MULTIPLE):
        return _written(
            lambda: device.write_holding_registers(address, [int(v) for v in set_values or []])
        )
    if isinstance(device, ModbusBitModel):
        return _serve_bits(
            device, function_code, start_address, address, count, registers, set_values
        )
    return ExcCodes.ILLEGAL_FUNCTION


def _serve_bits(
    device: ModbusBitModel,
    function_code: int,
    start_address: int,
    address: int,
    words: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    """Coil and discrete-input requests; ``words`` is how many 16-bit words they span."""
    if function_code in (_FC_READ_COILS, _FC_READ_DISCRETE):
        image = device.coils() if function_code == _FC_READ_COILS else device.discrete_inputs()
        if address not in image:
            return ExcCodes.ILLEGAL_ADDRESS
        first_word = address // 16
        for w in range(first_word, first_word + words):
            registers[w - start_address] = sum(
                1 << bit for bit in range(16) if image.get(w * 16 + bit, False)
            )
        return None
    if function_code in (_FC_WRITE_COIL, _FC_WRITE_COILS):
        return _written(lambda: device.write_coils(address, [bool(v) for v in set_values or []]))
    return ExcCodes.ILLEGAL_FUNCTION


def _written(write: Callable[[], None]) -> ExcCodes | None:
    """Run a device write; the device's refusal becomes the Modbus exception code."""
    try:
        write()
    except IllegalDataAddress:
        return ExcCodes.ILLEGAL_ADDRESS
    except IllegalDataValue:
        return ExcCodes.ILLEGAL_VALUE
    return None


async def _unknown_unit(
    silent: bool,
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    """The action of the catch-all unit 0, which receives requests for unserved units."""
    if silent:
        # Both servers run with ignore_missing_devices=True, so this sends nothing.
        raise NoSuchIdException(f"no simulated device answers (function code {function_code})")
    return ExcCodes.GATEWAY_NO_RESPONSE


class _SimServerBase(abc.ABC):
    """Device bookkeeping, start and stop shared by the TCP and RTU servers."""

    _silent_for_unknown_units: bool = False

    def __init__(self, devices: Mapping[int, ModbusDeviceModel], *, timeout_s: float) -> None:
        if not devices:
            raise ValueError("devices must name at least one unit")
        for unit in devices:
            if not 1 <= unit <= 247:
                raise ValueError(f"unit id {unit} outside 1-247")
        for unit, device in devices.items():
            addresses = [*device.input_registers(), *device.holding_registers()]
            if any(not 0 <= a <= 0xFFFF for a in addresses):
                raise ValueError(f"unit {unit}: register address outside 0-65535")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self._devices: dict[int, ModbusDeviceModel] = dict(devices)
        self._faults = {unit: FaultInjector(unit, device) for unit, device in devices.items()}
        self._timeout_s = timeout_s
        self._server: ModbusBaseServer | None = None

    @property
    def devices(self) -> Mapping[int, ModbusDeviceModel]:
        """The served devices by unit id."""
        return self._devices

    def faults(self, unit: int) -> FaultInjector:
        """The fault injector of ``unit``; raises ``UnknownUnitError`` for a unit not served."""
        try:
            return self._faults[unit]
        except KeyError:
            raise UnknownUnitError(unit, sorted(self._faults)) from None

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._server is not None

    def _sim_devices(self) -> list[SimDevice]:
        sim_devices = [
            SimDevice(
                id=unit,
                simdata=(
                    _no_bits(),
                    _no_bits(),
                    _register_table(list(device.holding_registers())),
                    _register_table(list(device.input_registers())),
                ),
                action=functools.partial(_serve, device, self._faults[unit]),
            )
            for unit, device in self._devices.items()
        ]
        sim_devices.append(
            SimDevice(
                id=0,
                simdata=[SimData(address=0, count=_ALL_REGISTERS, datatype=DataType.REGISTERS)],
                action=functools.partial(_unknown_unit, self._silent_for_unknown_units),
            )
        )
        return sim_devices

    @abc.abstractmethod
    def _make_server(self, sim_devices: list[SimDevice]) -> ModbusBaseServer:
        """Build (not start) the pymodbus server; called inside the running loop."""

    @staticmethod
    @abc.abstractmethod
    def _unit_of(frame: bytes) -> int | None:
        """The unit id a response frame is from, or None if the frame is too short."""

    @staticmethod
    @abc.abstractmethod
    def _garble(frame: bytes) -> bytes:
        """The response frame corrupted so that a Modbus master must reject it."""

    def _trace_packet(self, sending: bool, frame: bytes) -> bytes:
        """The pymodbus ``trace_packet`` hook: garble or swallow a faulty unit's responses."""
        if not sending:
            return frame
        unit = self._unit_of(frame)
        faults = None if unit is None else self._faults.get(unit)
        if faults is None:
            return frame
        return faults.on_response(frame, self._garble)

    @abc.abstractmethod
    def _where(self) -> str:
        """The address for messages: HOST:PORT or the serial path."""

    def _listen_failure(self) -> str:
        return "see the pymodbus log for the reason"

    @abc.abstractmethod
    def _started(self, server: ModbusBaseServer) -> None:
        """Record what the running server bound (the TCP port)."""

    async def start(self) -> None:
        """Start serving; return once the server listens.

        Raises ``SimServerError`` naming the address if it cannot listen within the
        timeout, or if already started.
        """
        if self._server is not None:
            raise SimServerError(f"simulator on {self._where()} already started")
        server = self._make_server(self._sim_devices())
        try:
            await asyncio.wait_for(server.serve_forever(background=True), self._timeout_s)
        except RuntimeError:
            await self._close(server)
            raise SimServerError(
                f"cannot listen on {self._where()}: {self._listen_failure()}"
            ) from None
        except TimeoutError:
            await self._close(server)
            raise SimServerError(
                f"simulator on {self._where()} did not listen within {self._timeout_s} s"
            ) from None
        self._server = server
        self._started(server)

    async def stop(self) -> None:
        """Close the listener and every client connection; idempotent.

        Raises ``SimServerError`` if the server does not close within the timeout.
        """
        server, self._server = self._server, None
        if server is not None:
            await self._close(server)

    async def _close(self, server: ModbusBaseServer) -> None:
        listener = server.transport
        # ModbusBaseServer.shutdown is not annotated in pymodbus 3.16.
        shutdown: Callable[[], Coroutine[Any, Any, None]] = server.shutdown
        try:
            await asyncio.wait_for(shutdown(), self._timeout_s)
            if isinstance(listener, asyncio.Server):
                await asyncio.wait_for(listener.wait_closed(), self._timeout_s)
        except TimeoutError:
            raise SimServerError(
                f"simulator on {self._where()} did not stop within {self._timeout_s} s"
            ) from None
        finally:
            for faults in self._faults.values():
                faults.cancel_waits()
            # pymodbus relistens after a lost serial line; that task would outlive us.
            relisten = server.reconnect_task
            if relisten is not None:
                relisten.cancel()
            # pymodbus keeps the last server created in a class attribute.
            if ModbusBaseServer.active_server is server:
                ModbusBaseServer.active_server = None
        # pymodbus schedules each request's handler as a task of its own; one turn of the
        # loop lets any that were already queued finish before the caller moves on.
        await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


class ModbusSimServer(_SimServerBase):
    """Simulated devices behind one Modbus TCP server.

    ``host`` defaults to 127.0.0.1 and must be given explicitly to expose the
    simulator elsewhere (pymodbus itself would bind every interface). It is an IP
    address, not a name: a name such as ``localhost`` may resolve to IPv4 and IPv6,
    and with ``port=0`` the two sockets would get different ports. ``port=0`` lets the
    kernel choose a free port; :attr:`port` tells which.
    """

    def __init__(
        self,
        devices: Mapping[int, ModbusDeviceModel],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Prepare the server; nothing listens until :meth:`start` (or ``async with``).

        Raises ``ValueError`` for a ``host`` that is not an IP address, a port outside
        0-65535, a unit id outside 1-247 or no devices.
        """
        super().__init__(devices, timeout_s=timeout_s)
        try:
            self._family = (
                socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
            )
        except ValueError:
            raise ValueError(
                f"host must be an interface IP address such as 127.0.0.1, got {host!r}"
            ) from None
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port must be 0-65535, got {port}")
        self._host = host
        self._requested_port = port
        self._port: int | None = None

    @property
    def host(self) -> str:
        """The interface the server binds."""
        return self._host

    @property
    def port(self) -> int:
        """The bound TCP port. Raises ``SimServerError`` before start or after stop."""
        if self._port is None or self._server is None:
            raise SimServerError(f"simulator on {self._where()} is not running")
        return self._port

    @property
    def url(self) -> str:
        """``modbus-tcp://HOST:PORT`` of the running server (IPv6 hosts in brackets)."""
        host = f"[{self._host}]" if self._family == socket.AF_INET6 else self._host
        return f"modbus-tcp://{host}:{self.port}"

    def url_for(self, unit: int) -> str:
        """The device address URL of one unit, ``modbus-tcp://HOST:PORT?unit=N``."""
        return f"{self.url}?unit={unit}"

    def _make_server(self, sim_devices: list[SimDevice]) -> ModbusBaseServer:
        return ModbusTcpServer(
            sim_devices,
            framer=FramerType.SOCKET,
            address=(self._host, self._requested_port),
            ignore_missing_devices=True,
            trace_packet=self._trace_packet,
        )

    @staticmethod
    def _unit_of(frame: bytes) -> int | None:
        return frame[_MBAP_UNIT] if len(frame) > _MBAP_UNIT else None

    @staticmethod
    def _garble(frame: bytes) -> bytes:
        """Cut the PDU's last byte, with an MBAP length that agrees (a frame cut short).

        TCP's own checksum keeps line noise off a socket, so a corrupt answer over TCP
        comes from a faulty device or converter: a PDU whose byte count or fields no
        longer fit, which pymodbus refuses to decode.
        """
        length = int.from_bytes(frame[4:6], "big") - 1
        return frame[:4] + length.to_bytes(2, "big") + frame[6:-1]

    def _where(self) -> str:
        return f"{self._host}:{self._port or self._requested_port}"

    def _listen_failure(self) -> str:
        # pymodbus only logs the OSError; binding once more recovers it for the message.
        with socket.socket(self._family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((self._host, self._requested_port))
            except OSError as exc:
                return exc.strerror or str(exc)
        return "the socket could not be opened"

    def _started(self, server: ModbusBaseServer) -> None:
        listener: Any = server.transport
        self._port = int(listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Close the listener and every client connection; idempotent."""
        await super().stop()
        self._port = None


class ModbusRtuSimServer(_SimServerBase):
    """Simulated devices on one serial line speaking Modbus RTU.

    Meant for a pseudo-terminal (``socat pty,raw,echo=0,link=A pty,raw,echo=0,link=B``
    and serve on A, poll on B). A pty ignores the baud rate, so frames arrive without
    bus timing. Units nobody serves stay silent, as on RS-485.
    """

    _silent_for_unknown_units = True

    def __init__(
        self,
        devices: Mapping[int, ModbusDeviceModel],
        *,
        path: str,
        baudrate: int = 9600,
        parity: str = "N",
        bytesize: int = 8,
        stopbits: int = 1,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Prepare the server; the serial port opens on :meth:`start`.

        Raises ``ValueError`` for an empty path, a parity other than N, E or O, or a
        unit id outside 1-247.
        """
        super().__init__(devices, timeout_s=timeout_s)
        if not path:
            raise ValueError("path must name a serial device")
        if parity not in ("N", "E", "O"):
            raise ValueError(f"parity must be N, E or O, got {parity!r}")
        self._path = path
        self._baudrate = baudrate
        self._parity = parity
        self._bytesize = bytesize
        self._stopbits = stopbits

    @property
    def path(self) -> str:
        """The serial device the server opens."""
        return self._path

    @property
    def url(self) -> str:
        """``modbus-rtu://PATH?baud=B&parity=P`` of the line."""
        return f"modbus-rtu://{self._path}?baud={self._baudrate}&parity={self._parity}"

    def url_for(self, unit: int) -> str:
        """The device address URL of one unit on this line."""
        return f"{self.url}&unit={unit}"

    async def start(self) -> None:
        """Open the serial port and start serving; return once it is open.

        Raises ``SimServerError`` naming the path if pyserial is missing (pymodbus
        needs it for serial lines and does not require it itself), or if the port
        cannot be opened within the timeout.
        """
        if importlib.util.find_spec("serial") is None:
            raise SimServerError(
                f"cannot serve Modbus RTU on {self._path}: pyserial is not installed "
                "(pip install pyserial)"
            )
        await super().start()

    def _make_server(self, sim_devices: list[SimDevice]) -> ModbusBaseServer:
        return ModbusSerialServer(
            sim_devices,
            framer=FramerType.RTU,
            port=self._path,
            baudrate=self._baudrate,
            parity=self._parity,
            bytesize=self._bytesize,
            stopbits=self._stopbits,
            timeout=self._timeout_s,
            ignore_missing_devices=True,
            trace_packet=self._trace_packet,
        )

    @staticmethod
    def _unit_of(frame: bytes) -> int | None:
        return frame[0] if frame else None

    @staticmethod
    def _garble(frame: bytes) -> bytes:
        """Flip the CRC's last byte, as line noise would corrupt it: the master discards it."""
        return frame[:-1] + bytes([frame[-1] ^ 0xFF])

    def _where(self) -> str:
        return self._path

    def _started(self, server: ModbusBaseServer) -> None:
        """Nothing to record: the path is known before the port opens."""

    def _listen_failure(self) -> str:
        if not os.path.exists(self._path):
            return "no such serial device"
        return "the serial device cannot be opened (permissions, in use, or not a tty)"
