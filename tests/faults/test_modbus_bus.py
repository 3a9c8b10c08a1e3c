"""The edge's Modbus path over real TCP sockets and real RS-485-like pseudo-terminals.

Simulated devices inject the faults a real line shows (silence, late answers,
corrupted frames, exception codes, reboots); the assertions are on what the gateway
does about them: decode every type, coalesce reads, report offline and online, and
keep serving the healthy devices on a bus that has a dead one.
"""

import asyncio
import math
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from edge.addresses import DeviceAddress, parse_address
from edge.drivers.modbus.bus import ModbusBus
from edge.drivers.modbus.plan import plan_reads
from edge.errors import DeviceDisconnected, DeviceRejected, DeviceTimeout
from edge.normalise import polled_points
from edge.poller import BusPoller, PolledDevice
from firmware_sim.modbus_server import ModbusRtuSimServer, ModbusSimServer
from firmware_sim.pty_pair import PtyPair
from firmware_sim.register_device import RegisterDevice
from firmware_sim.smoke_detector import SmokeDetector
from schemas.profile import DeviceProfile, load_profile
from schemas.vocabulary import EventType
from schemas.wire import Event, Reading

Server = ModbusSimServer | ModbusRtuSimServer
SMOKE = load_profile(
    Path(__file__).resolve().parents[2] / "device_profiles" / "smoke" / "anju-smoke-mb.yaml"
)

# One point of every type and layout the profile model has, with the register image
# a device holding these values presents (written from the encodings, not from our
# encoder): -123456 as s32 is 0xFFFE1DC0; 3.14159 as f32 is 0x40490FD0.


def _point(name: str, metric: str, table: str, address: int, **layout: object) -> dict[str, object]:
    return {
        "name": name,
        "metric": metric,
        "modbus": {"table": table, "address": address, **layout},
    }


EVERY_TYPE = DeviceProfile.model_validate(
    {
        "id": "every-type",
        "kind": "smoke",
        "protocol": "modbus-rtu",
        "manufacturer": "test",
        "model": "test",
        "modbus": {"max_gap": 0},
        "points": [
            _point("u16", "co_ppm", "input_register", 0),
            _point("s16", "temperature_c", "input_register", 1, type="s16"),
            _point("u32", "steps", "input_register", 2, type="u32"),
            _point("s32", "rssi_dbm", "input_register", 4, type="s32", word_order="little"),
            _point("f32", "heart_rate_bpm", "holding_register", 10, type="f32"),
            _point(
                "f32_badc",
                "rr_interval_ms",
                "holding_register",
                12,
                type="f32",
                byte_order="little",
            ),
            _point("flag", "door.open", "holding_register", 14, type="bool", bit=3),
            _point("coil", "door.locked", "coil", 0, type="bool"),
            _point("input", "battery_pct", "discrete_input", 1, type="bool"),
        ],
    }
)
EVERY_TYPE_VALUES = {
    "u16": 50_000, "s16": -55, "u32": 100_000, "s32": -123_456, "f32": 3.14159,
    "f32_badc": 3.14159, "flag": True, "coil": True, "input": False,
}  # fmt: skip


def every_type_device() -> RegisterDevice:
    (s32_high, s32_low) = struct.unpack(">HH", struct.pack(">i", -123_456))
    return RegisterDevice(
        input_registers={0: 50_000, 1: 0xFFC9, 2: 0x0001, 3: 0x86A0, 4: s32_low, 5: s32_high},
        holding_registers={10: 0x4049, 11: 0x0FD0, 12: 0x4940, 13: 0xD00F, 14: 0b1000},
        coils={0: True},
        discrete_inputs={0: True, 1: False},
    )


@asynccontextmanager
async def tcp_server(devices: dict[int, Any]) -> AsyncIterator[tuple[Server, Callable[[int], str]]]:
    async with ModbusSimServer(devices) as server:
        yield server, server.url_for


@asynccontextmanager
async def rtu_server(devices: dict[int, Any]) -> AsyncIterator[tuple[Server, Callable[[int], str]]]:
    with PtyPair() as pty:
        async with ModbusRtuSimServer(devices, path=pty.a) as server:
            yield server, lambda unit: f"modbus-rtu://{pty.b}?baud=9600&unit={unit}"


TRANSPORTS = {"tcp": tcp_server, "rtu": rtu_server}


