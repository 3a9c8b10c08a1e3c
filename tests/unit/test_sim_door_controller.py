"""The AC-MB210 door controller's register image, with a hand-driven clock.

Expected words come from the register map in device_profiles/door/anju-door-mb.yaml,
and card hashes from HMAC-SHA-256 computed here, not with the simulator's helpers.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from firmware_sim import IllegalDataAddress, IllegalDataValue
from firmware_sim.door_controller import DenyReason, DoorController, EventCode
from firmware_sim.models import get_model

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
KEY = b"site-key-xijin"
OPEN, LOCKED, FORCED, HELD = 0x01, 0x02, 0x04, 0x08
TAMPER, READER_OFFLINE, MAINS_FAILED, FIRE = 0x10, 0x20, 0x40, 0x80


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def door(clock: Clock) -> DoorController:
    return DoorController(serial_number=0x01408F21, firmware=(2, 4), site_key=KEY, clock=clock)


def _hash_words(card: str) -> list[int]:
    digest = hmac.new(KEY, card.encode(), hashlib.sha256).digest()[:4]
    return [int.from_bytes(digest[:2], "big"), int.from_bytes(digest[2:], "big")]


def _time_words(unix: int) -> list[int]:
    return [unix >> 16, unix & 0xFFFF]


def _newest(door: DoorController) -> list[int]:
    return door.read_input_registers(16, 7)


def test_factory_register_image(door: DoorController) -> None:
    assert door.read_input_registers(0, 23) == [
        LOCKED,
        0,
        0x0140,
        0x8F21,
        0x0204,
        *[0] * 11,
        0,  # event counter
        *[0] * 6,
    ]
    assert door.read_input_registers(256, 128) == [0] * 128
    assert door.read_holding_registers(100, 2) == [30, 0]


def test_granted_card_records_a_hashed_event_and_pulses_the_strike(
    door: DoorController, clock: Clock
) -> None:
    clock.advance(7)
    door.present_card("04:A2:19:7C", granted=True)
    assert _newest(door) == [1, 1, *_hash_words("04:A2:19:7C"), *_time_words(T0 + 7), 0]
    assert door.read_input_registers(0, 1) == [0], "the strike is released, not locked"
    assert door.read_holding_registers(101, 1) == [5]
    door.open_door()
    assert door.read_input_registers(0, 1) == [OPEN], "an opening after a grant is not forced"
    door.close_door()
    clock.advance(5)
    assert door.read_input_registers(0, 1) == [LOCKED]
    assert door.read_holding_registers(101, 1) == [0]
    assert "04:A2:19:7C" not in str(door.input_registers())


def test_denied_card_records_the_reason_and_stays_locked(door: DoorController) -> None:
    door.present_card("1234567", granted=False, reason=DenyReason.EXPIRED_OR_REVOKED)
    assert _newest(door) == [1, 2, *_hash_words("1234567"), *_time_words(T0), 3]
    assert door.read_input_registers(0, 1) == [LOCKED]
    door.present_card("7654321", granted=False)
    assert _newest(door)[0:2] == [2, 2]
    assert _newest(door)[-1] == 1, "an unknown card by default"


def test_forced_open_latches_until_the_door_closes(door: DoorController, clock: Clock) -> None:
    door.open_door()
    assert door.read_input_registers(0, 2) == [OPEN | FORCED, 0]
    assert _newest(door) == [1, 5, 0, 0, *_time_words(T0), 0]
    clock.advance(3)
    assert door.read_input_registers(0, 2) == [OPEN | FORCED, 3]
    door.close_door()
    assert door.read_input_registers(0, 2) == [LOCKED, 0]


def test_held_open_after_the_limit(door: DoorController, clock: Clock) -> None:
    door.write_holding_registers(100, [10])
    door.press_exit_button()
    assert _newest(door)[0:2] == [1, 3]
    door.open_door()
    clock.advance(9)
    assert door.read_input_registers(0, 2) == [OPEN, 9]
    clock.advance(1)
    assert door.read_input_registers(0, 2) == [OPEN | HELD, 10]
    assert _newest(door) == [2, 6, 0, 0, *_time_words(T0 + 10), 0]
    clock.advance(100)
    assert door.event_count == 2, "held open is recorded once per opening"
    door.close_door()
    assert door.read_input_registers(0, 2) == [LOCKED, 0]


def test_locked_needs_the_door_closed(door: DoorController, clock: Clock) -> None:
    door.present_card("card", granted=True)
    door.open_door()
    clock.advance(6)
    assert door.read_input_registers(0, 1) == [OPEN], "the bolt cannot engage an open door"
    door.close_door()
    assert door.read_input_registers(0, 1) == [LOCKED]


def test_unlock_pulse_register(door: DoorController, clock: Clock) -> None:
    door.write_holding_registers(101, [10])
    assert door.read_holding_registers(101, 1) == [10]
    assert _newest(door)[0:2] == [1, 4]
    clock.advance(3.5)
    assert door.read_holding_registers(101, 1) == [7]
    door.write_holding_registers(101, [0])
    assert door.read_holding_registers(101, 1) == [0]
    assert door.read_input_registers(0, 1) == [LOCKED]
    assert door.event_count == 1, "relocking records no event"


@pytest.mark.parametrize(("address", "value"), [(100, 4), (100, 601), (101, 256)])
def test_out_of_range_writes_are_refused(door: DoorController, address: int, value: int) -> None:
    with pytest.raises(IllegalDataValue) as excinfo:
        door.write_holding_registers(address, [value])
    assert excinfo.value.address == address
    assert door.read_holding_registers(100, 2) == [30, 0]


def test_unmapped_registers_are_refused(door: DoorController) -> None:
    with pytest.raises(IllegalDataAddress):
        door.read_input_registers(23, 1)
    with pytest.raises(IllegalDataAddress):
        door.read_input_registers(383, 2)
    with pytest.raises(IllegalDataAddress):
        door.write_holding_registers(101, [0, 0])


def test_fire_release_holds_the_strike_until_reset(door: DoorController) -> None:
    door.fire_release()
    assert door.read_input_registers(0, 1) == [FIRE]
    assert _newest(door)[0:2] == [1, 7]
    door.write_holding_registers(101, [0])
    door.open_door()
    assert door.read_input_registers(0, 1) == [OPEN | FIRE], "no forced open under fire release"
    door.close_door()
    door.reset_fire_release()
    assert door.read_input_registers(0, 1) == [LOCKED]


def test_status_bits_for_tamper_reader_and_mains(door: DoorController) -> None:
    door.set_tamper(True)
    door.set_reader_offline(True)
    door.set_mains_failed(True)
    assert door.read_input_registers(0, 1) == [LOCKED | TAMPER | READER_OFFLINE | MAINS_FAILED]


def test_ring_buffer_keeps_the_last_sixteen(door: DoorController, clock: Clock) -> None:
    for n in range(1, 21):
        clock.advance(1)
        door.present_card(f"card-{n}", granted=n % 2 == 0)
        door.write_holding_registers(101, [0])
    assert door.read_input_registers(16, 1) == [20]
    for n in range(5, 21):
        slot = (n - 1) % 16
        words = door.read_input_registers(256 + slot * 8, 8)
        assert words == [
            1 if n % 2 == 0 else 2,
            *_hash_words(f"card-{n}"),
            *_time_words(T0 + n),
            0 if n % 2 == 0 else 1,
            0,
            0,
        ]
    assert _newest(door)[1:] == door.read_input_registers(256 + 3 * 8, 6)
    events = door.events()
    assert len(events) == 16
    assert [e.time - T0 for e in events] == list(range(5, 21))


def test_event_counter_wraps_to_zero(door: DoorController) -> None:
    for _ in range(65535):
        door.press_exit_button()
    assert door.read_input_registers(16, 1) == [65535]
    door.present_card("last", granted=False)
    assert door.read_input_registers(16, 2) == [0, EventCode.ACCESS_DENIED]
    assert door.read_input_registers(256 + 15 * 8, 1) == [EventCode.ACCESS_DENIED]


def test_power_cycle_keeps_settings_and_loses_ram(door: DoorController) -> None:
    door.write_holding_registers(100, [45])
    door.write_holding_registers(101, [60])
    door.power_cycle()
    assert door.read_holding_registers(100, 2) == [45, 0]
    assert door.read_input_registers(0, 1) == [LOCKED]
    assert _newest(door) == [0] * 7
    assert door.events() == []


def test_registry_knows_the_door_profile() -> None:
    entry = get_model("anju-door-mb")
    assert entry.model == "AC-MB210"
    assert entry.kind == "door"
    assert isinstance(entry.create(), DoorController)
