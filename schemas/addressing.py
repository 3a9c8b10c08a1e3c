"""The registry of addressing families: how each protocol says where a point lives.

A point's neutral description (metric, scale, writable) is the same for every
protocol; its address is not (a Modbus register, a GATT characteristic, a serial
record field). Each protocol's package in ``schemas.protocols`` registers one
``Addressing`` here when imported, so the profile model validates a new protocol's
points without any shared class being edited (docs/design.md section 5).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from schemas.profile import DeviceProfile

PROTOCOL_PATTERN = r"^[a-z][a-z0-9-]{1,31}$"
"""What a protocol name looks like (``modbus-rtu``), in a profile and in the registry."""

_KEY_PATTERN = r"^[a-z][a-z0-9_]{1,31}$"


@dataclass(frozen=True)
class Addressing:
    """One addressing family: the YAML key, the protocols it serves and its models.

    ``key`` names both a point's address (``modbus: {table: ..., address: ...}``) and
    the profile's settings section for the family (limits, framing, record layouts).
    ``check`` looks at a whole validated profile for rules that span the settings and
    the points (a serial point's field must exist in its record); it raises
    ValueError with a message naming the point.
    """

    key: str
    protocols: frozenset[str]
    point: type[BaseModel]
    settings: type[BaseModel] | None = None
    settings_required: bool = False
    check: "Callable[[DeviceProfile], None] | None" = None


_BY_KEY: dict[str, Addressing] = {}
_BY_PROTOCOL: dict[str, Addressing] = {}


def register(addressing: Addressing) -> None:
    """Make a family known to profile validation.

    Raises ValueError when its key or one of its protocols is already taken, or is
    not a valid name, since two families answering for one name would make a
    profile's meaning depend on import order.
    """
    if not re.fullmatch(_KEY_PATTERN, addressing.key):
        raise ValueError(f"addressing key {addressing.key!r} must match {_KEY_PATTERN}")
    if not addressing.protocols:
        raise ValueError(f"addressing {addressing.key!r} names no protocol")
    if addressing.settings_required and addressing.settings is None:
        raise ValueError(f"addressing {addressing.key!r} requires settings but has no model")
    if addressing.key in _BY_KEY:
        raise ValueError(f"addressing key {addressing.key!r} is already registered")
    for protocol in sorted(addressing.protocols):
        if not re.fullmatch(PROTOCOL_PATTERN, protocol):
            raise ValueError(f"protocol {protocol!r} must match {PROTOCOL_PATTERN}")
        if protocol in _BY_PROTOCOL:
            taken = _BY_PROTOCOL[protocol].key
            raise ValueError(f"protocol {protocol!r} is already addressed by {taken!r}")
    _BY_KEY[addressing.key] = addressing
    _BY_PROTOCOL.update(dict.fromkeys(addressing.protocols, addressing))


def unregister(key: str) -> None:
    """Forget the family under ``key`` (for tests that plug in a protocol of their own)."""
    addressing = _BY_KEY.pop(key)
    for protocol in addressing.protocols:
        del _BY_PROTOCOL[protocol]


def for_protocol(protocol: str) -> Addressing:
    """The family that addresses ``protocol``'s points.

    Raises ValueError listing the known protocols, which pydantic reports against
    the profile's ``protocol`` field.
    """
    try:
        return _BY_PROTOCOL[protocol]
    except KeyError:
        known = ", ".join(sorted(_BY_PROTOCOL)) or "none"
        raise ValueError(f"protocol {protocol!r} has no point addressing; known: {known}") from None


def families() -> list[Addressing]:
    """Every registered family, by key, so schemas and messages list them in one order."""
    return [_BY_KEY[key] for key in sorted(_BY_KEY)]