@pytest.fixture(params=sorted(TRANSPORTS))
def serve(request: pytest.FixtureRequest) -> Callable[..., Any]:
    return TRANSPORTS[request.param]


async def test_every_type_decodes_over_the_wire(serve: Callable[..., Any]) -> None:
    async with serve({7: every_type_device()}) as (_, url_for):
        address = parse_address(url_for(7))
        bus = ModbusBus(address, timeout_s=1.0)
        try:
            every_point = PolledDevice("every", EVERY_TYPE, address, 1.0)
            every_point.points = tuple(EVERY_TYPE.points)
            values = await bus.read(every_point)
        finally:
            bus.close()
    assert values.keys() == EVERY_TYPE_VALUES.keys()
    for name, expected in EVERY_TYPE_VALUES.items():
        assert type(values[name]) is type(expected), name
        assert math.isclose(values[name], expected, rel_tol=1e-6), name


async def test_coalesced_poll_is_one_request_on_the_wire(serve: Callable[..., Any]) -> None:
    async with serve({1: SmokeDetector(temperature_c=-5.5)}) as (server, url_for):
        address = parse_address(url_for(1))
        device = PolledDevice("sd-1", SMOKE, address, interval_s=1.0)
        bus = ModbusBus(address, timeout_s=1.0)
        try:
            before = server.faults(1).stats.requests
            sample = await bus.read(device)
            requests = server.faults(1).stats.requests - before
        finally:
            bus.close()
    assert len(polled_points(SMOKE)) == 5
    assert requests == 1
    assert sample["temperature"] == -55


async def test_exception_and_garbled_frame_are_typed_errors(serve: Callable[..., Any]) -> None:
    async with serve({1: SmokeDetector()}) as (server, url_for):
        address = parse_address(url_for(1))
        device = PolledDevice("sd-1", SMOKE, address, interval_s=1.0)
        bus = ModbusBus(address, timeout_s=0.3)
        try:
            server.faults(1).exception(4, count=1)
            with pytest.raises(DeviceRejected) as rejected:
                await bus.read(device)
            assert rejected.value.code == 4
            assert "unit 1" in str(rejected.value)
            server.faults(1).garble(count=1)
            with pytest.raises((DeviceTimeout, DeviceRejected)):
                await bus.read(device)
            assert (await bus.read(device))["battery"] == 100
        finally:
            bus.close()


@pytest.mark.parametrize("how", ["on accepting", "on the request", "with a reset"])
async def test_a_connection_the_device_closes_is_reported_at_once(how: str) -> None:
    """A device that reboots, or serves one client and has one, closes the connection.

    That is known the moment it happens: no waiting out the (long) timeout, and no
    DeviceTimeout, whose advice is for a silent device on a serial line.
    """

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if how != "on accepting":
            await reader.read(256)
        if how == "with a reset":
            linger = struct.pack("ii", 1, 0)  # on, 0 s: close() sends RST, not FIN
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    (read,) = plan_reads(SMOKE, polled_points(SMOKE))
    loop = asyncio.get_running_loop()
    async with server:
        bus = ModbusBus(parse_address(f"modbus-tcp://127.0.0.1:{port}?unit=3"), timeout_s=5.0)
        started = loop.time()
        try:
            with pytest.raises(DeviceDisconnected) as caught:
                await bus.read_block(read, 3)
        finally:
            bus.close()
    assert loop.time() - started < 1.0
    assert str(caught.value) == (
        f"tcp://127.0.0.1:{port} unit 3 input_register 0+5: connection closed by the device"
    )


async def test_an_answer_pymodbus_cannot_decode_is_a_bad_response_not_a_closed_connection() -> None:
    """pymodbus drops a TCP connection whose answer it cannot decode; the device did not."""
    (read,) = plan_reads(SMOKE, polled_points(SMOKE))
    loop = asyncio.get_running_loop()
    async with tcp_server({1: SmokeDetector()}) as (server, url_for):
        bus = ModbusBus(parse_address(url_for(1)), timeout_s=5.0)
        try:
            server.faults(1).garble(count=1)
            started = loop.time()
            with pytest.raises(DeviceRejected, match=r"unit 1 input_register 0\+5: bad response"):
                await bus.read_block(read, 1)
            assert loop.time() - started < 1.0
            assert len(await bus.read_block(read, 1)) == 5
        finally:
            bus.close()


