"""The VA-SR400 camera box simulator over a real pseudo-terminal pair.

The box writes on one end; the test reads the other as a gateway would, and checks
checksums with its own XOR loop, not the simulator's. Golden records are the examples
of the box's datasheet (device_profiles/camera/anju-camera-serial.yaml).
"""

from __future__ import annotations

import os
import re
import select
import threading
import time
import tty
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from anju.commands import sim as sim_commands
from firmware_sim import SimServerError
from firmware_sim.camera_box import COUNT_INTERVAL_S, CameraBox, main
from firmware_sim.pty_pair import PtyPair
from firmware_sim.serial_line import SerialLine

WAIT_S = 5.0
RECORD = re.compile(rb"\$([^$*\r\n]*)\*([0-9A-F]{2})\r\n")


class GatewayEnd:
    """The other end of the line: every byte, read as it arrives, and when it did."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self._fd)
        self._data = bytearray()
        self.last_at = 0.0
        """time.monotonic() of the last read."""
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="gateway end")
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.05)
            if ready:
                chunk = os.read(self._fd, 4096)
                with self._changed:
                    self._data += chunk
                    self.last_at = time.monotonic()
                    self._changed.notify_all()

    def wait_bytes(self, nbytes: int) -> bytes:
        """The first ``nbytes`` read; fails if they are not all in within WAIT_S."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self._data) >= nbytes, WAIT_S)
            assert arrived, f"{nbytes} bytes within {WAIT_S} s, got {bytes(self._data)!r}"
            return bytes(self._data[:nbytes])

    def wait_records(self, count: int) -> list[bytes]:
        """The first ``count`` whole records read (anything between them skipped)."""
        with self._changed:
            arrived = self._changed.wait_for(
                lambda: len(RECORD.findall(self._data)) >= count, WAIT_S
            )
            assert arrived, f"{count} records within {WAIT_S} s, got {bytes(self._data)!r}"
            return [match.group(0) for match in RECORD.finditer(self._data)][:count]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)
        os.close(self._fd)


def checksum(body: bytes) -> int:
    result = 0
    for byte in body:
        result ^= byte
    return result


def well_formed(record: bytes) -> bool:
    match = RECORD.fullmatch(record)
    return match is not None and int(match.group(2), 16) == checksum(match.group(1))


@pytest.fixture
def line() -> Iterator[PtyPair]:
    with PtyPair() as pair:
        yield pair


@pytest.fixture
def gateway(line: PtyPair) -> Iterator[GatewayEnd]:
    end = GatewayEnd(line.b)
    yield end
    end.close()


def open_box(
    line: PtyPair, baud: int = 115200, *, count_interval_s: float = COUNT_INTERVAL_S, seed: int = 0
) -> CameraBox:
    return CameraBox(SerialLine(line.a, baud), count_interval_s=count_interval_s, seed=seed)


def test_each_record_arrives_as_the_datasheet_writes_it(line: PtyPair, gateway: GatewayEnd) -> None:
    box = open_box(line)
    try:
        sent = [
            box.people(7),
            box.intrude(1, "Z1"),
            box.loiter(2, "Z2"),
            box.cross(1, "L1", "in", 2),
            box.cross(1, "L1", "out"),
            box.tamper(3),
            box.video_loss(4),
            box.people(8),
        ]
    finally:
        box.close()
    golden = [
        b"$PCNT,1,Z1,7*48\r\n",
        b"$EVT,1,INTRUSION,Z1*7E\r\n",
        b"$EVT,2,LOITER,Z2*38\r\n",
        b"$LINE,1,L1,in,2*77\r\n",
        b"$LINE,1,L1,out,1*1D\r\n",
        b"$EVT,3,TAMPER,*47\r\n",
        b"$EVT,4,VLOSS,*0A\r\n",
        b"$PCNT,1,Z1,8*47\r\n",
    ]
    assert sent == golden
    assert gateway.wait_bytes(sum(map(len, golden))) == b"".join(golden)
    assert all(well_formed(record) for record in golden)
    assert (box.records_sent, box.frames_damaged) == (8, 0)


def test_an_unchanged_count_is_not_sent_again_until_its_time(
    line: PtyPair, gateway: GatewayEnd
) -> None:
    box = open_box(line, count_interval_s=0.2)
    try:
        assert box.people(0) is None
        box.start()
        records = gateway.wait_records(3)
    finally:
        box.close()
    # At start, then at least every 0.2 s while nothing changes.
    assert records == [b"$PCNT,1,Z1,0*4F\r\n"] * 3


