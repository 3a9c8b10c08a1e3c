"""The OSDP driver as the control panel of simulated readers on a real pseudo-terminal.

The readers are libosdp peripheral devices behind ``firmware_sim.osdp_readers``, paced
at 9600 baud; the driver's panel polls them from the other end of a socat pty pair.
Samples go through the real normaliser, so the events asserted are those the gateway
would send.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from edge.addresses import parse_address
from edge.devices import AgentDevice
from edge.drivers.contract import DriverOptions, Sample, ScanHit
from edge.drivers.osdp.bus import OsdpBus
from edge.drivers.osdp.line import SerialChannel, open_port
from edge.drivers.osdp.panel import CMD_BUZZER, CMD_LED, Online, Panel, PanelEvent, ReaderSetup
from edge.drivers.osdp.settings import Secret
from edge.drivers.registry import driver_for
from edge.errors import ConfigError, DeviceError
from firmware_sim.osdp_readers import ReaderLine, SimReader, wiegand26
from firmware_sim.pty_pair import PtyPair
from schemas.profile import DeviceProfile, load_profiles
from schemas.wire import Event
from tests.waiting import until

REPO = Path(__file__).resolve().parents[2]
PROFILE = load_profiles(REPO / "device_profiles")["anju-osdp-reader"]
KEY = bytes(range(16))
WRONG_KEY = bytes(range(16, 32))
CARD_KEY = "5a" * 32
CARD = wiegand26(12, 3456)
ANJU = [sys.executable, "-m", "anju.cli"]


def quick_profile() -> DeviceProfile:
    """The reference reader with held-open after 1 s rather than 30, for a fast test."""
    document = yaml.safe_load((REPO / "device_profiles/door/anju-osdp-reader.yaml").read_text())
    for rule in document["events"]:
        if rule["type"] == "door.held_open":
            rule["when"]["for_s"] = 1.0
    document["poll_interval_s"] = 0.2
    return DeviceProfile.model_validate(document)


@dataclass
class Recorder:
    """What the bus told its sink, normalised as the core does."""

    devices: dict[str, AgentDevice]
    samples: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    online: set[str] = field(default_factory=set)
    offline_errors: dict[str, list[DeviceError]] = field(default_factory=dict)

    def sample(self, device_id: str, values: Sample, ts: datetime) -> None:
        self.samples.append((device_id, dict(values)))
        _, events = self.devices[device_id].normaliser.normalise(values, ts)
        self.events.extend(events)

    def offline(self, device_id: str, error: DeviceError, ts: datetime) -> None:
        self.online.discard(device_id)
        self.offline_errors.setdefault(device_id, []).append(error)

    def fault(self, device_id: str, error: DeviceError) -> None:
        raise AssertionError(f"unexpected fault of {device_id}: {error}")

    def of(self, device_id: str, event_type: str) -> list[Event]:
        return [e for e in self.events if e.device == device_id and e.type == event_type]


class Sink:
    """The StreamSink the bus calls, keeping everything in a Recorder."""

    def __init__(self, recorder: Recorder) -> None:
        self.r = recorder

    def sample(self, device_id: str, values: Sample, ts: datetime) -> None:
        self.r.sample(device_id, values, ts)

    def online(self, device_id: str, ts: datetime) -> None:
        self.r.online.add(device_id)

    def offline(self, device_id: str, error: DeviceError, ts: datetime) -> None:
        self.r.offline(device_id, error, ts)

    def fault(self, device_id: str, error: DeviceError) -> None:
        self.r.fault(device_id, error)


@contextmanager
def reader_line(readers: list[SimReader]) -> Iterator[tuple[PtyPair, ReaderLine]]:
    with PtyPair() as pty, ReaderLine(pty.a, 9600, readers) as line:
        yield pty, line


def readers_on(
    pty: PtyPair, addresses: list[int], profile: DeviceProfile = PROFILE
) -> list[AgentDevice]:
    return [
        AgentDevice(f"reader-{n}", profile, parse_address(f"osdp://{pty.b}?address={n}"), 0.2)
        for n in addresses
    ]


@asynccontextmanager
async def running(
    devices: list[AgentDevice], sink: type[Sink] = Sink, **settings: object
) -> AsyncIterator[tuple[OsdpBus, Recorder]]:
    options: dict[str, object] = {
        "card_hash_key": CARD_KEY,
        "scbk": {d.device_id: KEY.hex() for d in devices},
    }
    options.update(settings)
    bus = driver_for("osdp").open(devices[0].address, devices, DriverOptions(settings=options))
    assert isinstance(bus, OsdpBus)
    recorder = Recorder({d.device_id: d for d in devices})
    stop = asyncio.Event()
    task = asyncio.create_task(bus.run(sink(recorder), stop))
    try:
        yield bus, recorder
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def test_card_reads_become_hashed_access_events_and_doors_are_watched() -> None:
    with reader_line([SimReader(1, scbk=KEY)]) as (pty, line):
        devices = readers_on(pty, [1], quick_profile())
        async with running(devices) as (_bus, seen):
            await until("reader online", 5, lambda: "reader-1" in seen.online)
            line.grant(1, CARD, open_s=0.3)
            await until("access granted", 5, lambda: seen.of("reader-1", "access.granted"))
            await until("lock relocked", 5, lambda: seen.samples[-1][1].get("lock_released") == 0)
            line.deny(1, CARD + 1)
            await until("access denied", 5, lambda: seen.of("reader-1", "access.denied"))
            line.force_door(1, open_s=0.5)
            await until("forced open", 5, lambda: seen.of("reader-1", "door.forced_open"))
            await until("closed", 5, lambda: seen.of("reader-1", "door.closed"))
            line.hold_door(1, open_s=2.0)
            await until("held open", 8, lambda: seen.of("reader-1", "door.held_open"))
    granted = seen.of("reader-1", "access.granted")
    denied = seen.of("reader-1", "access.denied")
    assert granted[0].data.card_hash
    assert len(granted[0].data.card_hash) == 16
    assert denied[0].data.card_hash not in (None, granted[0].data.card_hash)
    assert not seen.of("reader-1", "door.forced_open")[1:], "a granted door is not forced"
    text = json.dumps([values for _, values in seen.samples])
    for secret in (str(CARD), f"{CARD:x}", str(CARD + 1)):
        assert secret not in text


async def test_keypad_pin_tamper_and_power_reports() -> None:
    with reader_line([SimReader(1, scbk=KEY)]) as (pty, line):
        async with running(readers_on(pty, [1])) as (_bus, seen):
            await until("reader online", 5, lambda: "reader-1" in seen.online)
            line.key_in(1, "4711#")
            line.tamper(1, True)
            line.power_fault(1, True)
            await until("tamper", 5, lambda: seen.of("reader-1", "device.tamper"))
            await until("power fault", 5, lambda: seen.of("reader-1", "device.power_fault"))
            await until("pin", 5, lambda: any("pin" in v for _, v in seen.samples))
    pins = [values["pin"] for _, values in seen.samples if "pin" in values]
    assert pins
    assert "4711" not in json.dumps(pins)


async def test_a_wrong_key_is_reported_once_and_spares_the_other_readers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edge.drivers.osdp")
    readers = [SimReader(1, scbk=KEY), SimReader(2, scbk=WRONG_KEY)]
    with reader_line(readers) as (pty, line):
        async with running(readers_on(pty, [1, 2])) as (_bus, seen):
            await until("key mismatch", 5, lambda: "reader-2" in seen.offline_errors)
            await until("reader 1 online", 5, lambda: "reader-1" in seen.online)
            line.grant(1, CARD, open_s=0.2)
            await until("reader 1 still works", 5, lambda: seen.of("reader-1", "access.granted"))
    (error,) = seen.offline_errors["reader-2"]
    assert error.kind == "secure_channel"
    assert "reader-2" in error.problem
    assert "drivers.osdp.scbk.reader-2" in error.problem
    warnings = [r for r in caplog.records if "reader-2" in r.getMessage() and r.levelno >= 30]
    assert len(warnings) == 1
    assert KEY.hex() not in caplog.text
    assert WRONG_KEY.hex() not in caplog.text
    assert "reader-1" not in seen.offline_errors


async def test_a_silenced_reader_goes_offline_and_comes_back() -> None:
    with reader_line([SimReader(1, scbk=KEY), SimReader(2, scbk=KEY)]) as (pty, line):
        async with running(readers_on(pty, [1, 2])) as (_bus, seen):
            await until("both online", 5, lambda: seen.online == {"reader-1", "reader-2"})
            line.silence(2)
            await until("reader 2 offline", 20, lambda: "reader-2" not in seen.online)
            assert "reader-1" in seen.online
            line.silence(2, False)
            await until("reader 2 back", 20, lambda: "reader-2" in seen.online)
    (error,) = seen.offline_errors["reader-2"]
    assert error.kind == "timeout"
    assert "reader-2" in error.problem


async def test_led_and_buzzer_writes_reach_the_reader() -> None:
    with reader_line([SimReader(3, scbk=KEY)]) as (pty, line):
        (device,) = readers_on(pty, [3])
        async with running([device]) as (bus, seen):
            await until("reader online", 5, lambda: "reader-3" in seen.online)
            await bus.write(device, PROFILE.point("led"), 2)
            await bus.write(device, PROFILE.point("buzzer"), 3)

            def received() -> bool:
                commands = line.commands(3)
                return any(c.get("on_color") == 2 for c in commands) and any(
                    c.get("rep_count") == 3 for c in commands
                )

            await until("LED and buzzer commands at the reader", 5, received)


async def test_line_statistics_count_polls_and_time_the_cycle() -> None:
    readers = [SimReader(n, scbk=KEY) for n in (1, 2, 3, 4)]
    with reader_line(readers) as (pty, _line):
        async with running(readers_on(pty, [1, 2, 3, 4])) as (bus, seen):
            await until("all online", 8, lambda: len(seen.online) == 4)
            bus.reset_stats()

            def polled() -> bool:
                stats = bus.stats()
                return stats is not None and all(
                    stats.readers.get(n) and stats.readers[n].polls >= 10 for n in (1, 2, 3, 4)
                )

            await until("ten polls each", 10, polled)
            stats = bus.stats()
    assert stats is not None
    assert stats.bytes_out > 0
    assert stats.bytes_in > 0
    assert stats.cycle_s is not None
    assert stats.cycle_s > 0


async def test_scan_finds_readers_without_their_keys() -> None:
    readers = [SimReader(3, scbk=KEY), SimReader(7), SimReader(15, scbk=WRONG_KEY)]
    with reader_line(readers) as (pty, _line):
        driver = driver_for("osdp")
        tried: list[str] = []

        def progress(candidate: str, hit: ScanHit | None) -> None:
            tried.append(candidate)

        hits = await driver.scan(
            parse_address(f"osdp://{pty.b}"),
            driver.candidates("0-20"),
            [PROFILE],
            DriverOptions(timeout_s=0.1),
            progress,
        )
    assert tried == [str(n) for n in range(21)]
    assert [hit.address.unit for hit in hits] == [3, 7, 15]
    assert all(hit.suggestions == [PROFILE.id] for hit in hits)
    assert "serial 52000007" in hits[1].detail


def anju(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ANJU, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_cli_scan_and_test_a_reader() -> None:
    with reader_line([SimReader(5, scbk=KEY), SimReader(9)]) as (pty, line):
        scan = anju(
            "device", "scan", "osdp", "--address", f"osdp://{pty.b}?baud=9600",
            "--candidates", "0-10", "--timeout", "0.1", "--json",
        )  # fmt: skip
        assert scan.returncode == 0, scan.stderr
        assert [hit["address"] for hit in json.loads(scan.stdout)["found"]] == [
            f"osdp://{pty.b}?address=5&baud=9600",
            f"osdp://{pty.b}?address=9&baud=9600",
        ]
        line.set_input(5, 0, True)
        test = anju(
            "device", "test", "--profile", PROFILE.id,
            "--address", f"osdp://{pty.b}?address=5", "--raw",
            env={"ANJU_OSDP_SCBK": KEY.hex()},
        )  # fmt: skip
        assert test.returncode == 0, test.stderr
        assert "secure channel" in test.stdout
        assert "active" in test.stdout
        assert "door_open" in test.stdout
        wrong = anju(
            "device", "test", "--profile", PROFILE.id,
            "--address", f"osdp://{pty.b}?address=5",
            env={"ANJU_OSDP_SCBK": WRONG_KEY.hex()},
        )  # fmt: skip
        assert wrong.returncode == 1
        assert "another key" in wrong.stderr + wrong.stdout
        assert WRONG_KEY.hex() not in wrong.stderr + wrong.stdout


async def test_a_port_that_fails_is_opened_again(tmp_path: Path) -> None:
    """A USB adapter pulled and plugged back: every reader offline, then back by itself."""
    readers = [SimReader(1, scbk=KEY), SimReader(2, scbk=KEY)]
    with PtyPair(directory=tmp_path) as pty:
        devices = readers_on(pty, [1, 2])
        async with running(devices) as (bus, seen):
            with ReaderLine(pty.a, 9600, readers):
                await until("readers online", 5, lambda: len(seen.online) == 2)
                pty.stop()  # pulled while the readers still answer
                await until("offline", 5, lambda: not seen.online)
            with PtyPair(directory=tmp_path) as again, ReaderLine(again.a, 9600, readers):
                await until("back online", 10, lambda: len(seen.online) == 2)
    # The first news of each reader is the port; a reader may time out after, while the
    # port is back and the readers are not yet.
    assert {errors[0].kind for errors in seen.offline_errors.values()} == {"disconnected"}
    assert bus.stats() is None  # closed with the bus


def line_stats(bus: OsdpBus) -> tuple[int, int]:
    """(bad bytes, dropped packets) of the bus's line so far."""
    stats = bus.stats()
    assert stats is not None
    return stats.bad_bytes, stats.dropped_packets


