"""The serial driver over real pseudo-terminals: a camera box's records become samples,
bad frames are counted and skipped, and a port that goes (or never was) is reopened.

The test plays the box: it writes frames with ``os.write`` into one end of a socat pty
pair, and the bus reads the other, as on the two ends of an RS-232 cable. Frames are
the reference box's format (device_profiles/camera/anju-camera-serial.yaml).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import termios
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path

import pytest

from edge.addresses import parse_address
from edge.devices import AgentDevice
from edge.drivers.contract import DriverOptions, Sample
from edge.drivers.registry import driver_for
from edge.drivers.serial.bus import SerialBus
from edge.drivers.serial.checksums import crc16_modbus
from edge.drivers.serial.errors import NoWrites
from edge.errors import ConfigError, DeviceError
from firmware_sim.pty_pair import PtyPair
from schemas.profile import DeviceProfile, load_profiles
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[2]
CAMERA = load_profiles(ROOT / "device_profiles")["anju-camera-serial"]
WAIT_S = 10.0
SEND_EVERY_S = 0.1


def frame(body: str) -> bytes:
    """``$BODY*CS\\r\\n``, CS the XOR of the body's bytes, as the profile frames records."""
    checksum = reduce(lambda acc, byte: acc ^ byte, body.encode(), 0)
    return f"${body}*{checksum:02X}\r\n".encode()


@dataclass
class Recorder:
    """A StreamSink (the core's side of the contract) that keeps what the bus told it."""

    samples: list[tuple[Sample, datetime]] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    gone: list[DeviceError] = field(default_factory=list)
    """Why the device went offline, each time."""
    calls: list[str] = field(default_factory=list)
    """``online``/``offline`` in the order they came."""

    def sample(self, device_id: str, values: Sample, ts: datetime) -> None:
        self.samples.append((values, ts))

    def online(self, device_id: str, ts: datetime) -> None:
        self.calls.append("online")

    def offline(self, device_id: str, error: DeviceError, ts: datetime) -> None:
        self.gone.append(error)
        self.calls.append("offline")

    def fault(self, device_id: str, error: DeviceError) -> None:
        self.faults[error.kind] += 1

    def counts(self) -> list[object]:
        return [values["people_count"] for values, _ in self.samples if "people_count" in values]


def camera(path: str, profile: DeviceProfile = CAMERA) -> AgentDevice:
    return AgentDevice("cam-1", profile, parse_address(f"serial://{path}?baud=115200"), 5.0)


@contextlib.asynccontextmanager
async def listening(device: AgentDevice) -> AsyncIterator[tuple[SerialBus, Recorder]]:
    """The driver's bus for ``device``, running until the block ends."""
    bus = driver_for("serial").open(device.address, [device], DriverOptions())
    assert isinstance(bus, SerialBus)
    sink, stop = Recorder(), asyncio.Event()
    running = asyncio.create_task(bus.run(sink, stop))
    try:
        yield bus, sink
    finally:
        stop.set()
        await asyncio.wait_for(running, WAIT_S)
        bus.close()


@contextlib.contextmanager
def box_end(line: PtyPair) -> Iterator[int]:
    """The box's end of ``line``, for ``os.write``."""
    fd = os.open(line.a, os.O_RDWR | os.O_NOCTTY)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def sending(line: PtyPair, *frames: bytes) -> AsyncIterator[None]:
    """The box pushing ``frames`` over and over until the block ends, as a box repeats
    its count: whoever opens the other end late still hears them."""

    async def send(fd: int) -> None:
        while True:
            for data in frames:
                os.write(fd, data)
            await asyncio.sleep(SEND_EVERY_S)

    with box_end(line) as fd:
        task = asyncio.create_task(send(fd))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
def line(tmp_path: Path) -> Iterator[PtyPair]:
    with PtyPair(directory=tmp_path) as pair:
        yield pair


