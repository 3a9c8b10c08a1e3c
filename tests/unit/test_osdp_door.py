"""Access, forced entry and PINs as the gateway works them out from a reader's card
reads, its key presses and its door inputs (contact 0, lock-release sense 1, request to
exit 2)."""

from pathlib import Path

import pytest

from edge.addresses import parse_address
from edge.devices import AgentDevice
from edge.drivers.osdp.credentials import pin_hash
from edge.drivers.osdp.door import Access, Door, Forced
from edge.drivers.osdp.panel import STATUS_INPUT, KeyPress, Status
from edge.drivers.osdp.reader import CLEAR, ENTER, MAX_PIN_DIGITS, ReaderState, Values
from edge.drivers.osdp.settings import Secret
from schemas.profile import load_profiles
from schemas.protocols.osdp import OsdpSettings

CONTACT, RELEASE, REX = 0, 1, 2
CLOSED_LOCKED = {CONTACT: False, RELEASE: False}
KEY = Secret(bytes(range(32)))
PROFILE = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")["anju-osdp-reader"]


def door(*, rex_input: int | None = None, pin_window_s: float | None = None) -> Door:
    return Door(
        contact_input=CONTACT,
        release_input=RELEASE,
        rex_input=rex_input,
        grant_window_s=1.5,
        pin_window_s=pin_window_s,
    )


def watched(*, pin_window_s: float | None = None) -> Door:
    """A door whose inputs have been reported once (closed and locked)."""
    d = door(pin_window_s=pin_window_s)
    assert d.inputs(CLOSED_LOCKED, now=0.0) == []
    return d


def test_a_release_within_the_window_grants_at_once() -> None:
    d = watched()
    assert d.credential("c1", now=10.0) == []
    assert d.inputs({RELEASE: True}, now=10.4) == [Access("granted", "c1")]
    assert d.inputs({CONTACT: True}, now=10.9) == [], "a released door is not forced"
    assert d.due(now=99.0) == []


def test_no_release_by_the_end_of_the_window_is_denied() -> None:
    d = watched()
    d.credential("c1", now=10.0)
    assert d.due(now=11.4) == []
    assert d.next_due == 11.5
    assert d.due(now=11.5) == [Access("denied", "c1")]
    assert d.inputs({RELEASE: True}, now=11.6) == [], "a late release grants nothing"


def test_a_second_card_decides_the_first_as_denied() -> None:
    d = watched()
    d.credential("c1", now=10.0)
    assert d.credential("c2", now=10.5) == [Access("denied", "c1")]
    assert d.inputs({RELEASE: True}, now=10.7) == [Access("granted", "c2")]


def test_the_same_card_twice_in_the_window_is_one_decision() -> None:
    d = watched()
    assert d.credential("c1", now=10.0) == []
    assert d.credential("c1", now=10.6) == [], "held to the reader again: no denial"
    assert d.inputs({RELEASE: True}, now=11.0) == [Access("granted", "c1")]
    assert d.credential("c1", now=11.3) == [], "again once granted: nothing new"
    assert d.due(now=20.0) == []


def test_the_same_card_twice_without_a_release_is_denied_once() -> None:
    d = watched()
    d.credential("c1", now=10.0)
    assert d.credential("c1", now=11.0) == []
    assert d.due(now=12.4) == []
    assert d.due(now=12.5) == [Access("denied", "c1")]
    assert d.due(now=30.0) == []


def test_card_then_pin_is_one_decision_naming_the_card() -> None:
    d = watched()
    d.credential("card", now=10.0)
    assert d.credential("pin", now=11.0, pin=True) == []
    assert d.inputs({RELEASE: True}, now=12.2) == [Access("granted", "card")]
    assert d.due(now=30.0) == []


def test_a_pin_window_waits_for_a_slow_pin() -> None:
    d = watched(pin_window_s=10.0)
    d.credential("card", now=10.0)
    assert d.due(now=15.0) == [], "the card waits for its PIN"
    d.credential("pin", now=15.0, pin=True)
    assert d.inputs({RELEASE: True}, now=15.3) == [Access("granted", "card")]


def test_a_pin_alone_is_decided_in_the_grant_window() -> None:
    d = watched(pin_window_s=10.0)
    d.credential("pin", now=10.0, pin=True)
    assert d.due(now=11.5) == [Access("denied", "pin")]


