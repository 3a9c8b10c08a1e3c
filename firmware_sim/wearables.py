"""Simulated wristbands on a simulated radio, served to a gateway over HCI.

A :class:`BandField` puts CB-300 care bands and CB-100 beacons (``band_models``) on
the air of ``ble_radio``, each band a bumble ``Device`` with its own controller, and
serves the gateway's dongle as HCI over TCP: a gateway (a bumble host, or anything
speaking HCI over H4) opens :attr:`BandField.hci_spec`, ``tcp-client:127.0.0.1:PORT``.

Each band samples its sensors about once a second, at its own phase, on a clock that
runs ``time_scale`` times faster than the wall (scenario timelines compress; the
radio does not):

- a CB-300 advertises (connectable, scannable) until a gateway connects, serves
  GATT (Heart Rate 0x180D, Battery 0x180F, the vendor status service) and notifies
  the Heart Rate Measurement and the status to subscribers each second; after a
  disconnection it advertises again;
- a CB-100 advertises (non-connectable, non-scannable), its manufacturer data
  updated each second;
- an alert flag that changes (a scenario applied, a flag expiring) is sent at once:
  a status notification, or an advertising event with the new manufacturer data;
- out of range (``walk_away``), a band stops advertising and drops its connection
  with reason 0x08 (connection timeout), as the gateway would see it.

Typical use::

    async with BandField(connected=20, beacons=300, seed=1) as field:
        ...  # a gateway opens field.hci_spec
        applied = await field.apply("F0:A1:00:00:00:01", "sos")
        applied.notified_at  # time.time() when the notification went to bumble

As a program (``python -m firmware_sim.wearables --help``), the same field with a
control socket taking one JSON object a line (see :func:`main`).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import json
import logging
import random
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Generic, Self, TypeVar

from bumble import gatt, hci
from bumble.device import (
    AdvertisingEventProperties,
    AdvertisingParameters,
    AdvertisingSet,
    Connection,
    Device,
)

from firmware_sim import BandScenarioError, SimServerError, UnknownBandError
from firmware_sim.band_models import (
    BATTERY_LEVEL_UUID,
    BATTERY_SERVICE_UUID,
    HEART_RATE_MEASUREMENT_UUID,
    HEART_RATE_SERVICE_UUID,
    STATUS_UUID,
    VENDOR_SERVICE_UUID,
    BeaconBand,
    CareBand,
    Scenario,
)
from firmware_sim.ble_radio import Air, DongleServer, QuietController, QuietHost

__all__ = ["ADVERTISING_INTERVAL_MS", "Applied", "BandField", "main"]

_log = logging.getLogger(__name__)

#: The advertising interval the bands ask their controllers for. bumble times an
#: advertising set to the millisecond: 320 bands were heard 1.00 times a second each.
ADVERTISING_INTERVAL_MS: Final = 1000.0
_SAMPLE_PERIOD_S: Final = 1.0
_START_TIMEOUT_S: Final = 30.0
_STOP_TIMEOUT_S: Final = 5.0
_OUT_OF_RANGE: Final = hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR

_Spawn = Callable[[Coroutine[Any, Any, None], str], None]
_ModelT = TypeVar("_ModelT", CareBand, BeaconBand)


@dataclass(frozen=True, slots=True)
class Applied:
    """A scenario started on a band.

    ``notified_at`` is the ``time.time()`` at which a changed alert flag was handed
    to bumble (a status notification, or an advertisement with the new manufacturer
    data); None when no flag changed or nobody could hear it (a CB-300 without a
    subscriber, a band out of range).
    """

    band: str
    scenario: Scenario
    notified_at: float | None


class _HostedBand(abc.ABC, Generic[_ModelT]):
    """One band's bumble device: its radio, driven by its model."""

    def __init__(self, model: _ModelT, air: Air) -> None:
        self.model: _ModelT = model
        self.lock = asyncio.Lock()
        controller = QuietController(f"band {model.address}", link=air)
        self.device = Device(
            name=model.name,
            address=hci.Address(model.address, hci.Address.RANDOM_DEVICE_ADDRESS),
            host=QuietHost(controller, controller),
        )
        self._advertising: AdvertisingSet | None = None

    @abc.abstractmethod
    def _properties(self) -> AdvertisingEventProperties: ...

    def _scan_response(self) -> bytes:
        return b""

    async def power_on(self) -> None:
        """Power the device on and create its advertising set, not yet advertising."""
        await self.device.power_on()
        self._advertising = await self.device.create_advertising_set(
            advertising_parameters=AdvertisingParameters(
                advertising_event_properties=self._properties(),
                primary_advertising_interval_min=ADVERTISING_INTERVAL_MS,
                primary_advertising_interval_max=ADVERTISING_INTERVAL_MS,
            ),
            advertising_data=self.model.advertising_data(),
            scan_response_data=self._scan_response(),
            auto_start=False,
        )

    @property
    def advertising(self) -> AdvertisingSet:
        assert self._advertising is not None, "power_on() first"
        return self._advertising

    async def silence(self) -> None:
        """Stop advertising for good (the field is closing)."""
        if self._advertising is not None and self._advertising.enabled:
            await self._advertising.stop()

    async def follow_range(self) -> None:
        """Out of range: silent and unconnected. In range: advertising unless connected."""
        if not self.model.in_range:
            if self.advertising.enabled:
                await self.advertising.stop()
            for connection in list(self.device.connections.values()):
                await connection.disconnect(_OUT_OF_RANGE)
        elif not self.device.connections and not self.advertising.enabled:
            data = self.model.advertising_data()
            if data != self.advertising.advertising_data:
                await self.advertising.set_advertising_data(data)
            await self.advertising.start()

    async def sample(self, now: float) -> None:
        """Sample at ``now`` on the band's clock and send what changed."""
        async with self.lock:
            before = self.model.alert_flags
            self.model.advance(now)
            await self.follow_range()
            await self._send(alert=self.model.alert_flags != before)

    async def apply(self, scenario: str, now: float, args: Mapping[str, float]) -> Applied:
        """Start ``scenario``; a changed alert flag goes out at once."""
        async with self.lock:
            before = self.model.alert_flags
            try:
                self.model.start(scenario, now=now, **args)
            except ValueError as error:
                raise BandScenarioError(str(error), band=self.model.address) from None
            await self.follow_range()
            notified_at = None
            if self.model.alert_flags != before:
                notified_at = await self._send_alert()
            return Applied(self.model.address, Scenario(scenario), notified_at)

    @abc.abstractmethod
    async def _send(self, *, alert: bool) -> None:
        """Send this second's values; ``alert`` when a flag changed since the last."""

    @abc.abstractmethod
    async def _send_alert(self) -> float | None:
        """Send a changed alert flag now; return when it went to bumble, if it did."""


