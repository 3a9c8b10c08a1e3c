"""Access, forced entry and held doors as the gateway works them out from a reader's
card reads and its two door inputs (contact 0, lock-release sense 1)."""

from edge.drivers.osdp.door import Access, Door, Forced

CONTACT, RELEASE = 0, 1


def door(window_s: float = 1.5) -> Door:
    return Door(contact_input=CONTACT, release_input=RELEASE, grant_window_s=window_s)


def test_a_release_within_the_window_grants_at_once() -> None:
    d = door()
    assert d.credential("c1", now=10.0) == []
    assert d.inputs({RELEASE: True}, now=10.4) == [Access("granted", "c1")]
    assert d.inputs({CONTACT: True}, now=10.9) == [], "a released door is not forced"
    assert d.due(now=99.0) == []


def test_no_release_by_the_end_of_the_window_is_denied() -> None:
    d = door()
    d.credential("c1", now=10.0)
    assert d.due(now=11.4) == []
    assert d.next_due == 11.5
    assert d.due(now=11.5) == [Access("denied", "c1")]
    assert d.inputs({RELEASE: True}, now=11.6) == [], "a late release grants nothing"


def test_a_second_card_decides_the_first_as_denied() -> None:
    d = door()
    d.credential("c1", now=10.0)
    assert d.credential("c2", now=10.5) == [Access("denied", "c1")]
    assert d.inputs({RELEASE: True}, now=10.7) == [Access("granted", "c2")]


def test_a_card_while_the_strike_is_released_is_granted() -> None:
    d = door()
    d.inputs({RELEASE: True}, now=5.0)
    assert d.credential("c1", now=5.5) == [Access("granted", "c1")]


def test_opening_without_release_is_forced_until_it_closes() -> None:
    d = door()
    assert d.inputs({CONTACT: True, RELEASE: False}, now=1.0) == [Forced(True)]
    assert d.inputs({CONTACT: True, RELEASE: False}, now=1.5) == [], "reported once"
    assert d.inputs({CONTACT: False, RELEASE: False}, now=3.0) == [Forced(False)]


def test_release_and_contact_in_one_report_read_release_first() -> None:
    d = door()
    d.credential("c1", now=1.0)
    assert d.inputs({CONTACT: True, RELEASE: True}, now=1.2) == [Access("granted", "c1")]
    assert not d.forced


def test_a_reader_without_a_release_input_decides_nothing() -> None:
    d = Door(contact_input=CONTACT, release_input=None, grant_window_s=1.0)
    assert d.credential("c1", now=1.0) == []
    assert d.inputs({CONTACT: True}, now=1.5) == []
    assert d.due(now=10.0) == []