async def test_records_arrive_as_samples_stamped_when_received(line: PtyPair) -> None:
    async with listening(camera(line.b)) as (bus, sink):
        await until("the port open", WAIT_S, lambda: bus.opens == 1)
        before = datetime.now(UTC)
        with box_end(line) as box:
            os.write(box, frame("PCNT,1,Z1,7") + frame("EVT,1,INTRUSION,Z1"))
            await until("two samples", WAIT_S, lambda: len(sink.samples) == 2)
        after = datetime.now(UTC)
    (count, counted_at), (event, _) = sink.samples
    assert count == {"people_count": 7}
    assert event == {"event_channel": 1, "event_code": "INTRUSION", "event_zone": "Z1"}
    assert before <= counted_at <= after
    assert sink.calls == ["online"]
    assert not sink.faults


async def test_noise_and_a_bad_checksum_are_counted_and_the_next_frame_arrives(
    line: PtyPair,
) -> None:
    async with listening(camera(line.b)) as (bus, sink):
        await until("the port open", WAIT_S, lambda: bus.opens == 1)
        with box_end(line) as box:
            os.write(box, b"\x00\xffboot v1.2\r\n")
            os.write(box, frame("PCNT,1,Z1,7").replace(b"*48", b"*49"))
            os.write(box, frame("PCNT,1,Z1,8"))
            await until("the good frame", WAIT_S, lambda: sink.counts() == [8])
    assert set(sink.faults) == {"noise", "checksum"}
    assert sink.faults["checksum"] == 1


async def test_a_port_lost_mid_frame_is_offline_and_reopened_when_back(tmp_path: Path) -> None:
    first = PtyPair(directory=tmp_path)
    first.start()
    try:
        device = camera(first.b)
        async with listening(device) as (bus, sink):
            await until("the port open", WAIT_S, lambda: bus.opens == 1)
            with box_end(first) as box:
                os.write(box, frame("PCNT,1,Z1,7"))
                await until("the first count", WAIT_S, lambda: sink.counts() == [7])
                os.write(box, frame("PCNT,1,Z1,8")[:7])  # "$PCNT,1" and the cable is pulled
                await until("the half frame read", WAIT_S, lambda: bus.received == 17 + 7)
                first.stop()
            await until("the camera offline", WAIT_S, lambda: bool(sink.gone))
            lost = sink.gone[0]
            assert lost.kind == "disconnected"
            assert device.address.path in str(lost)
            with PtyPair(directory=tmp_path) as second:
                async with sending(second, frame("PCNT,1,Z1,9")):
                    await until("the count after reopening", 20, lambda: 9 in sink.counts())
                    assert sink.calls[-1] == "online"
    finally:
        first.stop()
    assert sink.counts()[:2] == [7, 9]  # the cut frame never became a count
    assert sink.faults["truncated"] == 1
    assert sink.calls[:2] == ["online", "offline"]
    assert bus.opens >= 2


async def test_a_port_missing_at_start_is_offline_with_the_reason_until_it_appears(
    tmp_path: Path,
) -> None:
    device = camera(str(tmp_path / "ttyB"))
    async with listening(device) as (_, sink):
        await until("the camera offline", WAIT_S, lambda: bool(sink.gone))
        assert sink.gone[0].kind == "unreachable"
        assert "No such file or directory" in str(sink.gone[0])
        assert str(tmp_path / "ttyB") in str(sink.gone[0])
        with PtyPair(directory=tmp_path) as line:
            async with sending(line, frame("PCNT,1,Z1,3")):
                await until("the count once the port exists", 20, lambda: 3 in sink.counts())
                assert sink.calls[-1] == "online"