async def test_noise_and_bad_replies_are_dropped_and_counted_and_readers_stay_online() -> None:
    """A fake packet start (53 00 00 04: 1024 bytes said to follow), random noise, a
    reply with a bad CRC and one cut short: each is counted, none holds back the
    replies after it, and no reader is reported offline (on the secure channel a lost
    reply costs a new session, within ``LOST_GRACE_S``)."""
    readers = [SimReader(1, scbk=KEY), SimReader(2, scbk=KEY)]
    with PtyPair() as pty, ReaderLine(pty.a, 9600, readers, seed=1) as line:
        async with running(readers_on(pty, [1, 2])) as (bus, seen):
            await until("both online", 5, lambda: seen.online == {"reader-1", "reader-2"})
            bus.reset_stats()
            wire = os.open(pty.a, os.O_WRONLY | os.O_NOCTTY)
            try:
                os.write(wire, bytes.fromhex("53 00 00 04"))
            finally:
                os.close(wire)
            await until("fake start counted", 5, lambda: line_stats(bus)[0] >= 4)
            line.noise(40)
            await until("noise counted", 5, lambda: line_stats(bus)[0] >= 44)
            dropped = line_stats(bus)[1]
            line.corrupt_next(1)
            await until("bad CRC counted", 5, lambda: line_stats(bus)[1] > dropped)
            dropped = line_stats(bus)[1]
            line.truncate_next(2)
            await until("cut reply counted", 5, lambda: line_stats(bus)[1] > dropped)
            line.grant(1, CARD, open_s=0.2)
            line.grant(2, CARD, open_s=0.2)
            await until("reader 1 grants", 8, lambda: seen.of("reader-1", "access.granted"))
            await until("reader 2 grants", 8, lambda: seen.of("reader-2", "access.granted"))
    assert seen.offline_errors == {}
    assert seen.online == {"reader-1", "reader-2"}


