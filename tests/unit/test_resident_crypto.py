"""Envelope encryption of residents' personal data: what opens, what must not, and that
no key ever shows in a message."""

from __future__ import annotations

import base64
import os
from dataclasses import replace

import pytest

from cloud.errors import SettingsError
from cloud.residents.crypto import Keyring, Sealed, rewrap, seal, unseal
from cloud.residents.errors import NoResidentKeys, PersonalDataCorrupt, UnknownWrappingKey

OLD = os.urandom(32)
NEW = os.urandom(32)
AAD = b"anju-resident:7"
PLAINTEXT = '{"name":"王秀英","phone":"+86 138 0000 0000"}'.encode()


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_round_trip_under_the_current_key() -> None:
    keyring = Keyring.from_keys([("k2", NEW), ("k1", OLD)])
    sealed = seal(keyring, PLAINTEXT, aad=AAD)
    assert sealed.key_id == "k2"
    assert PLAINTEXT not in sealed.ciphertext
    assert unseal(keyring, sealed, aad=AAD) == PLAINTEXT


def test_every_seal_takes_a_fresh_data_key() -> None:
    keyring = Keyring.from_keys([("k1", OLD)])
    first, second = seal(keyring, PLAINTEXT, aad=AAD), seal(keyring, PLAINTEXT, aad=AAD)
    assert first.wrapped_key != second.wrapped_key
    assert first.ciphertext != second.ciphertext


def test_other_associated_data_fails() -> None:
    keyring = Keyring.from_keys([("k1", OLD)])
    sealed = seal(keyring, PLAINTEXT, aad=AAD)
    with pytest.raises(PersonalDataCorrupt, match="another row"):
        unseal(keyring, sealed, aad=b"anju-resident:8")


@pytest.mark.parametrize("part", ["ciphertext", "wrapped_key"])
@pytest.mark.parametrize("index", [0, 20, -1])
def test_tampered_bytes_fail(part: str, index: int) -> None:
    keyring = Keyring.from_keys([("k1", OLD)])
    sealed = seal(keyring, PLAINTEXT, aad=AAD)
    blob: bytes = getattr(sealed, part)
    tampered = replace(sealed, **{part: _flip(blob, index % len(blob))})
    with pytest.raises(PersonalDataCorrupt):
        unseal(keyring, tampered, aad=AAD)


def test_truncated_record_fails() -> None:
    keyring = Keyring.from_keys([("k1", OLD)])
    sealed = seal(keyring, PLAINTEXT, aad=AAD)
    with pytest.raises(PersonalDataCorrupt):
        unseal(keyring, Sealed("k1", sealed.wrapped_key, sealed.ciphertext[:5]), aad=AAD)


def test_wrapped_key_relabelled_with_another_id_fails() -> None:
    """Both keys are in the keyring, so only the key id bound into the wrap can catch it."""
    keyring = Keyring.from_keys([("k2", NEW), ("k1", OLD)])
    sealed = seal(keyring, PLAINTEXT, aad=AAD)
    relabelled = Sealed("k1", sealed.wrapped_key, sealed.ciphertext)
    with pytest.raises(PersonalDataCorrupt):
        unseal(keyring, relabelled, aad=AAD)


def test_unknown_key_id_is_named() -> None:
    sealed = seal(Keyring.from_keys([("k1", OLD)]), PLAINTEXT, aad=AAD)
    with pytest.raises(UnknownWrappingKey) as caught:
        unseal(Keyring.from_keys([("k2", NEW)]), sealed, aad=AAD)
    assert caught.value.key_id == "k1"
    assert "'k1'" in str(caught.value)


def test_rewrap_moves_the_data_key_and_keeps_the_ciphertext() -> None:
    sealed = seal(Keyring.from_keys([("k1", OLD)]), PLAINTEXT, aad=AAD)
    moved = rewrap(Keyring.from_keys([("k2", NEW), ("k1", OLD)]), sealed)
    assert moved.key_id == "k2"
    assert moved.ciphertext == sealed.ciphertext
    assert moved.wrapped_key != sealed.wrapped_key
    assert unseal(Keyring.from_keys([("k2", NEW)]), moved, aad=AAD) == PLAINTEXT


def test_empty_keyring_names_the_variable() -> None:
    empty = Keyring.from_keys([])
    sealed = seal(Keyring.from_keys([("k1", OLD)]), PLAINTEXT, aad=AAD)
    for attempt in (
        lambda: seal(empty, PLAINTEXT, aad=AAD),
        lambda: unseal(empty, sealed, aad=AAD),
        lambda: rewrap(empty, sealed),
    ):
        with pytest.raises(NoResidentKeys, match="ANJU_RESIDENT_KEYS"):
            attempt()


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ([("k1", OLD[:16])], "16 bytes"),
        ([("k1", OLD), ("k1", NEW)], "given twice"),
        ([("k:1", OLD)], "malformed key id"),
        ([("", OLD)], "malformed key id"),
    ],
)
def test_bad_keys_are_refused(keys: list[tuple[str, bytes]], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem) as caught:
        Keyring.from_keys(keys)
    _assert_no_key_material(str(caught.value))


def test_no_key_material_in_any_text() -> None:
    keyring = Keyring.from_keys([("k2", NEW), ("k1", OLD)])
    sealed = seal(keyring, PLAINTEXT, aad=AAD)
    texts = [str(keyring), repr(keyring), repr(sealed)]
    for error in _errors(keyring, sealed):
        texts += [str(error), repr(error), repr(error.args)]
    for text in texts:
        _assert_no_key_material(text)
    assert "k2" in repr(keyring)


def _errors(keyring: Keyring, sealed: Sealed) -> list[Exception]:
    errors: list[Exception] = []
    attempts = (
        lambda: unseal(keyring, sealed, aad=b"other"),
        lambda: unseal(keyring, Sealed("k2", _flip(sealed.wrapped_key, 3), b""), aad=AAD),
        lambda: unseal(Keyring.from_keys([("k9", os.urandom(32))]), sealed, aad=AAD),
        lambda: seal(Keyring.from_keys([]), PLAINTEXT, aad=AAD),
    )
    for attempt in attempts:
        with pytest.raises(Exception) as caught:  # noqa: PT011 (each attempt its own error)
            attempt()
        errors.append(caught.value)
    return errors


def _assert_no_key_material(text: str) -> None:
    for key in (OLD, NEW):
        for form in (repr(key), key.hex(), base64.b64encode(key).decode(), str(list(key))):
            assert form not in text
