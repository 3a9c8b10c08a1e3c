"""``drivers.osdp``: keys validated and never shown, and the keyed hash of credentials."""

import pytest

from edge.drivers.osdp.credentials import card_hash, pin_hash
from edge.drivers.osdp.settings import Secret, parse_settings
from edge.errors import ConfigError

SCBK = "000102030405060708090a0b0c0d0e0f"
CARD_KEY = "9f" * 32


def test_settings_hold_keys_as_secrets() -> None:
    settings = parse_settings({"card_hash_key": CARD_KEY, "scbk": {"door-1": SCBK}})
    assert settings.scbk["door-1"].reveal() == bytes.fromhex(SCBK)
    shown = f"{settings!r} {settings} {settings.scbk}"
    assert SCBK not in shown
    assert CARD_KEY not in shown
    assert "hidden" in shown
    settings.require(["door-1"])


@pytest.mark.parametrize(
    ("document", "key", "problem"),
    [
        ({"scbk": {"door-1": SCBK[:-2]}}, "drivers.osdp.scbk.door-1", "30 hex digits"),
        ({"scbk": {"door-1": "zz" * 16}}, "drivers.osdp.scbk.door-1", "not hex"),
        ({"scbk": {"door-1": 1234}}, "drivers.osdp.scbk.door-1", "in quotes"),
        ({"card_hash_key": "ab" * 8}, "drivers.osdp.card_hash_key", "at least 32"),
        ({"scbk": "door-1"}, "drivers.osdp.scbk", "mapping"),
        ({"allow_plain": "yes"}, "drivers.osdp.allow_plain", "true or false"),
        ({"scbks": {}}, "drivers.osdp.scbks", "allowed keys here are card_hash_key"),
    ],
)
def test_a_bad_setting_names_its_key_and_never_its_value(
    document: dict[str, object], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(document)
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert SCBK[:-2] not in str(caught.value)
    assert "zz" * 16 not in str(caught.value)


def test_readers_need_a_card_hash_key_and_each_a_key_unless_plain_is_allowed() -> None:
    with pytest.raises(ConfigError, match=r"drivers\.osdp\.card_hash_key: missing"):
        parse_settings({"scbk": {"door-1": SCBK}}).require(["door-1"])
    with pytest.raises(ConfigError, match=r"drivers\.osdp\.scbk\.door-2: missing"):
        parse_settings({"card_hash_key": CARD_KEY, "scbk": {"door-1": SCBK}}).require(
            ["door-1", "door-2"]
        )
    parse_settings({"card_hash_key": CARD_KEY, "allow_plain": True}).require(["door-2"])
    parse_settings(None).require([])


def test_card_hashes_are_keyed_and_tell_formats_apart() -> None:
    key, other = Secret(bytes(32)), Secret(bytes([1]) * 32)
    card = bytes.fromhex("0c1b00")
    first = card_hash(key, 1, 26, card)
    assert first == card_hash(key, 1, 26, card)
    assert len(first) == 16
    assert int(first, 16) >= 0
    assert first != card_hash(other, 1, 26, card)
    assert first != card_hash(key, 1, 24, card)
    assert first != card_hash(key, 0, 26, card)
    assert pin_hash(key, b"1234") != pin_hash(key, b"12345")
    assert "1234" not in pin_hash(key, b"1234")
