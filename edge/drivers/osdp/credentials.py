"""What a person presented at a reader, made safe to send: a keyed hash, never the number.

The same card always gives the same hash under one gateway key, so the cloud can tell
"the same card as yesterday" without being able to learn, or replay, the card number;
a PIN typed on the keypad is a credential too and is hashed the same way, whole (a
hash per digit would be a table of ten anyone could invert). The hash
covers the card's format and bit length with its bytes, so a 26-bit and a 34-bit
card whose bytes happen to agree are told apart.
"""

import hashlib
import hmac
import struct
from typing import Final

from edge.drivers.osdp.settings import Secret

HASH_BYTES: Final = 8
"""The hash keeps the first 8 bytes of the HMAC (16 hex digits): enough to tell the
cards of a community apart, too short to be worth storing as a secret."""

_CARD: Final = struct.Struct(">4sBH")
_PIN_TAG: Final = b"anju-pin"


def card_hash(key: Secret, card_format: int, bits: int, data: bytes) -> str:
    """The hex hash of a card read: HMAC-SHA-256 over its format, bit length and bytes."""
    message = _CARD.pack(b"card", card_format & 0xFF, bits & 0xFFFF) + data
    return _hash(key, message)


def pin_hash(key: Secret, digits: bytes) -> str:
    """The hex hash of a whole PIN: its ASCII digits, without the enter key
    (``reader.Keypad`` gathers them)."""
    return _hash(key, _PIN_TAG + bytes([len(digits) & 0xFF]) + digits)


def _hash(key: Secret, message: bytes) -> str:
    return hmac.new(key.reveal(), message, hashlib.sha256).digest()[:HASH_BYTES].hex()