def test_a_card_just_after_the_release_is_granted_by_it() -> None:
    # The door controller reads the card on its own port: it may release before the
    # reader's report of the card reaches the gateway.
    d = watched()
    d.inputs({RELEASE: True}, now=5.0)
    assert d.credential("c1", now=5.2) == [Access("granted", "c1")]


def test_one_release_grants_one_credential() -> None:
    d = watched()
    d.credential("a", now=10.0)
    assert d.inputs({RELEASE: True}, now=10.3) == [Access("granted", "a")]
    assert d.credential("b", now=10.8) == [], "B rides on A's release"
    assert d.due(now=12.3) == [Access("denied", "b")]


def test_a_release_of_its_own_grants_a_credential_during_another() -> None:
    d = watched()
    d.credential("a", now=10.0)
    d.inputs({RELEASE: True}, now=10.3)
    d.credential("b", now=10.8)
    d.inputs({RELEASE: False}, now=11.0)
    assert d.inputs({RELEASE: True}, now=11.2) == [Access("granted", "b")]


def test_a_card_long_into_a_held_release_is_not_granted_by_it() -> None:
    d = watched()
    d.inputs({RELEASE: True}, now=5.0)
    assert d.credential("c1", now=60.0) == []
    assert d.due(now=61.5) == [Access("denied", "c1")]


def test_opening_without_release_is_forced_until_it_closes() -> None:
    d = watched()
    assert d.inputs({CONTACT: True, RELEASE: False}, now=1.0) == [Forced(True)]
    assert d.inputs({CONTACT: True, RELEASE: False}, now=1.5) == [], "reported once"
    assert d.inputs({CONTACT: False, RELEASE: False}, now=3.0) == [Forced(False)]


def test_a_door_open_when_first_reported_is_not_forced() -> None:
    d = door()
    assert d.inputs({CONTACT: True, RELEASE: False}, now=1.0) == [], "the baseline"
    assert not d.forced
    assert d.inputs({CONTACT: False, RELEASE: False}, now=5.0) == []
    assert d.inputs({CONTACT: True, RELEASE: False}, now=9.0) == [Forced(True)]


def test_the_contact_alone_is_not_forced_while_the_release_is_unknown() -> None:
    d = door()
    d.inputs({CONTACT: False}, now=1.0)
    assert d.inputs({CONTACT: True}, now=2.0) == []


def test_offline_makes_the_inputs_unknown_again() -> None:
    d = watched()
    d.offline()
    assert d.open is None
    assert d.released is None
    assert d.inputs({CONTACT: True, RELEASE: False}, now=5.0) == [], "a new baseline"
    assert d.inputs({CONTACT: False, RELEASE: False}, now=6.0) == []


def test_a_forced_door_that_closed_while_offline_is_closed_on_its_next_report() -> None:
    d = watched()
    assert d.inputs({CONTACT: True}, now=1.0) == [Forced(True)]
    d.offline()
    assert d.inputs({CONTACT: False, RELEASE: False}, now=9.0) == [Forced(False)]


def test_release_and_contact_in_one_report_read_release_first() -> None:
    d = watched()
    d.credential("c1", now=1.0)
    assert d.inputs({CONTACT: True, RELEASE: True}, now=1.2) == [Access("granted", "c1")]
    assert not d.forced


def test_a_request_to_exit_before_the_door_opens_is_not_forced() -> None:
    d = door(rex_input=REX)
    d.inputs({**CLOSED_LOCKED, REX: False}, now=0.0)
    d.inputs({REX: True}, now=10.0)
    d.inputs({REX: False}, now=10.5)
    assert d.inputs({CONTACT: True}, now=13.0) == [], "someone leaving"
    assert d.inputs({CONTACT: False}, now=15.0) == []
    assert d.inputs({CONTACT: True}, now=30.0) == [Forced(True)], "long after the button"


def test_exit_request_and_opening_in_one_report_is_an_exit() -> None:
    d = door(rex_input=REX)
    d.inputs({**CLOSED_LOCKED, REX: False}, now=0.0)
    assert d.inputs({CONTACT: True, RELEASE: False, REX: True}, now=4.0) == []


def test_without_a_rex_input_free_egress_reads_as_forced() -> None:
    d = watched()
    d.inputs({REX: True}, now=10.0)  # wired, but not configured as the exit request
    assert d.inputs({CONTACT: True}, now=10.5) == [Forced(True)]