def test_records_take_their_wire_time_at_9600_baud(line: PtyPair, gateway: GatewayEnd) -> None:
    box = open_box(line, baud=9600)
    started = time.monotonic()
    try:
        frames = [
            box.cross(1, "L1", "in", n % 3 + 1) if n % 2 else box.intrude(n % 4 + 1, "Z1")
            for n in range(100)
        ]
        returned = time.monotonic()
    finally:
        box.close()
    total = sum(map(len, frames))
    wire_s = total * 10 / 9600
    assert gateway.wait_bytes(total) == b"".join(frames)
    # Lower bounds: the simulator's contract, not a speed test.
    assert returned - started >= wire_s
    assert gateway.last_at - started >= wire_s
    assert all(well_formed(frame) for frame in frames)


def test_noise_is_the_bytes_it_claims_and_holds_no_record_start(
    line: PtyPair, gateway: GatewayEnd
) -> None:
    box = open_box(line, seed=7)
    try:
        noise = box.noise(64)
        record = box.tamper(1)
    finally:
        box.close()
    assert len(noise) == 64
    assert b"$" not in noise
    assert gateway.wait_bytes(64 + len(record)) == noise + record
    assert gateway.wait_records(1) == [record]
    assert (box.records_sent, box.frames_damaged) == (1, 0)


def test_a_truncated_record_is_cut_and_the_next_arrives_whole(
    line: PtyPair, gateway: GatewayEnd
) -> None:
    box = open_box(line)
    try:
        box.truncate_next()
        cut = box.intrude(1, "Z1")
        whole = box.cross(2, "L2", "out", 1)
    finally:
        box.close()
    assert cut == b"$EVT,1,INTRUSION,Z1*7E\r\n"[:12]
    assert gateway.wait_bytes(len(cut) + len(whole)) == cut + whole
    assert well_formed(whole)
    assert (box.records_sent, box.frames_damaged) == (1, 1)


def test_a_corrupted_record_differs_only_in_its_checksum(
    line: PtyPair, gateway: GatewayEnd
) -> None:
    box = open_box(line)
    try:
        box.corrupt_next()
        bad = box.intrude(1, "Z1")
        good = box.intrude(1, "Z1")
    finally:
        box.close()
    assert bad == b"$EVT,1,INTRUSION,Z1*81\r\n"  # 0x7E with every bit flipped
    assert not well_formed(bad)
    assert gateway.wait_bytes(len(bad) + len(good)) == bad + good
    assert good == b"$EVT,1,INTRUSION,Z1*7E\r\n"
    assert (box.records_sent, box.frames_damaged) == (1, 1)


def test_tailgating_is_two_people_in_across_one_line(line: PtyPair, gateway: GatewayEnd) -> None:
    box = open_box(line)
    try:
        box.tailgating(channel=1, line="L1")
    finally:
        box.close()
    assert gateway.wait_records(1) == [b"$LINE,1,L1,in,2*77\r\n"]


def test_a_night_intrusion_counts_in_reports_and_counts_out(
    line: PtyPair, gateway: GatewayEnd
) -> None:
    box = open_box(line)
    try:
        box.night_intrusion(channel=1, zone="Z1", dwell_s=0.05)
    finally:
        box.close()
    bodies = [record.split(b"*")[0] for record in gateway.wait_records(4)]
    assert bodies == [b"$PCNT,1,Z1,1", b"$EVT,1,INTRUSION,Z1", b"$EVT,1,LOITER,Z1", b"$PCNT,1,Z1,0"]


def test_the_rate_mode_sends_what_it_counts(line: PtyPair, gateway: GatewayEnd) -> None:
    box = open_box(line, seed=3)
    try:
        sent = box.run_rate(200, duration_s=0.25)
    finally:
        box.close()
    assert sent == box.records_sent == 50
    records = gateway.wait_records(50)
    assert all(well_formed(record) for record in records)
    kinds = {record[1:4] for record in records}
    assert {b"PCN", b"LIN"} <= kinds


def test_a_closed_box_refuses_to_send(line: PtyPair) -> None:
    box = open_box(line)
    box.close()
    with pytest.raises(SimServerError, match="closed"):
        box.intrude(1, "Z1")
    with pytest.raises(ValueError, match="'in' or 'out'"):
        box.cross(1, "L1", "up", 1)  # type: ignore[arg-type]


def test_the_program_plays_a_scenario_and_reports_what_it_sent(
    line: PtyPair, gateway: GatewayEnd, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["--path", line.a, "--scenario", "tailgating", "--duration", "0.3"])
    assert status == 0
    records = gateway.wait_records(2)
    assert b"$LINE,1,L1,in,2*77\r\n" in records
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"ready path={line.a} baud=115200"
    assert re.fullmatch(r"sent \d+ records", out[-1])


def test_anju_sim_camera_refuses_a_line_it_cannot_open(tmp_path: os.PathLike[str]) -> None:
    result = CliRunner().invoke(
        sim_commands.app, ["camera", "--path", f"{tmp_path}/no-such-tty", "--rate", "10"]
    )
    assert result.exit_code == 2
    assert "cannot open" in result.output