async def test_silence_past_the_heartbeat_is_offline_until_the_next_record(
    line: PtyPair,
) -> None:
    quick = CAMERA.model_copy(update={"heartbeat_s": 0.5})
    async with listening(camera(line.b, quick)) as (bus, sink):
        await until("the port open", WAIT_S, lambda: bus.opens == 1)
        with box_end(line) as box:
            os.write(box, frame("PCNT,1,Z1,4"))
            await until("the first count", WAIT_S, lambda: sink.counts() == [4])
            heard = len(sink.calls)
            await until("the camera silent", WAIT_S, lambda: len(sink.calls) > heard)
            assert sink.gone[-1].kind == "timeout"
            assert sink.gone[-1].problem == "no record for 0.5 s"
            os.write(box, frame("PCNT,1,Z1,5"))
            await until("the next count", WAIT_S, lambda: sink.counts() == [4, 5])
    assert sink.calls[heard - 1 :] == ["online", "offline", "online"]
    assert bus.opens == 1  # a silent box is not a lost port


# AA 55, LEN (counts code and data), CODE 01, zone u16be, CRC-16/MODBUS low byte first.
ALARM_PANEL = DeviceProfile.model_validate(
    {
        "id": "alarm-panel",
        "kind": "door",
        "protocol": "serial",
        "manufacturer": "Test",
        "model": "T1",
        "heartbeat_s": 60,
        "serial": {
            "framing": {
                "mode": "binary",
                "start": "AA 55",
                "length": {"offset": 2, "counts": "payload"},
                "type_code": {"offset": 3},
                "checksum": "crc16-modbus",
            },
            "records": {"STATUS": {"code": 1, "fields": {"zone": {"offset": 4, "type": "u16be"}}}},
        },
        "points": [{"name": "zone", "serial": {"record": "STATUS", "field": "zone"}}],
    }
)


def status(zone: int) -> bytes:
    body = bytes([3, 1]) + zone.to_bytes(2, "big")
    return b"\xaa\x55" + body + crc16_modbus(body).to_bytes(2, "little")


async def test_a_binary_false_start_holds_back_no_frame_once_the_line_is_quiet(
    line: PtyPair,
) -> None:
    # A length of 240 promises a 245-byte frame; the three real frames behind it are
    # 24 bytes, and nothing more comes. They arrive once the line has been quiet.
    panel = AgentDevice("panel-1", ALARM_PANEL, parse_address(f"serial://{line.b}"), 5.0)
    async with listening(panel) as (bus, sink):
        await until("the port open", WAIT_S, lambda: bus.opens == 1)
        with box_end(line) as box:
            os.write(box, bytes.fromhex("AA 55 F0") + status(1) + status(2) + status(3))
            await until("the held-back frames", WAIT_S, lambda: len(sink.samples) == 3)
    assert [values for values, _ in sink.samples] == [{"zone": 1}, {"zone": 2}, {"zone": 3}]
    assert sink.faults == {"truncated": 1}
    assert sink.calls == ["online"]


@pytest.mark.parametrize(
    ("query", "baud", "warned"),
    [("", 115200, False), ("?baud=115200", 115200, False), ("?baud=19200", 19200, True)],
    ids=["profile", "both-agree", "address-wins"],
)
async def test_the_port_runs_at_the_profile_s_baud_unless_the_address_gives_one(
    line: PtyPair, caplog: pytest.LogCaptureFixture, query: str, baud: int, warned: bool
) -> None:
    device = AgentDevice("cam-1", CAMERA, parse_address(f"serial://{line.b}{query}"), 5.0)
    with caplog.at_level(logging.WARNING, logger="edge.drivers.serial.bus"):
        async with listening(device) as (bus, _):
            await until("the port open", WAIT_S, lambda: bus.opens == 1)
            # The line settings belong to the tty, so another open of it reads them.
            fd = os.open(line.b, os.O_RDWR | os.O_NOCTTY)
            try:
                ispeed, ospeed = termios.tcgetattr(fd)[4:6]
            finally:
                os.close(fd)
    assert ispeed == ospeed == getattr(termios, f"B{baud}")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    disagree = (
        f"cam-1: serial://{line.b} runs at baud=19200 as its address says; "
        "its profile anju-camera-serial says 115200"
    )
    assert [w for w in warnings if "baud" in w] == ([disagree] if warned else [])