def test_the_exit_input_must_be_another_input() -> None:
    assert OsdpSettings(rex_input=2).rex_input == 2
    assert OsdpSettings().rex_input is None, "no exit button unless wired"
    with pytest.raises(ValueError, match="door_contact_input and rex_input must be different"):
        OsdpSettings(rex_input=0)


def test_a_reader_without_a_release_input_decides_nothing() -> None:
    d = Door(contact_input=CONTACT, release_input=None, grant_window_s=1.0)
    assert d.credential("c1", now=1.0) == []
    assert d.inputs({CONTACT: False}, now=1.2) == []
    assert d.inputs({CONTACT: True}, now=1.5) == []
    assert d.due(now=10.0) == []


# --- the keypad, through a reader of the reference profile ------------------------


@pytest.fixture
def reader() -> ReaderState:
    device = AgentDevice(
        "reader-1", PROFILE, parse_address("osdp:///dev/ttyS9?address=1"), PROFILE.poll_interval_s
    )
    state = ReaderState(device, KEY)
    state.status(Status(1, STATUS_INPUT, b"\x00\x00\x00"), now=0.0)
    return state


def press(reader: ReaderState, keys: bytes, start: float, gap_s: float = 0.4) -> list[Values]:
    """One osdp_KEYPAD per key, as readers send them."""
    samples: list[Values] = []
    for n, key in enumerate(keys):
        samples += reader.keys(KeyPress(1, bytes([key])), start + n * gap_s)
    return samples


def pins(samples: list[Values]) -> list[object]:
    return [values["pin"] for values in samples if "pin" in values]


def test_keys_one_at_a_time_make_one_pin_at_the_enter_key(reader: ReaderState) -> None:
    samples = press(reader, b"4711", start=1.0)
    assert samples == [], "no digit is a sample"
    samples = press(reader, bytes([ENTER]), start=3.0)
    assert pins(samples) == [pin_hash(KEY, b"4711")]
    denied = reader.due(now=4.5)
    assert [values.get("access") for values in denied] == ["denied"]
    assert denied[0]["credential"] == pin_hash(KEY, b"4711")


def test_a_pause_ends_the_pin(reader: ReaderState) -> None:
    press(reader, b"4711", start=1.0)
    assert reader.due(now=6.1) == [], "5 s after the last key (at 2.2) is 7.2"
    (sample, *_) = reader.due(now=7.3)
    assert sample["pin"] == pin_hash(KEY, b"4711")


def test_the_clear_key_drops_the_digits_typed(reader: ReaderState) -> None:
    samples = press(reader, bytes([0x39, 0x39, CLEAR]) + b"4711" + bytes([ENTER]), start=1.0)
    assert pins(samples) == [pin_hash(KEY, b"4711")]


def test_enter_alone_and_function_keys_are_no_pin(reader: ReaderState) -> None:
    assert press(reader, bytes([ENTER, 0x41, ENTER]), start=1.0) == []
    assert reader.due(now=60.0) == []


def test_a_held_key_cannot_grow_the_pin(reader: ReaderState) -> None:
    samples = press(reader, b"1" * 100 + bytes([ENTER]), start=1.0, gap_s=0.01)
    assert pins(samples) == [pin_hash(KEY, b"1" * MAX_PIN_DIGITS)]


def test_a_pin_after_a_card_joins_its_decision(reader: ReaderState) -> None:
    reader.door.credential("card-hash", now=1.0)
    samples = press(reader, b"12" + bytes([ENTER]), start=1.2)
    assert pins(samples) == [pin_hash(KEY, b"12")]
    assert "access" not in samples[0], "no denial of the card"
    granted = reader.status(Status(1, STATUS_INPUT, b"\x00\x01\x00"), now=2.5)
    assert [(v.get("access"), v.get("credential")) for v in granted if "access" in v] == [
        ("granted", "card-hash")
    ]


def test_going_offline_forgets_inputs_and_digits(reader: ReaderState) -> None:
    reader.status(Status(1, STATUS_INPUT, b"\x01\x00\x00"), now=1.0)
    assert reader.inputs_now()["door_open"] == 1
    press(reader, b"47", start=2.0)
    reader.offline()
    assert reader.inputs_now() == {}, "no stale door_open re-sent"
    samples = press(reader, b"11" + bytes([ENTER]), start=3.0)
    assert pins(samples) == [pin_hash(KEY, b"11")], "the digits before are gone"
    back = reader.status(Status(1, STATUS_INPUT, b"\x01\x00\x00"), now=9.0)
    assert all("forced" not in values for values in back), "open when back: a baseline"
