"""PINs typed key by key, card-then-PIN, exits and a door open from the start, through
the OSDP driver polling simulated readers on a real pseudo-terminal.

The readers are libosdp peripheral devices behind ``firmware_sim.osdp_readers`` at
9600 baud, sending one osdp_KEYPAD per key as real readers do; samples go through the
real normaliser, so the events asserted are those the gateway would send.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

from edge.addresses import parse_address
from edge.devices import AgentDevice
from edge.drivers.contract import DriverOptions, Sample
from edge.drivers.osdp.bus import OsdpBus
from edge.drivers.osdp.credentials import pin_hash
from edge.drivers.osdp.settings import Secret
from edge.drivers.registry import driver_for
from edge.errors import DeviceError
from firmware_sim.osdp_readers import (
    DOOR_CONTACT,
    LOCK_RELEASE,
    ReaderLine,
    SimReader,
    wiegand26,
)
from firmware_sim.pty_pair import PtyPair
from schemas.profile import load_profiles
from schemas.wire import Event
from tests.waiting import until

REPO: Final = Path(__file__).resolve().parents[2]
PROFILE: Final = load_profiles(REPO / "device_profiles")["anju-osdp-reader"]
KEY: Final = bytes(range(16))
CARD_KEY: Final = bytes([0x5A] * 32)
CARD: Final = wiegand26(12, 3456)
READER: Final = "reader-1"


@dataclass
class Seen:
    """The StreamSink the bus calls: samples, normalised into events as the core does."""

    device: AgentDevice
    samples: list[dict[str, object]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    is_online: bool = False

    def sample(self, device_id: str, values: Sample, ts: datetime) -> None:
        self.samples.append(dict(values))
        self.events.extend(self.device.normaliser.normalise(values, ts)[1])

    def online(self, device_id: str, ts: datetime) -> None:
        self.is_online = True

    def offline(self, device_id: str, error: DeviceError, ts: datetime) -> None:
        self.is_online = False

    def fault(self, device_id: str, error: DeviceError) -> None:
        raise AssertionError(f"unexpected fault of {device_id}: {error}")

    def of(self, event_type: str) -> list[Event]:
        return [event for event in self.events if event.type == event_type]

    def values(self, name: str) -> list[object]:
        return [values[name] for values in self.samples if name in values]

    def changes(self, start: int, name: str) -> list[object]:
        """The changes of ``name`` in the samples from ``start`` on (repeats dropped)."""
        changes: list[object] = []
        for values in self.samples[start:]:
            if name in values and (not changes or changes[-1] != values[name]):
                changes.append(values[name])
        return changes


@contextmanager
def one_reader() -> Iterator[tuple[PtyPair, ReaderLine]]:
    with PtyPair() as pty, ReaderLine(pty.a, 9600, [SimReader(1, scbk=KEY)]) as line:
        yield pty, line


@asynccontextmanager
async def polled(pty: PtyPair) -> AsyncIterator[Seen]:
    """The driver polling reader 1 until the block ends; what it reported."""
    device = AgentDevice(READER, PROFILE, parse_address(f"osdp://{pty.b}?address=1"), 0.2)
    options = DriverOptions(settings={"card_hash_key": CARD_KEY.hex(), "scbk": {READER: KEY.hex()}})
    bus = driver_for("osdp").open(device.address, [device], options)
    assert isinstance(bus, OsdpBus)
    seen = Seen(device)
    stop = asyncio.Event()
    task = asyncio.create_task(bus.run(seen, stop))
    try:
        await until("reader online", 5, lambda: seen.is_online)
        await until("its inputs, once polled", 5, lambda: seen.values("door_open"))
        yield seen
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def test_a_pin_typed_key_by_key_is_hashed_whole() -> None:
    with one_reader() as (pty, line):
        async with polled(pty) as seen:
            line.key_in(1, "4711#")
            await until("the PIN", 5, lambda: seen.values("pin"))
            await until("its decision", 5, lambda: seen.of("access.denied"))
    pin = pin_hash(Secret(CARD_KEY), b"4711")
    assert seen.values("pin") == [pin], "one PIN, hashed whole, not one hash per key"
    (denied,) = seen.of("access.denied")
    assert denied.data.card_hash == pin
    text = json.dumps(seen.samples)
    for spelling in ("4711", b"4711".hex(), b"4711#".hex(), "4 7 1 1"):
        assert spelling not in text
    for partial in (b"4", b"47", b"471"):
        assert pin_hash(Secret(CARD_KEY), partial) not in text


async def test_card_then_pin_then_release_is_one_grant() -> None:
    with one_reader() as (pty, line):
        async with polled(pty) as seen:
            line.present_card(1, CARD)
            await until("the card", 5, lambda: seen.values("card"))
            line.key_in(1, "2580#")
            await until("the PIN", 5, lambda: seen.values("pin"))
            line.set_input(1, LOCK_RELEASE, True)
            await until("the grant", 5, lambda: seen.of("access.granted"))
            line.set_input(1, LOCK_RELEASE, False)
            await until("relocked", 5, lambda: seen.values("lock_released")[-1] == 0)
    (granted,) = seen.of("access.granted")
    assert granted.data.card_hash == seen.values("card")[0], "the decision names the card"
    assert not seen.of("access.denied")


async def test_a_door_open_from_the_start_or_opened_to_leave_is_not_forced() -> None:
    with one_reader() as (pty, line):
        line.set_input(1, DOOR_CONTACT, True)  # propped open before the gateway starts
        async with polled(pty) as seen:
            assert seen.changes(0, "door_open") == [1]
            line.set_input(1, DOOR_CONTACT, False)
            await until("closed", 5, lambda: seen.values("door_open")[-1] == 0)
            assert not seen.of("door.forced_open"), "open from the start is no intrusion"
            line.force_door(1, open_s=0.3)
            await until("forced open", 5, lambda: seen.of("door.forced_open"))
            await until("closed again", 5, lambda: seen.of("door.closed"))
            start = len(seen.samples)
            line.exit(1, open_s=0.3)
            await until("the exit", 5, lambda: 1 in seen.values("exit_request"))
            await until(
                "open, then closed", 5, lambda: seen.changes(start, "door_open")[-2:] == [1, 0]
            )
    assert len(seen.of("door.forced_open")) == 1, "leaving by the exit button is not forced"