class _HostedCareBand(_HostedBand[CareBand]):
    """A CB-300: GATT server, notifications to subscribers, advertising while unconnected."""

    def __init__(self, model: CareBand, air: Air, spawn: _Spawn) -> None:
        super().__init__(model, air)
        self._spawn = spawn
        notify = gatt.Characteristic.Properties.NOTIFY
        self.heart_rate = gatt.Characteristic[bytes](
            f"{HEART_RATE_MEASUREMENT_UUID:04X}", notify, gatt.Characteristic.Permissions(0), b""
        )
        self.status = gatt.Characteristic[bytes](
            str(STATUS_UUID), notify, gatt.Characteristic.Permissions(0), b""
        )
        battery = gatt.Characteristic[bytes](
            f"{BATTERY_LEVEL_UUID:04X}",
            gatt.Characteristic.Properties.READ,
            gatt.Characteristic.READABLE,
            gatt.CharacteristicValue(read=lambda _connection: model.battery_level()),
        )
        self.device.add_services(
            [
                gatt.Service(f"{HEART_RATE_SERVICE_UUID:04X}", [self.heart_rate]),
                gatt.Service(f"{BATTERY_SERVICE_UUID:04X}", [battery]),
                gatt.Service(str(VENDOR_SERVICE_UUID), [self.status]),
            ]
        )
        self.device.on(Device.EVENT_CONNECTION, self._on_connection)

    def _properties(self) -> AdvertisingEventProperties:
        return AdvertisingEventProperties(is_connectable=True, is_scannable=True, is_legacy=True)

    def _scan_response(self) -> bytes:
        return self.model.scan_response_data()

    def _on_connection(self, connection: Connection) -> None:
        connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)

    def _on_disconnection(self, _reason: int) -> None:
        self._spawn(self._after_disconnection(), f"band {self.model.address} advertises again")

    async def _after_disconnection(self) -> None:
        async with self.lock:
            await self.follow_range()

    def _subscribed(self, characteristic: gatt.Characteristic[bytes]) -> bool:
        return any(
            cccd.get(characteristic.handle, b"\x00")[0] & 0x01
            for cccd in self.device.gatt_server.subscribers.values()
        )

    async def _send(self, *, alert: bool) -> None:
        # The status goes out every second, so a changed flag needs nothing more.
        if not self.device.connections:
            return
        await self.device.notify_subscribers(self.heart_rate, self.model.heart_rate_measurement())
        await self.device.notify_subscribers(self.status, self.model.status())

    async def _send_alert(self) -> float | None:
        if not self._subscribed(self.status):
            return None
        sent_at = time.time()
        await self.device.notify_subscribers(self.status, self.model.status())
        return sent_at