class FailingSink(Sink):
    """A sink that fails on every card's sample, as a bug downstream would."""

    def sample(self, device_id: str, values: Sample, ts: datetime) -> None:
        if "card" in values:
            raise ValueError("downstream failed")
        super().sample(device_id, values, ts)


async def test_a_report_that_fails_on_the_loop_is_counted_and_logged_without_the_card(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with reader_line([SimReader(1, scbk=KEY)]) as (pty, line):
        async with running(readers_on(pty, [1]), sink=FailingSink) as (bus, seen):
            await until("reader online", 5, lambda: "reader-1" in seen.online)
            line.present_card(1, CARD)
            await until("the card's report failed", 5, lambda: bus.failures >= 1)
            line.present_card(1, CARD + 1)
            await until("the next one too: the bus goes on", 5, lambda: bus.failures >= 2)
    assert not [r for r in caplog.records if r.name == "asyncio"], "no callback with its args"
    card_bytes = (CARD << 6).to_bytes(4, "big")  # 26 bits, left-justified
    for secret in (str(CARD), card_bytes.hex(), repr(card_bytes)[2:-1]):
        assert secret not in caplog.text
    skipped = [r for r in caplog.records if "was skipped" in r.getMessage()]
    assert len(skipped) == 1
    assert "CardRead" in skipped[0].getMessage()
    assert "ValueError" in skipped[0].getMessage()


def led(colour: int) -> dict[str, object]:
    return {
        "command": CMD_LED, "reader": 0, "led_number": 0, "control_code": 1, "on_count": 1,
        "off_count": 0, "on_color": colour, "off_color": colour, "timer_count": 0,
        "temporary": False,
    }  # fmt: skip


def test_a_command_given_up_before_the_panel_sends_it_never_reaches_the_reader() -> None:
    """A write that timed out cancels its future; the panel must then drop the command
    (the reader would act on it late, and again on the caller's retry)."""
    futures: list[Future[bool]] = []
    with reader_line([SimReader(1, scbk=KEY)]) as (pty, line):
        panel: Panel

        def on_event(event: PanelEvent) -> None:
            # On the panel's thread, inside a refresh: it drains no command until this
            # returns, so the first is surely cancelled before the thread reaches it.
            if isinstance(event, Online) and not futures:
                futures.append(panel.submit(1, led(5)))
                futures[0].cancel()
                futures.append(panel.submit(1, led(2)))

        panel = Panel(
            SerialChannel(open_port(pty.b, 9600)),
            [ReaderSetup(1, "reader-1", Secret(KEY))],
            on_event,
            baud=9600,
            name="test",
        )
        panel.start()
        try:
            deadline = time.monotonic() + 5
            while not any(c.get("on_color") == 2 for c in line.commands(1)):
                assert time.monotonic() < deadline, "the second LED command at the reader"
                time.sleep(0.05)
        finally:
            panel.stop()
        colours = [c.get("on_color") for c in line.commands(1)]
    assert futures[0].cancelled()
    assert futures[1].result(timeout=0) is True
    assert 5 not in colours


def test_a_stopped_panel_stops_again_and_writes_into_no_reused_descriptor() -> None:
    with reader_line([SimReader(1)]) as (pty, _line):
        events: queue.SimpleQueue[PanelEvent] = queue.SimpleQueue()
        panel = Panel(
            SerialChannel(open_port(pty.b, 9600)),
            [ReaderSetup(1, "reader-1")],
            events.put,
            baud=9600,
            name="test",
        )
        panel.start()
        assert isinstance(events.get(timeout=5), Online)
        panel.stop()
        panel.stop()
        read_end, write_end = os.pipe()  # likely the numbers the panel's pipe had
        try:
            os.set_blocking(read_end, False)
            late = panel.submit(1, {"command": CMD_BUZZER})
            assert late.result(timeout=1) is False
            with pytest.raises(BlockingIOError):
                os.read(read_end, 16)
        finally:
            os.close(read_end)
            os.close(write_end)
        # The port is closed with the panel: a new one can have it at once (exclusive).
        open_port(pty.b, 9600).close()


def test_a_line_refuses_two_readers_at_one_address_or_two_bauds() -> None:
    def devices(*urls: str) -> list[AgentDevice]:
        return [
            AgentDevice(f"reader-{n}", PROFILE, parse_address(url), 0.2)
            for n, url in enumerate(urls)
        ]

    options = DriverOptions(settings={"card_hash_key": CARD_KEY, "allow_plain": True})
    same_address = devices("osdp:///dev/ttyS9?address=3", "osdp:///dev/ttyS9?address=3")
    with pytest.raises(ConfigError, match="reader-0 and reader-1 are both at OSDP address 3"):
        driver_for("osdp").open(same_address[0].address, same_address, options)
    two_bauds = devices("osdp:///dev/ttyS9?address=1", "osdp:///dev/ttyS9?address=2&baud=19200")
    with pytest.raises(ConfigError, match="reader-0 is at 9600 baud and reader-1 at 19200"):
        driver_for("osdp").open(two_bauds[0].address, two_bauds, options)