async def test_a_camera_takes_no_writes(line: PtyPair) -> None:
    device = camera(line.b)
    bus = driver_for("serial").open(device.address, [device], DriverOptions())
    with pytest.raises(NoWrites, match="cam-1"):
        await bus.write(device, CAMERA.point("people_count"), 1.0)


def test_two_devices_on_one_port_are_refused() -> None:
    first, second = camera("/dev/ttyS1"), camera("/dev/ttyS1")
    second.device_id = "cam-2"
    with pytest.raises(ConfigError, match="cam-1, cam-2 share the serial port /dev/ttyS1"):
        driver_for("serial").open(first.address, [first, second], DriverOptions())


# -- anju device test ------------------------------------------------------------------


async def anju(*args: str) -> tuple[int, str, str]:
    """Run ``anju ARGS`` in a process while this test's loop keeps the box sending."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "anju.cli",
        *args,
        env={**os.environ, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_device_test_shows_a_camera_box_records_decoded(line: PtyPair) -> None:
    test = ["device", "test", "--profile", CAMERA.id, "--address", f"serial://{line.b}?baud=115200"]
    bad = frame("PCNT,1,Z1,6").replace(b"*49", b"*00")
    # Between any two of the records a probe waits for, but one, a bad frame: wherever
    # the probe starts listening, it hears one before it has all three.
    records = (bad, frame("PCNT,1,Z1,7"), frame("EVT,1,INTRUSION,Z1"), bad, frame("LINE,2,L1,in,3"))
    async with sending(line, *records):
        code, out, err = await anju(*test, "--json")
        assert code == 0, err
        raw_code, raw_out, raw_err = await anju(*test, "--raw")
    document = json.loads(out)
    values = {point["name"]: point["value"] for point in document["points"]}
    assert values == {
        "people_count": 7,
        "event_channel": 1,
        "event_code": "INTRUSION",
        "event_zone": "Z1",
        "line_channel": 2,
        "line_id": "L1",
        "line_direction": "in",
        "line_count": 3,
    }
    intrusion = [event for event in document["events"] if event["type"] == "camera.intrusion"]
    assert [(event["data"]["channel"], event["data"]["zone"]) for event in intrusion] == [(1, "Z1")]
    assert raw_code == 0, raw_err
    assert "$PCNT,1,Z1,7*48" in raw_out
    assert "$EVT,1,INTRUSION,Z1*7E" in raw_out
    assert "$PCNT,1,Z1,6*00" in raw_out  # skipped, and shown with why
    assert "camera.intrusion" in raw_out


async def test_device_test_names_a_port_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "ttyUSB9"
    code, out, err = await anju(
        "device", "test", "--profile", CAMERA.id, "--address", f"serial://{missing}"
    )
    assert code == 1
    assert f"cannot open {missing}: No such file or directory" in out + err


def _profile(serial: dict[str, object], records: str, fields: list[str]) -> DeviceProfile:
    """A one-record model in one framing mode: points ``zone`` and ``state`` of ``records``."""
    return DeviceProfile.model_validate(
        {
            "id": "framing-check",
            "kind": "door",
            "protocol": "serial",
            "manufacturer": "test",
            "model": "framing",
            "serial": serial,
            "points": [
                {"name": name, "serial": {"record": records, "field": name}} for name in fields
            ],
        }
    )


_STATUS = bytes.fromhex("AA 55 06 01 00 07 01 38 FF 7F E5")
_DOOR = bytes.fromhex("02 10 05 01 14 03")
MODES = {
    "fields": (
        _profile(
            {"framing": {"checksum": "xor8"}, "records": {"ZONE": ["zone", "state"]}},
            "ZONE",
            ["zone", "state"],
        ),
        frame("ZONE,7,open"),
        b"$ZONE,7,open*3C\r\n",  # the checksum is 3D
        {"zone": 7, "state": "open"},
        "checksum",
    ),
    "regex": (
        _profile(
            {
                "framing": {
                    "mode": "regex",
                    "pattern": r"(?P<type>ZONE) (?P<zone>\d+) (?P<state>\w+)",
                },
                "records": {"ZONE": ["zone", "state"]},
                "text_fields": ["zone"],
            },
            "ZONE",
            ["zone", "state"],
        ),
        b"ZONE 007 open\n",
        b"ZONE 007 op-en\n",
        {"zone": "007", "state": "open"},
        "malformed",
    ),
    "keyvalue": (
        _profile(
            {
                "framing": {"mode": "keyvalue", "type_key": "ev", "terminator": "\r\n"},
                "records": {"ALARM": ["zone", "state"]},
            },
            "ALARM",
            ["zone", "state"],
        ),
        b"ev=ALARM zone=007 state=open extra=1\r\n",
        b"ev=ALARM state=open\r\n",
        {"zone": 7, "state": "open"},
        "malformed",
    ),
    "json": (
        _profile(
            {
                "framing": {"mode": "json", "type_key": "type"},
                "records": {"alarm": ["zone", "state"]},
            },
            "alarm",
            ["zone", "state"],
        ),
        b'{"type":"alarm","zone":"Z1","state":"open"}\n',
        b'{"type":"alarm","zone":"Z1","state":\n',
        {"zone": "Z1", "state": "open"},
        "malformed",
    ),
    "binary-length-crc16": (
        _profile(
            {
                "framing": {
                    "mode": "binary",
                    "start": "AA 55",
                    "length": {"offset": 2, "type": "u8", "counts": "payload"},
                    "type_code": {"offset": 3},
                    "checksum": "crc16-modbus",
                },
                "records": {
                    "STATUS": {
                        "code": 1,
                        "fields": {
                            "zone": {"offset": 4, "type": "u16be"},
                            "state": {"offset": 6, "type": "bool", "bit": 0},
                        },
                    }
                },
            },
            "STATUS",
            ["zone", "state"],
        ),
        _STATUS,
        _STATUS[:-1] + bytes([_STATUS[-1] ^ 0x01]),
        {"zone": 7, "state": True},
        "checksum",
    ),
    "binary-end-xor8": (
        _profile(
            {
                "framing": {"mode": "binary", "start": "02", "end": "03", "checksum": "xor8"},
                "records": {
                    "DOOR": {
                        "fields": {
                            "zone": {"offset": 2, "type": "u8"},
                            "state": {"offset": 3, "type": "bool"},
                        }
                    }
                },
            },
            "DOOR",
            ["zone", "state"],
        ),
        _DOOR,
        _DOOR[:-2] + bytes([_DOOR[-2] ^ 0xFF]) + _DOOR[-1:],
        {"zone": 5, "state": True},
        "checksum",
    ),
}


@pytest.mark.parametrize("mode", list(MODES))
async def test_every_framing_mode_reads_through_noise_and_refuses_a_bad_frame(
    line: PtyPair, mode: str
) -> None:
    """Over a real pty: noise, a bad frame and a good one, again and again; the good
    one's values arrive each time and the bad one is counted by its kind."""
    profile, good, bad, values, kind = MODES[mode]
    noise = bytes([0x11, 0x22, 0x33, 0x7E, 0x10]) + b"\r\n"
    device = AgentDevice("dev-1", profile, parse_address(f"serial://{line.b}?baud=115200"), 5.0)
    async with listening(device) as (_bus, sink), sending(line, noise, bad, good):
        await until("three good records", WAIT_S, lambda: len(sink.samples) >= 3)
        rounds = len(sink.samples)
        faults = sink.faults[kind]
    assert all(dict(sample) == values for sample, _ in sink.samples)
    # Each round's noise and bad frame come before its good one. In the text modes the
    # noise line is malformed too, so the bad frames are counted only if there are two
    # faults a round.
    assert faults >= (2 if kind == "malformed" else 1) * rounds