async def test_a_serial_line_that_goes_away_is_reported_at_once() -> None:
    """The USB adapter unplugged mid-request: here, the pseudo-terminal pair torn down."""
    (read,) = plan_reads(SMOKE, polled_points(SMOKE))
    loop = asyncio.get_running_loop()
    with PtyPair() as pty:
        async with ModbusRtuSimServer({1: SmokeDetector()}, path=pty.a) as server:
            bus = ModbusBus(parse_address(f"modbus-rtu://{pty.b}?unit=1"), timeout_s=5.0)
            try:
                assert len(await bus.read_block(read, 1)) == 5
                server.faults(1).drop()
                started = loop.time()
                loop.call_later(0.2, pty.stop)
                with pytest.raises(DeviceDisconnected) as caught:
                    await bus.read_block(read, 1)
            finally:
                bus.close()
    assert loop.time() - started < 2.0
    assert caught.value.problem == "serial port failed and was closed (adapter unplugged?)"


class Recorder:
    """The poller's sink: what it would have handed to the spool."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.readings: list[Reading] = []

    def __call__(self, readings: list[Reading], events: list[Event]) -> None:
        self.readings.extend(readings)
        self.events.extend(events)

    def types(self, device: str) -> list[EventType]:
        return [e.type for e in self.events if e.device == device]


def devices_on(
    url_for: Callable[[int], str], units: list[int], interval_s: float
) -> list[PolledDevice]:
    return [PolledDevice(f"sd-{u}", SMOKE, parse_address(url_for(u)), interval_s) for u in units]


@asynccontextmanager
async def polling(
    address: DeviceAddress, devices: list[PolledDevice], sink: Recorder, **options: float
) -> AsyncIterator[BusPoller]:
    poller = BusPoller(ModbusBus(address, timeout_s=0.2), devices, sink, **options)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        yield poller
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        poller.bus.close()


async def wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    # The poller exposes plain counters, not events, so the test samples them.
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_silent_device_goes_offline_then_online(serve: Callable[..., Any]) -> None:
    async with serve({1: SmokeDetector(), 2: SmokeDetector()}) as (server, url_for):
        devices = devices_on(url_for, [1, 2], interval_s=0.1)
        sink = Recorder()
        async with polling(devices[0].address, devices, sink, offline_retry_max_s=0.4):
            await wait_for(lambda: devices[1].answered > 0, timeout_s=5)
            server.faults(2).drop()
            await wait_for(lambda: EventType.DEVICE_OFFLINE in sink.types("sd-2"), 10)
            assert not devices[1].online
            assert devices[1].faults["timeout"] >= 3
            server.faults(2).clear()
            await wait_for(lambda: EventType.DEVICE_ONLINE in sink.types("sd-2"), 10)
        assert sink.types("sd-2").count(EventType.DEVICE_OFFLINE) == 1
        assert EventType.DEVICE_OFFLINE not in sink.types("sd-1")
        offline = next(e for e in sink.events if e.type is EventType.DEVICE_OFFLINE)
        assert offline.data.reason is not None
        assert offline.data.reason.startswith("timeout")


async def test_rebooted_device_is_offline_while_down_and_reports_again(
    serve: Callable[..., Any],
) -> None:
    detector = SmokeDetector()
    async with serve({1: detector}) as (server, url_for):
        devices = devices_on(url_for, [1], interval_s=0.1)
        sink = Recorder()
        async with polling(devices[0].address, devices, sink, offline_retry_max_s=0.3):
            await wait_for(lambda: devices[0].answered > 0, timeout_s=5)
            detector.trigger_alarm()
            await wait_for(lambda: EventType.SMOKE_ALARM in sink.types("sd-1"), 5)
            server.faults(1).reboot(offline_s=1.5)
            await wait_for(lambda: EventType.DEVICE_ONLINE in sink.types("sd-1"), 10)
            # The smoke is still in the chamber after the reboot, so the alarm holds: no
            # second alarm event, and clearing the smoke clears it once.
            detector.clear_smoke()
            detector.reset_alarm()
            await wait_for(lambda: EventType.SMOKE_CLEARED in sink.types("sd-1"), 5)
        assert sink.types("sd-1") == [
            EventType.SMOKE_ALARM,
            EventType.DEVICE_OFFLINE,
            EventType.DEVICE_ONLINE,
            EventType.SMOKE_CLEARED,
        ]


@pytest.mark.slow
async def test_dead_device_costs_its_neighbours_no_more_than_its_timeout(
    serve: Callable[..., Any],
) -> None:
    """Three detectors on one bus polled every 0.1 s; the middle one is dead.

    Its 0.2 s timeout is longer than the whole cycle, so were it tried every cycle the
    healthy two would get about a third of their polls. Once it is offline it is
    tried at most once a second (backing off to every 2 s), which costs them one
    timeout per try and no more.
    """
    window_s, interval_s = 3.0, 0.1
    async with serve({u: SmokeDetector() for u in (1, 2, 3)}) as (server, url_for):

        async def healthy_polls(dead: bool) -> int:
            devices = devices_on(url_for, [1, 2, 3], interval_s)
            if dead:
                server.faults(2).drop()
            async with polling(devices[0].address, devices, Recorder(), offline_retry_max_s=2.0):
                await wait_for(lambda: devices[1].online is not dead, timeout_s=5)
                start = min(devices[0].answered, devices[2].answered)
                await asyncio.sleep(window_s)
                end = min(devices[0].answered, devices[2].answered)
            server.faults(2).clear()
            return end - start

        baseline = await healthy_polls(dead=False)
        with_dead = await healthy_polls(dead=True)
    assert baseline >= 0.8 * window_s / interval_s
    assert with_dead >= 0.75 * baseline, (baseline, with_dead)


# Ten coils in one read: a TCP answer cut short by one byte carries 8 of them. The
# gateway polls the first and the last (the ones with a metric), in one read.
TEN_COILS = DeviceProfile.model_validate(
    {
        "id": "ten-coils",
        "kind": "door",
        "protocol": "modbus-tcp",
        "manufacturer": "test",
        "model": "test",
        "modbus": {"max_gap": 10},
        "points": [
            _point("locked", "door.locked", "coil", 0, type="bool"),
            *(
                {"name": f"coil{i}", "modbus": {"table": "coil", "address": i, "type": "bool"}}
                for i in range(1, 9)
            ),
            _point("open", "door.open", "coil", 9, type="bool"),
        ],
    }
)


def ten_coils() -> RegisterDevice:
    return RegisterDevice(coils={i: True for i in range(10)})


async def test_short_bit_answer_is_rejected() -> None:
    async with tcp_server({1: ten_coils()}) as (server, url_for):
        address = parse_address(url_for(1))
        (read,) = plan_reads(TEN_COILS, polled_points(TEN_COILS))
        assert read.count == 10
        bus = ModbusBus(address, timeout_s=0.5)
        try:
            server.faults(1).garble(count=1)
            with pytest.raises(DeviceRejected, match="answered 8 bits") as rejected:
                await bus.read_block(read, 1)
            assert "unit 1" in str(rejected.value)
            assert await bus.read_block(read, 1) == [True] * 10
        finally:
            bus.close()


async def test_short_bit_answer_is_a_miss_not_the_end_of_the_poller() -> None:
    async with tcp_server({1: ten_coils(), 2: SmokeDetector()}) as (server, url_for):
        coils = PolledDevice("io-1", TEN_COILS, parse_address(url_for(1)), 0.05)
        smoke = PolledDevice("sd-2", SMOKE, parse_address(url_for(2)), 0.05)
        sink = Recorder()
        async with polling(coils.address, [coils, smoke], sink) as poller:
            await wait_for(lambda: coils.answered > 0, timeout_s=5)
            server.faults(1).garble(count=1)
            await wait_for(lambda: coils.faults["exception"] == 1, timeout_s=5)
            answered = coils.answered, smoke.answered
            await wait_for(lambda: coils.answered > answered[0] + 2, timeout_s=5)
            await wait_for(lambda: smoke.answered > answered[1] + 2, timeout_s=5)
        assert poller.devices[0].faults["internal"] == 0


async def test_an_unexpected_error_in_one_poll_is_counted_and_polling_goes_on() -> None:
    async with tcp_server({1: SmokeDetector(), 2: SmokeDetector()}) as (_, url_for):
        devices = devices_on(url_for, [1, 2], interval_s=0.05)
        recorder = Recorder()
        failures: list[int] = []

        def failing_sink(readings: list[Reading], events: list[Event]) -> None:
            # The spool refusing the first two polls' batches, whichever device.
            if len(failures) < 2:
                failures.append(len(readings))
                raise RuntimeError("spool is broken")
            recorder(readings, events)

        async with polling(devices[0].address, devices, failing_sink) as poller:  # type: ignore[arg-type]
            await wait_for(lambda: len(failures) == 2, timeout_s=5)
            polls = [d.polls for d in devices]
            await wait_for(
                lambda: all(d.polls > p + 3 for d, p in zip(devices, polls, strict=True)), 5
            )
        assert sum(d.faults["internal"] for d in poller.devices) == 2
        assert all(d.online for d in devices)


async def test_a_failed_poll_is_not_an_overrun() -> None:
    """A poll that times out ends late; the next one is not late to start."""
    async with tcp_server({1: SmokeDetector()}) as (server, url_for):
        devices = devices_on(url_for, [1], interval_s=0.05)
        async with polling(devices[0].address, devices, Recorder()) as poller:
            await wait_for(lambda: devices[0].answered > 0, timeout_s=5)
            server.faults(1).drop(count=2)
            await wait_for(lambda: devices[0].faults["timeout"] == 2, timeout_s=5)
            answered = devices[0].answered
            await wait_for(lambda: devices[0].answered > answered + 3, timeout_s=5)
            assert devices[0].online
            assert poller.overruns == 0


async def test_polls_that_start_an_interval_late_are_overruns() -> None:
    """A slow neighbour (0.15 s per answer) holds sd-1 up 3 intervals every cycle."""
    async with tcp_server({1: SmokeDetector(), 2: SmokeDetector()}) as (server, url_for):
        devices = devices_on(url_for, [1, 2], interval_s=0.05)
        server.faults(2).delay(0.15)
        async with polling(devices[0].address, devices, Recorder()) as poller:
            await wait_for(lambda: devices[1].answered >= 4, timeout_s=5)
            assert poller.overruns >= 2
        assert devices[1].faults["timeout"] == 0


async def test_a_device_back_online_starts_its_record_counters_afresh() -> None:
    """A controller that rebooted restarts its event counter; its old record is not new.

    Before the reboot its counter reached 65535; after it, the counter is 2 again,
    under the record that was there at power-on. Read as a wrap (65535 -> 2), that
    would be a new access.granted; it is a re-baseline because the device was offline.
    """
    profile = DeviceProfile.model_validate(
        {
            "id": "counter",
            "kind": "door",
            "protocol": "modbus-tcp",
            "manufacturer": "test",
            "model": "test",
            "points": [
                {"name": "code", "modbus": {"table": "holding_register", "address": 0}},
                {"name": "count", "modbus": {"table": "holding_register", "address": 1}},
            ],
            "events": [
                {
                    "type": "access.granted",
                    "point": "code",
                    "when": {"equals": 1},
                    "mode": "occurrence",
                    "sequence": "count",
                }
            ],
        }
    )
    controller = RegisterDevice(holding_registers={0: 1, 1: 2})
    async with tcp_server({1: controller}) as (server, url_for):
        device = PolledDevice("door-1", profile, parse_address(url_for(1)), 0.05)
        sink = Recorder()
        async with polling(device.address, [device], sink, offline_retry_max_s=0.2):
            await wait_for(lambda: device.answered > 0, timeout_s=5)
            controller.set_holding_registers(1, [65_535])
            await wait_for(lambda: EventType.ACCESS_GRANTED in sink.types("door-1"), 5)
            server.faults(1).reboot(offline_s=1.5)
            await wait_for(lambda: EventType.DEVICE_ONLINE in sink.types("door-1"), 10)
            answered = device.answered
            await wait_for(lambda: device.answered > answered + 3, timeout_s=5)
            # The power-on record under counter 2 was not taken for a new one.
            assert sink.types("door-1").count(EventType.ACCESS_GRANTED) == 1
            controller.set_holding_registers(1, [3])
            await wait_for(lambda: sink.types("door-1").count(EventType.ACCESS_GRANTED) == 2, 5)
        assert sink.types("door-1") == [
            EventType.ACCESS_GRANTED,
            EventType.DEVICE_OFFLINE,
            EventType.DEVICE_ONLINE,
            EventType.ACCESS_GRANTED,
        ]
