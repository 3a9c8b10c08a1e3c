"""Envelope encryption of residents' personal data with AES-256-GCM.

Each record is sealed under a data key of its own, fresh for every write, and the data
key is stored wrapped by the keyring's current key-encryption key (KEK), labelled with
that key's id. Hence:

- the database holds no key that opens anything: a dump or a backup without
  ``ANJU_RESIDENT_KEYS`` reveals no one's data;
- rotating a KEK rewraps 60 bytes per record (``rewrap``) without decrypting the data;
- the caller's associated data binds a ciphertext to its row, so a ciphertext copied
  onto another resident fails authentication instead of showing one person's medical
  notes as another's.

Stored layouts: ``wrapped_key = nonce(12) || AES-GCM(KEK, data key, aad=b"anju-kek:" +
key id)`` and ``ciphertext = nonce(12) || AES-GCM(data key, plaintext, aad)``.

Why AES-GCM for wrapping rather than AES key wrap (RFC 3394): one primitive and one
code path for both layers, and GCM takes associated data, which binds a wrapped key to
its key id, so a record relabelled with another id fails instead of being opened under
the wrong key. GCM's risk is a repeated nonce under one KEK; with random 96-bit nonces
NIST SP 800-38D allows 2**32 encryptions per key, far more writes than a city's
residents make in one key's life, and each rotation starts the count again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloud.errors import SettingsError
from cloud.residents.errors import NoResidentKeys, PersonalDataCorrupt, UnknownWrappingKey
from cloud.settings import WRAPPING_KEY_ID

KEY_BYTES: Final = 32
"""Length of every key here, KEK and data key: AES-256."""

KEYS_VAR: Final = "ANJU_RESIDENT_KEYS"
KEY_ID_FORM: Final = "1-32 letters, digits, '.', '_' or '-', starting with a letter or digit"
_NONCE_BYTES: Final = 12


class Keyring:
    """Key-encryption keys by id; the first given is current and wraps every new record.

    The others stay so that records wrapped by them can still be read until ``rekey``
    has moved them to the current one. An empty keyring is valid (the cloud runs
    without personal data); using it raises ``NoResidentKeys``. No key leaves this
    object and none appears in its ``repr``.
    """

    __slots__ = ("_ciphers",)

    def __init__(self, keys: Iterable[tuple[str, bytes]] = ()) -> None:
        self._ciphers: dict[str, AESGCM] = {}
        for key_id, secret in keys:
            if not WRAPPING_KEY_ID.match(key_id):
                raise SettingsError(KEYS_VAR, f"malformed key id {key_id!r}", KEY_ID_FORM)
            if key_id in self._ciphers:
                raise SettingsError(KEYS_VAR, f"key id {key_id!r} given twice", "unique ids")
            if len(secret) != KEY_BYTES:
                raise SettingsError(
                    KEYS_VAR, f"key {key_id!r} is {len(secret)} bytes", f"{KEY_BYTES} bytes"
                )
            self._ciphers[key_id] = AESGCM(secret)

    @classmethod
    def from_keys(cls, keys: Iterable[tuple[str, bytes]]) -> Keyring:
        """A keyring of ``(id, 32-byte secret)`` pairs, current first, as settings give them.

        Raises SettingsError (naming ANJU_RESIDENT_KEYS and the id, never the bytes) for
        a malformed or repeated id or a secret of the wrong length.
        """
        return cls(keys)

    @property
    def ids(self) -> tuple[str, ...]:
        """Every key id, the current one first."""
        return tuple(self._ciphers)

    @property
    def current(self) -> str:
        """The id of the key that wraps new records; raises NoResidentKeys when empty."""
        for key_id in self._ciphers:
            return key_id
        raise NoResidentKeys

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """``data_key`` wrapped by the current key, with that key's id."""
        key_id = self.current
        return key_id, _encrypt(self._ciphers[key_id], data_key, _wrap_aad(key_id))

    def unwrap(self, key_id: str, wrapped_key: bytes) -> bytes:
        """The data key in ``wrapped_key``, wrapped by ``key_id``.

        Raises NoResidentKeys for an empty keyring, UnknownWrappingKey when ``key_id``
        is not in it, PersonalDataCorrupt when the wrapped key fails authentication.
        """
        if not self._ciphers:
            raise NoResidentKeys
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownWrappingKey(key_id)
        problem = f"the data key wrapped by {key_id!r} was altered"
        data_key = _decrypt(cipher, wrapped_key, _wrap_aad(key_id), problem=problem)
        if len(data_key) != KEY_BYTES:
            raise PersonalDataCorrupt(problem)
        return data_key

    def __repr__(self) -> str:
        return f"Keyring(ids={self.ids!r})"


@dataclass(frozen=True, slots=True)
class Sealed:
    """One sealed record as stored: the KEK's id, the wrapped data key, the ciphertext."""

    key_id: str
    wrapped_key: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return (
            f"Sealed(key_id={self.key_id!r}, wrapped_key=<{len(self.wrapped_key)} bytes>, "
            f"ciphertext=<{len(self.ciphertext)} bytes>)"
        )


def seal(keyring: Keyring, plaintext: bytes, *, aad: bytes) -> Sealed:
    """Encrypt ``plaintext`` under a fresh data key wrapped by the current key.

    ``aad`` must name the row the record will live in; ``unseal`` needs the same bytes.
    Raises NoResidentKeys for an empty keyring.
    """
    data_key = os.urandom(KEY_BYTES)
    key_id, wrapped_key = keyring.wrap(data_key)
    return Sealed(key_id, wrapped_key, _encrypt(AESGCM(data_key), plaintext, aad))


def unseal(keyring: Keyring, sealed: Sealed, *, aad: bytes) -> bytes:
    """The plaintext of ``sealed``, which must have been sealed with the same ``aad``.

    Raises NoResidentKeys, UnknownWrappingKey, or PersonalDataCorrupt when the record
    was altered or belongs to another row.
    """
    data_key = keyring.unwrap(sealed.key_id, sealed.wrapped_key)
    problem = "the ciphertext was altered or belongs to another row"
    return _decrypt(AESGCM(data_key), sealed.ciphertext, aad, problem=problem)


def rewrap(keyring: Keyring, sealed: Sealed) -> Sealed:
    """``sealed`` with its data key wrapped by the current key; the ciphertext is kept.

    Needs no associated data: the data itself is never decrypted. Raises as ``unseal``.
    """
    data_key = keyring.unwrap(sealed.key_id, sealed.wrapped_key)
    key_id, wrapped_key = keyring.wrap(data_key)
    return Sealed(key_id, wrapped_key, sealed.ciphertext)


def _wrap_aad(key_id: str) -> bytes:
    return b"anju-kek:" + key_id.encode("ascii")


def _encrypt(cipher: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + cipher.encrypt(nonce, plaintext, aad)


def _decrypt(cipher: AESGCM, blob: bytes, aad: bytes, *, problem: str) -> bytes:
    try:
        return cipher.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        raise PersonalDataCorrupt(problem) from None
