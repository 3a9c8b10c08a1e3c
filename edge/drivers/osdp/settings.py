"""The OSDP driver's settings, from the gateway config's ``drivers.osdp`` section.

Example (the file holding it is readable by the agent's user only, mode 0600)::

    drivers:
      osdp:
        card_hash_key: 9f2c...e1            # hex, at least 16 bytes
        scbk:
          fh-b3-door-0101-reader: 000102030405060708090a0b0c0d0e0f
        allow_plain: false

Keys are held as ``Secret``: no repr, str, log line or error message shows them, and
an error about one names its key (``drivers.osdp.scbk.<device id>``), never its value.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from edge.errors import ConfigError

SOURCE: Final = "gateway config"
SCBK_BYTES: Final = 16
CARD_HASH_KEY_MIN_BYTES: Final = 16
_HEX: Final = re.compile(r"[0-9a-fA-F]*")
_KEYS: Final = ("card_hash_key", "scbk", "allow_plain")


class Secret:
    """Key bytes that never show: ``repr`` and ``str`` say only that a key is there."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        """The key itself, for the one call that needs it (HMAC, libosdp)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class OsdpDriverSettings:
    """``drivers.osdp``, validated."""

    card_hash_key: Secret | None = None
    """The key card numbers and PINs are hashed under before they leave the gateway."""
    scbk: Mapping[str, Secret] = field(default_factory=dict)
    """Each reader's secure-channel base key, by device id."""
    allow_plain: bool = False
    """Whether a reader without a key may run without a secure channel."""

    def card_key(self) -> Secret:
        """``card_hash_key``; raises ConfigError naming it, with how to make one, when it
        is missing."""
        if self.card_hash_key is None:
            raise ConfigError(
                SOURCE,
                "drivers.osdp.card_hash_key",
                "missing: OSDP readers are configured, and card numbers leave the gateway "
                "only as a keyed hash; set it to at least 16 random bytes in hex "
                "(python3 -c 'import secrets; print(secrets.token_hex(32))')",
            )
        return self.card_hash_key

    def require(self, device_ids: Iterable[str]) -> None:
        """Check that the readers in ``device_ids`` can run with these settings.

        Raises ConfigError naming ``drivers.osdp.card_hash_key`` when it is missing, or
        ``drivers.osdp.scbk.<device id>`` for a reader without a key while plain
        readers are not allowed.
        """
        ids = list(device_ids)
        if ids:
            self.card_key()
        for device_id in ids:
            if device_id not in self.scbk and not self.allow_plain:
                raise ConfigError(
                    SOURCE,
                    f"drivers.osdp.scbk.{device_id}",
                    "missing: reader has no secure-channel key; set its 16-byte SCBK "
                    "(32 hex digits), or allow_plain: true to run it without a secure channel",
                )


def parse_settings(document: object) -> OsdpDriverSettings:
    """Validate ``drivers.osdp``; raises ConfigError naming the key and the fault,
    never the value of a key."""
    if document is None:
        return OsdpDriverSettings()
    if not isinstance(document, Mapping):
        raise ConfigError(SOURCE, "drivers.osdp", "expected a mapping of settings")
    unknown = sorted(str(key) for key in document if key not in _KEYS)
    if unknown:
        raise ConfigError(
            SOURCE,
            f"drivers.osdp.{unknown[0]}",
            f"unknown key; allowed keys here are {', '.join(_KEYS)}",
        )
    card_key = document.get("card_hash_key")
    allow_plain = document.get("allow_plain", False)
    if not isinstance(allow_plain, bool):
        raise ConfigError(SOURCE, "drivers.osdp.allow_plain", "expected true or false")
    return OsdpDriverSettings(
        card_hash_key=None
        if card_key is None
        else _key("drivers.osdp.card_hash_key", card_key, CARD_HASH_KEY_MIN_BYTES, exact=False),
        scbk=_scbks(document.get("scbk")),
        allow_plain=allow_plain,
    )


def _scbks(section: object) -> dict[str, Secret]:
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(
            SOURCE, "drivers.osdp.scbk", "expected a mapping of device id to 32 hex digits"
        )
    return {
        str(device_id): _key(f"drivers.osdp.scbk.{device_id}", value, SCBK_BYTES, exact=True)
        for device_id, value in section.items()
    }


def _key(where: str, value: object, size: int, *, exact: bool) -> Secret:
    """A hex key as bytes; the error says what is wrong with it without repeating it."""
    digits = size * 2
    wanted = f"exactly {digits}" if exact else f"at least {digits}"
    if not isinstance(value, str):
        raise ConfigError(SOURCE, where, f"expected {wanted} hex digits in quotes")
    text = value.strip()
    if not _HEX.fullmatch(text) or len(text) % 2:
        raise ConfigError(SOURCE, where, f"not hex: expected {wanted} hex digits (0-9, a-f)")
    if len(text) < digits or (exact and len(text) != digits):
        raise ConfigError(SOURCE, where, f"{len(text)} hex digits; expected {wanted}")
    return Secret(bytes.fromhex(text))
