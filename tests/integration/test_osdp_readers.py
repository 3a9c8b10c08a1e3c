"""OSDP readers simulated on a real pseudo-terminal pair, polled by libosdp's own
control panel (not Anju's driver): what a panel sees of cards, keys, inputs, the
secure channel, silence and pacing.

The panel here reads the pty through a channel that hands libosdp whole packets:
libosdp 3.2.9's control panel drops a reply that reaches it over more than one
``refresh`` (as the bytes of a paced line do), so, like a UART driver that delivers a
frame at a time, the channel gathers a packet by its length header and CRC first.
"""

from __future__ import annotations

import os
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import osdp
import pytest

from firmware_sim.osdp_console import load_keys, parse_addresses
from firmware_sim.osdp_readers import (
    DOOR_CONTACT,
    LOCK_RELEASE,
    ReaderLine,
    SimReader,
    UnknownReaderError,
    wiegand26,
)
from firmware_sim.pty_pair import PtyPair

KEY: Final = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
OTHER_KEY: Final = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")
BAUD: Final = 9600
_SOM: Final = 0x53
CLOSED: Final = b"\x00\x00\x00"
_STALE_S: Final = 0.1


def crc16(data: bytes) -> int:
    """OSDP's CRC-16 (CRC-16/AUG-CCITT: polynomial 0x1021, initial value 0x1D0F)."""
    crc = 0x1D0F
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = (crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def take_packet(buffer: bytearray) -> bytes | None:
    """The first whole, valid OSDP packet in ``buffer`` (removed from it), else None.

    Bytes that cannot start a valid packet (noise, a cut reply) are dropped.
    """
    while True:
        start = buffer.find(_SOM)
        if start < 0:
            buffer.clear()
            return None
        del buffer[:start]
        if len(buffer) < 5:
            return None
        length = buffer[2] | buffer[3] << 8
        if not 7 <= length <= 1440:
            del buffer[:1]
            continue
        if len(buffer) < length:
            return None
        packet = bytes(buffer[:length])
        if buffer[4] & 0x04:
            valid = crc16(packet[:-2]) == int.from_bytes(packet[-2:], "little")
        else:
            valid = (sum(packet[:-1]) + packet[-1]) & 0xFF == 0
        if not valid:
            del buffer[:1]
            continue
        del buffer[:length]
        return packet


class PanelChannel(osdp.Channel):  # type: ignore[misc]
    """The panel's end of the pty, handing libosdp one whole packet per read."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd, termios.TCSANOW)
        self._buffer = bytearray()
        self._last_byte = time.monotonic()

    def read(self, max_bytes: int) -> bytes:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            data = b""
        now = time.monotonic()
        if data:
            self._buffer += data
            self._last_byte = now
        packet = take_packet(self._buffer)
        if packet is None and self._buffer and now - self._last_byte > _STALE_S:
            del self._buffer[:1]  # a length that never completes: noise, resync
        return packet if packet is not None and len(packet) <= max_bytes else b""

    def write(self, buf: bytes) -> int:
        return os.write(self.fd, buf)

    def flush(self) -> None:
        self._buffer.clear()


class Panel:
    """libosdp's ControlPanel on the pty, refreshed every millisecond by a thread."""

    def __init__(
        self, path: str, readers: Sequence[tuple[int, bytes | None]], *, flags: Sequence[int] = ()
    ) -> None:
        self.channel = PanelChannel(path)
        self.cp = osdp.ControlPanel(
            [osdp.PDInfo(a, self.channel, scbk=k, flags=list(flags)) for a, k in readers],
            log_level=osdp.LogLevel.Emergency,
        )
        self.cp.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test panel", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.cp.lock:
                self.cp.ctx.refresh()
            time.sleep(0.001)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self.channel.fd)

    def event(self, address: int, timeout_s: float = 3.0) -> dict[str, Any]:
        event = self.cp.get_event(address, timeout=timeout_s)
        assert event is not None, f"an event from reader {address} within {timeout_s} s"
        return dict(event)

    def events(self, address: int, count: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        return [self.event(address, timeout_s) for _ in range(count)]

    def card_read(self, address: int, timeout_s: float = 5.0) -> dict[str, Any]:
        """The next card read, past the input reports a reader sends when polled anew."""
        while (event := self.event(address, timeout_s))["event"] != osdp.Event.CardRead:
            input_report(event)
        return event


def until(what: str, timeout_s: float, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        time.sleep(0.01)


@pytest.fixture
def pty() -> Iterator[PtyPair]:
    with PtyPair() as pair:
        yield pair


@pytest.fixture
def one_reader(pty: PtyPair) -> Iterator[tuple[ReaderLine, Panel]]:
    with (
        ReaderLine(pty.a, BAUD, [SimReader(1, scbk=KEY)]) as line,
        Panel(pty.b, [(1, KEY)]) as panel,
    ):
        until("reader 1 online", 5, lambda: panel.cp.is_online(1))
        assert input_report(panel.event(1)) == CLOSED, "all inputs, once polled"
        yield line, panel


def input_report(event: dict[str, Any]) -> bytes:
    assert event["event"] == osdp.Event.Status, event
    assert event["type"] == osdp.StatusReportType.Input, event
    return bytes(event["report"])


def test_a_card_read_arrives_with_the_same_bits(one_reader: tuple[ReaderLine, Panel]) -> None:
    line, panel = one_reader
    number = wiegand26(12, 3456)
    line.present_card(1, number)
    event = panel.event(1)
    assert event["event"] == osdp.Event.CardRead
    assert event["format"] == osdp.CardFormat.Wiegand
    assert event["length"] == 26
    assert int.from_bytes(event["data"], "big") >> (len(event["data"]) * 8 - 26) == number


def test_wiegand26_parity_is_that_of_h10301() -> None:
    # Facility 1, card 1: the payload 0x00010001 has one bit in each half.
    assert wiegand26(1, 1) == 0b1_00000001_0000000000000001_0
    assert wiegand26(0, 0) == 0b0_00000000_0000000000000000_1
    with pytest.raises(ValueError, match="facility 0-255"):
        wiegand26(256, 1)


def test_keys_arrive_one_per_reply_in_osdp_codes(one_reader: tuple[ReaderLine, Panel]) -> None:
    line, panel = one_reader
    line.key_in(1, "12*47#")
    events = panel.events(1, 6)
    assert {event["event"] for event in events} == {osdp.Event.KeyPress}
    # OSDP 2.2, 7.12: digits in ASCII, the clear key (*) 0x7F, the enter key (#) 0x0D.
    assert [bytes(event["data"]) for event in events] == [
        b"1", b"2", b"\x7f", b"4", b"7", b"\x0d"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="keys 0-9"):
        line.key_in(1, "12a")


def test_input_changes_arrive_as_status_events(one_reader: tuple[ReaderLine, Panel]) -> None:
    line, panel = one_reader
    line.set_input(1, DOOR_CONTACT, True)
    assert input_report(panel.event(1)) == b"\x01\x00\x00"
    line.set_input(1, LOCK_RELEASE, True)
    assert input_report(panel.event(1)) == b"\x01\x01\x00"
    line.set_input(1, DOOR_CONTACT, False)
    assert input_report(panel.event(1)) == b"\x00\x01\x00"
    line.tamper(1, True)
    local = panel.event(1)
    assert local["type"] == osdp.StatusReportType.Local
    assert bytes(local["report"]) == b"\x01\x00"


def test_a_grant_shows_the_card_then_the_release_then_the_door(
    one_reader: tuple[ReaderLine, Panel],
) -> None:
    line, panel = one_reader
    line.grant(1, wiegand26(1, 42), open_s=0.3)
    card, *inputs = panel.events(1, 5)
    assert card["event"] == osdp.Event.CardRead
    assert [input_report(event) for event in inputs] == [
        b"\x00\x01\x00",  # strike released
        b"\x01\x01\x00",  # door open
        b"\x00\x01\x00",  # door closed
        b"\x00\x00\x00",  # strike relocked
    ]


def test_an_exit_presses_the_button_then_opens_the_door(
    one_reader: tuple[ReaderLine, Panel],
) -> None:
    line, panel = one_reader
    line.exit(1, open_s=0.3)
    assert [input_report(event) for event in panel.events(1, 4)] == [
        b"\x00\x00\x01",  # exit button pressed
        b"\x00\x00\x00",  # let go
        b"\x01\x00\x00",  # door open, strike never released
        b"\x00\x00\x00",  # closed
    ]


def test_inputs_changed_before_a_panel_polls_are_in_its_first_report(pty: PtyPair) -> None:
    with ReaderLine(pty.a, BAUD, [SimReader(1)]) as line:
        line.set_input(1, DOOR_CONTACT, True)  # propped open before the panel starts
        line.set_input(1, LOCK_RELEASE, True)
        line.set_input(1, LOCK_RELEASE, False)
        with Panel(pty.b, [(1, None)]) as panel:
            assert input_report(panel.event(1)) == b"\x01\x00\x00"
            line.set_input(1, DOOR_CONTACT, False)
            assert input_report(panel.event(1)) == CLOSED


def test_each_new_panel_session_gets_the_inputs_again(pty: PtyPair) -> None:
    """An installer's probe right after the gateway (or another probe) let go of the
    line: the reader has been online all along, yet the new panel learns the door."""
    with ReaderLine(pty.a, BAUD, [SimReader(1, scbk=KEY)]) as line:
        line.set_input(1, DOOR_CONTACT, True)
        for _ in range(2):
            with Panel(pty.b, [(1, KEY)]) as panel:
                assert input_report(panel.event(1)) == b"\x01\x00\x00"


def test_the_secure_channel_comes_up_with_the_right_key(
    one_reader: tuple[ReaderLine, Panel],
) -> None:
    _, panel = one_reader
    until("secure channel with reader 1", 5, lambda: panel.cp.is_sc_active(1))


def test_no_secure_channel_with_a_wrong_key(pty: PtyPair) -> None:
    enforce = [osdp.LibFlag.EnforceSecure]
    with (
        ReaderLine(pty.a, BAUD, [SimReader(1, scbk=OTHER_KEY), SimReader(2, scbk=KEY)]) as line,
        Panel(pty.b, [(1, KEY), (2, KEY)], flags=enforce) as panel,
    ):
        until("reader 2 secure", 5, lambda: panel.cp.is_sc_active(2))
        until("reader 1 tried and refused", 5, lambda: line.stats.replies.get(1, 0) >= 3)
        assert not panel.cp.is_sc_active(1)
        assert not panel.cp.is_online(1)


def test_a_silenced_reader_goes_offline_and_comes_back(
    one_reader: tuple[ReaderLine, Panel],
) -> None:
    line, panel = one_reader
    line.silence(1)
    until("reader 1 offline at the panel", 15, lambda: not panel.cp.is_online(1))
    line.silence(1, False)
    # libosdp's panel waits 300 s before it tries an offline reader again; ask it now.
    with panel.cp.lock:
        panel.cp.ctx.disable_pd(0)
    until("reader 1 disabled", 2, lambda: not panel.cp.is_pd_enabled(1))
    with panel.cp.lock:
        panel.cp.ctx.enable_pd(0)
    until("reader 1 back online", 5, lambda: panel.cp.is_online(1))
    line.present_card(1, wiegand26(3, 3))
    panel.card_read(1)


def test_led_commands_from_the_panel_are_recorded(one_reader: tuple[ReaderLine, Panel]) -> None:
    line, panel = one_reader
    led = {
        "command": osdp.Command.LED,
        "reader": 0,
        "led_number": 0,
        "control_code": 1,
        "on_count": 5,
        "off_count": 5,
        "on_color": osdp.CommandLEDColor.Green,
        "off_color": osdp.CommandLEDColor.Black,
        "timer_count": 20,
        "temporary": True,
    }
    panel.cp.submit_command(1, led)
    until("the LED command at reader 1", 3, lambda: bool(line.commands(1)))
    (received,) = line.commands(1)
    assert received["command"] == osdp.Command.LED
    assert received["on_color"] == osdp.CommandLEDColor.Green
    with pytest.raises(UnknownReaderError):
        line.commands(9)


def test_polls_take_at_least_their_wire_time(pty: PtyPair) -> None:
    # Eight readers polled every 50 ms ask for more than a 9600 baud line carries,
    # so the line, not the panel's poll timer, sets the pace.
    readers = [SimReader(address) for address in range(8)]
    started = time.monotonic()
    with (
        ReaderLine(pty.a, BAUD, readers) as line,
        Panel(pty.b, [(r.address, None) for r in readers]),
    ):
        until("150 polls", 10, lambda: sum(line.stats.polls.values()) >= 150)
        stats = line.stats
        elapsed = time.monotonic() - started
    assert stats.char_s == 10 / BAUD
    assert stats.bytes_in >= 150 * 9
    assert stats.bytes_out >= 100 * 8
    assert elapsed >= stats.wire_s
    # (t + 0.002) - t can come out a few ulps short of 0.002 in floating point.
    assert min(stats.turnaround_s.values()) >= 0.002 - 1e-9


def test_four_readers_on_one_line_all_come_online(pty: PtyPair) -> None:
    readers = [SimReader(address, scbk=KEY) for address in (0, 1, 5, 9)]
    with (
        ReaderLine(pty.a, BAUD, readers) as line,
        Panel(pty.b, [(r.address, KEY) for r in readers]) as panel,
    ):
        until("4 readers online and secure", 8, lambda: panel.cp.get_num_sc_active() == 4)
        serials = {panel.cp.get_pd_id(r.address).serial_number for r in readers}
        assert serials == {r.serial_number for r in readers}
        line.present_card(9, wiegand26(9, 9))
        panel.card_read(9)
        assert all(line.polls(r.address) > 0 for r in readers)


def test_noise_between_frames_is_survived(one_reader: tuple[ReaderLine, Panel]) -> None:
    line, panel = one_reader
    line.noise(40)
    until("the noise sent", 2, lambda: line.stats.noise_bytes == 40)
    line.present_card(1, wiegand26(5, 5))
    assert panel.event(1)["event"] == osdp.Event.CardRead
    assert panel.cp.is_online(1)


@pytest.mark.parametrize("fault", ["corrupt_next", "truncate_next"])
def test_a_damaged_reply_is_refused_by_the_panel(
    one_reader: tuple[ReaderLine, Panel], fault: str
) -> None:
    line, panel = one_reader
    # libosdp's panel takes a reply it cannot check as a dead link: offline at once.
    getattr(line, fault)(1)
    line.present_card(1, wiegand26(6, 6))
    until("reader 1 offline at the panel", 5, lambda: not panel.cp.is_online(1))


def test_the_command_line_reads_addresses_and_a_key_file(tmp_path: Path) -> None:
    assert parse_addresses("0-3,9,2") == [0, 1, 2, 3, 9]
    keys = tmp_path / "readers.keys"
    keys.write_text(f"# site keys\n1 = {KEY.hex()}\n\n2={OTHER_KEY.hex()}  # door 2\n")
    assert load_keys(keys) == {1: KEY, 2: OTHER_KEY}
    keys.write_text(f"1={KEY.hex()}\n2={KEY.hex()[:-2]}zz\n")
    with pytest.raises(ValueError, match=r"line 2: the key of reader 2") as refused:
        load_keys(keys)
    assert KEY.hex()[:8] not in str(refused.value)
    with pytest.raises(ValueError, match="'3-1'"):
        parse_addresses("3-1")