class _HostedBeacon(_HostedBand[BeaconBand]):
    """A CB-100: its state in the manufacturer data of non-connectable advertisements."""

    def _properties(self) -> AdvertisingEventProperties:
        return AdvertisingEventProperties(is_connectable=False, is_scannable=False, is_legacy=True)

    async def _send(self, *, alert: bool) -> None:
        if alert:
            await self._send_alert()
            return
        data = self.model.advertising_data()
        if data != self.advertising.advertising_data:
            await self.advertising.set_advertising_data(data)

    async def _send_alert(self) -> float | None:
        sent_at = time.time()
        await self.advertising.set_advertising_data(self.model.advertising_data())
        if not self.advertising.enabled:
            return None
        # Enabling the set again sends an advertising event now; the interval
        # counts from there.
        await self.advertising.stop()
        await self.advertising.start()
        return sent_at


class BandField:
    """CB-300 and CB-100 bands on one air, and the gateway's dongle served over TCP.

    ``connected`` CB-300 bands (numbers 1..connected) and ``beacons`` CB-100 bands
    (1..beacons); ``seed`` makes every band's randomness and phase reproducible;
    ``time_scale`` runs the bands' clocks that many times faster than the wall.
    The dongle listens on ``host``:``port`` (0 picks a free port, :attr:`port` is the
    one bound). An async context manager: entering powers every band on and returns
    once all advertise (raises ``SimServerError`` when the port cannot be bound);
    leaving silences the bands and closes the socket. Raises ``ValueError`` for a
    count outside 0-65535 or a ``time_scale`` not above 0.
    """

    def __init__(
        self,
        *,
        connected: int = 20,
        beacons: int = 300,
        seed: int = 0,
        time_scale: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not 0 <= connected <= 0xFFFF or not 0 <= beacons <= 0xFFFF:
            raise ValueError(f"connected and beacons must be 0-65535, got {connected}, {beacons}")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self._connected = connected
        self._beacons = beacons
        self._seed = seed
        self._time_scale = time_scale
        self._host = host
        self._port = port
        self._server: DongleServer | None = None
        self._hosted: dict[str, _HostedCareBand | _HostedBeacon] = {}
        self._by_name: dict[str, str] = {}
        self._group: asyncio.TaskGroup | None = None
        self._lives: list[asyncio.Task[None]] = []
        self._stack: contextlib.AsyncExitStack | None = None
        self._started_at = 0.0
        self._errors = 0

    # -- what a gateway and a test need ----------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port the dongle listens on (once entered)."""
        return self._server.port if self._server is not None else self._port

    @property
    def hci_spec(self) -> str:
        """The bumble transport a gateway opens: ``tcp-client:127.0.0.1:PORT``."""
        return f"tcp-client:{self._host}:{self.port}"

    @property
    def bands(self) -> Mapping[str, CareBand | BeaconBand]:
        """Every band's model by address (``F0:A1:00:00:00:01``), CB-300 first."""
        return {address: hosted.model for address, hosted in self._hosted.items()}

    @property
    def errors(self) -> int:
        """Band tasks that failed since the start (each logged with its band)."""
        return self._errors

    def band(self, key: str) -> CareBand | BeaconBand:
        """The band with this address or name (any case); ``UnknownBandError`` if none."""
        return self._find(key).model

    def clock_s(self) -> float:
        """The bands' clock now: seconds since the field started, times ``time_scale``."""
        return (asyncio.get_running_loop().time() - self._started_at) * self._time_scale

    async def apply(self, band: str, scenario: Scenario | str, **args: float) -> Applied:
        """Start ``scenario`` on the band with this address or name, now.

        A changed alert flag is sent at once (see :class:`Applied`). Raises
        ``UnknownBandError`` for no such band, ``BandScenarioError`` for an unknown
        scenario or a bad argument, ``SimServerError`` outside ``async with``.
        """
        if self._stack is None:
            raise SimServerError("the band field is not running: apply scenarios inside async with")
        return await self._find(band).apply(scenario, self.clock_s(), args)

    def _find(self, key: str) -> _HostedCareBand | _HostedBeacon:
        wanted = key.upper()
        hosted = self._hosted.get(self._by_name.get(wanted, wanted))
        if hosted is None:
            raise UnknownBandError(key, len(self._hosted))
        return hosted

    # -- lifetime --------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            air = Air()
            self._server = await stack.enter_async_context(
                DongleServer(air, host=self._host, port=self._port)
            )
            stack.push_async_callback(self._silence)
            self._group = await stack.enter_async_context(asyncio.TaskGroup())
            stack.push_async_callback(self._end_lives)
            self._started_at = asyncio.get_running_loop().time()
            self._create_bands(air)
            for hosted in self._hosted.values():
                await hosted.power_on()
            phases = random.Random(self._seed)
            started = [asyncio.Event() for _ in self._hosted]
            for hosted, event in zip(self._hosted.values(), started, strict=True):
                self._lives.append(
                    self._group.create_task(
                        self._live(hosted, phases.random() * _SAMPLE_PERIOD_S, event),
                        name=f"band {hosted.model.address}",
                    )
                )
            async with asyncio.timeout(_START_TIMEOUT_S):
                for event in started:
                    await event.wait()
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    def _create_bands(self, air: Air) -> None:
        for number in range(1, self._connected + 1):
            care = _HostedCareBand(CareBand(number, seed=self._seed), air, self._spawn)
            self._hosted[care.model.address] = care
        for number in range(1, self._beacons + 1):
            beacon = _HostedBeacon(BeaconBand(number, seed=self._seed), air)
            self._hosted[beacon.model.address] = beacon
        self._by_name = {hosted.model.name: address for address, hosted in self._hosted.items()}

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        if self._group is None:
            coro.close()
            return
        self._group.create_task(self._guarded(coro, name), name=name)

    async def _guarded(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await coro
        except Exception:
            # A task's outer boundary: one band's failure must not stop the others.
            self._errors += 1
            _log.exception("%s failed", name)

    async def _end_lives(self) -> None:
        """Cancel every band's loop; the task group then waits for them to end."""
        for task in self._lives:
            task.cancel()
        self._lives.clear()
        self._group = None

    async def _silence(self) -> None:
        """Stop every band's advertising, whose timers would otherwise run on."""
        async with asyncio.timeout(_STOP_TIMEOUT_S):
            for hosted in self._hosted.values():
                await hosted.silence()

    async def _live(self, hosted: _HostedBand[Any], phase_s: float, started: asyncio.Event) -> None:
        """One band's life: start advertising at its phase, then sample once a second."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(phase_s)
        async with hosted.lock:
            await hosted.follow_range()
        started.set()
        due = loop.time()
        while True:
            due += _SAMPLE_PERIOD_S
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                await hosted.sample(self.clock_s())
            except Exception:
                # A task's outer loop: log with the band, count, and keep sampling.
                self._errors += 1
                _log.exception("band %s failed to sample", hosted.model.address)


# -- the command line -----------------------------------------------------------------

_EPILOG = """\
The dongle: a gateway opens the HCI transport printed on the ready line, e.g. with
bumble: Device.with_hci(..., *await open_transport("tcp-client:127.0.0.1:PORT")).
One gateway at a time (a new one takes the dongle over); when a gateway leaves, the
dongle is unplugged: its links drop and the CB-300 bands advertise again.

Bands: CB-300 care bands F0:A1:00:00:00:01.. named ANJU-CB-0001.., CB-100 beacons
F0:B1:00:00:00:01.. named ANJU-BB-0001.. (the last two address bytes in hex).

Scenarios: normal_day, sos, cancel, fall, fall_recovery (still_s), hr_drift
(delta_bpm, duration_s), walk_away, return, battery_dying (floor_pct, duration_s),
garbage. Durations are on the bands' clock (--time-scale).

Control socket (--control): one JSON object a line, one reply a line:
  {"band": "F0:A1:00:00:00:01", "scenario": "sos"}
  {"band": "ANJU-BB-0007", "scenario": "hr_drift", "args": {"duration_s": 600}}
  -> {"ok": true, "band": "F0:A1:00:00:00:01", "scenario": "sos",
      "notified_at": 1718000000.123}   (time.time() the alert went to bumble; null
                                         when no flag changed or nobody listens)
  -> {"ok": false, "error": "no band 'F0:A1:00:00:09:99' (320 bands: ...)"}

Example:
  python -m firmware_sim.wearables --port 0 --connected 20 --beacons 300 --seed 1 \\
      --control 0 --scenario F0:B1:00:00:00:02=battery_dying
prints, once every band advertises:
  ready hci=tcp-client:127.0.0.1:40123 control=127.0.0.1:40124
SIGTERM or SIGINT stops it cleanly.
"""


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Simulated CB-300 care bands and CB-100 beacons on a simulated BLE "
        "radio, served to a gateway as an HCI dongle over TCP.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=0, help="HCI port of the dongle; 0 picks a free one (default)"
    )
    parser.add_argument("--connected", type=int, default=20, help="CB-300 care bands (%(default)s)")
    parser.add_argument("--beacons", type=int, default=300, help="CB-100 beacons (%(default)s)")
    parser.add_argument(
        "--seed", type=int, default=0, help="randomness of every band (%(default)s)"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="the bands' clock runs this many times faster than the wall (%(default)s)",
    )
    parser.add_argument(
        "--control",
        type=int,
        metavar="PORT",
        help="serve the JSON-lines control socket on this port (0: a free one)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="BAND=NAME",
        help="start a scenario at launch, BAND an address or name (repeatable)",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging on stderr (%(default)s)",
    )
    return parser


def _launch_scenarios(specs: Sequence[str]) -> list[tuple[str, str]]:
    launch = []
    for spec in specs:
        band, sep, name = spec.partition("=")
        if not sep or not band or not name:
            raise ValueError(f"--scenario {spec!r}: write BAND=NAME, e.g. F0:A1:00:00:00:01=sos")
        launch.append((band, name))
    return launch


class _ControlSocket:
    """The control socket: one JSON object a line in, one reply a line out (see ``--help``).

    An async context manager: entering binds (``SimServerError`` when it cannot);
    leaving closes the socket and every client's connection, and waits for their
    handlers to end.
    """

    def __init__(self, field: BandField, host: str, port: int) -> None:
        self._field = field
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    @property
    def address(self) -> str:
        """``HOST:PORT`` as bound."""
        assert self._server is not None
        return f"{self._host}:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Self:
        try:
            self._server = await asyncio.start_server(self._client, self._host, self._port)
        except OSError as error:
            raise SimServerError(
                f"cannot serve the control socket on {self._host}:{self._port}: {error}"
            ) from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._clients.values():
            writer.close()
        if self._clients:
            await asyncio.wait(self._clients, timeout=_STOP_TIMEOUT_S)
        await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[task] = writer
        try:
            async for line in reader:
                if line.strip():
                    reply = await _command(self._field, line)
                    writer.write(json.dumps(reply).encode() + b"\n")
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            del self._clients[task]
            writer.close()


async def _command(field: BandField, line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
    except ValueError as error:
        return {"ok": False, "error": f"not a JSON line: {error}"}
    if not isinstance(request, dict):
        return {"ok": False, "error": 'send a JSON object: {"band": ..., "scenario": ...}'}
    band, scenario, args = request.get("band"), request.get("scenario"), request.get("args", {})
    if not isinstance(band, str) or not isinstance(scenario, str):
        return {"ok": False, "error": '"band" and "scenario" must be strings'}
    if not isinstance(args, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in args.values()
    ):
        return {"ok": False, "error": '"args" must be an object of numbers'}
    try:
        applied = await field.apply(band, scenario, **args)
    except (UnknownBandError, BandScenarioError) as error:
        return {"ok": False, "error": str(error)}
    return {
        "ok": True,
        "band": applied.band,
        "scenario": applied.scenario.value,
        "notified_at": applied.notified_at,
    }


async def _serve(
    field: BandField, options: argparse.Namespace, launch: Sequence[tuple[str, str]]
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with field, contextlib.AsyncExitStack() as stack:
        for band, name in launch:
            await field.apply(band, name)
        ready = f"ready hci={field.hci_spec}"
        if options.control is not None:
            control = _ControlSocket(field, options.host, options.control)
            await stack.enter_async_context(control)
            ready += f" control={control.address}"
        print(ready, flush=True)
        await stop.wait()


def main(
    argv: Sequence[str] | None = None, *, prog: str = "python -m firmware_sim.wearables"
) -> int:
    """Run the band field until SIGTERM or SIGINT; 0 on a clean stop, 2 on a bad option.

    Prints ``ready hci=tcp-client:HOST:PORT [control=HOST:PORT]`` on stdout once
    every band advertises (``--help`` tells the rest).
    """
    parser = _parser(prog)
    options = parser.parse_args(argv)
    logging.basicConfig(level=options.log_level, stream=sys.stderr)
    try:
        launch = _launch_scenarios(options.scenario)
        field = BandField(
            connected=options.connected,
            beacons=options.beacons,
            seed=options.seed,
            time_scale=options.time_scale,
            host=options.host,
            port=options.port,
        )
    except ValueError as error:
        parser.error(str(error))
    try:
        asyncio.run(_serve(field, options, launch))
    except (UnknownBandError, BandScenarioError, SimServerError) as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
