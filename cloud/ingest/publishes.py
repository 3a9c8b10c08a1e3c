"""MQTT PUBLISH packets as ingest reads them: topic, payload, QoS and packet id, no more.

paho-mqtt decodes every PUBLISH of an MQTT v5 session into a ``Properties`` object that
rebuilds two tables of every property name on each call; at ten readings per message
that alone took over a third of an ingest process's CPU (docs/decisions.md, "Ingest's
own PUBLISH reader, a frozen heap"). Ingest reads none of a PUBLISH's properties: it
never announces a Topic Alias Maximum, so a broker may not send topic aliases, and the
rest (expiry, content type, user properties) mean nothing to it. ``parse_publish`` so
steps over the properties by their length, as MQTT v5 section 3.3.2.3 allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

_QOS_MASK: Final = 0x06
_VARIABLE_INTEGER_BYTES: Final = 4


class MalformedPublish(ValueError):
    """A PUBLISH packet that breaks MQTT's framing; carries the packet's first bytes."""

    def __init__(self, reason: str, *, packet: bytes | bytearray) -> None:
        super().__init__(f"malformed PUBLISH ({reason}): {bytes(packet[:32]).hex()}")
        self.reason = reason
        self.packet = bytes(packet)


@dataclass(frozen=True, slots=True)
class Publish:
    """One received PUBLISH."""

    topic: str
    """Decoded as UTF-8 with bad bytes replaced, so such a topic fails the topic check
    and is quarantined with the rest of the message rather than lost."""
    payload: bytes
    qos: int
    mid: int
    """The packet identifier; 0 at QoS 0, which has none."""
    received: float
    """``time.monotonic()`` (the event loop's clock) at receipt."""


def parse_publish(header: int, packet: bytes | bytearray, *, v5: bool, received: float) -> Publish:
    """The PUBLISH of fixed-header byte ``header`` and ``packet`` (everything after the
    remaining length). Raises MalformedPublish when its parts do not fit the packet, or
    for QoS 2, which a broker never sends on ingest's QoS 1 subscriptions."""
    qos = (header & _QOS_MASK) >> 1
    if qos > 1:
        raise MalformedPublish(f"QoS {qos} on a QoS 1 subscription", packet=packet)
    if len(packet) < 2:
        raise MalformedPublish("no topic length", packet=packet)
    end = 2 + (packet[0] << 8 | packet[1])
    if end > len(packet):
        raise MalformedPublish("topic longer than the packet", packet=packet)
    topic = packet[2:end].decode("utf-8", "replace")
    mid = 0
    if qos:
        if len(packet) < end + 2:
            raise MalformedPublish("no packet identifier", packet=packet)
        mid = packet[end] << 8 | packet[end + 1]
        end += 2
    if v5:
        length, end = _variable_integer(packet, end)
        end += length
    if end > len(packet):
        raise MalformedPublish("properties longer than the packet", packet=packet)
    if not topic:
        raise MalformedPublish("empty topic (topic aliases are not accepted)", packet=packet)
    # One copy of the payload: a slice of the bytearray would be a second.
    return Publish(topic, bytes(memoryview(packet)[end:]), qos, mid, received)


def _variable_integer(packet: bytes | bytearray, start: int) -> tuple[int, int]:
    """The Variable Byte Integer at ``start`` and the index after it (MQTT v5 1.5.5)."""
    value = 0
    for index in range(start, min(start + _VARIABLE_INTEGER_BYTES, len(packet))):
        byte = packet[index]
        value |= (byte & 0x7F) << 7 * (index - start)
        if not byte & 0x80:
            return value, index + 1
    raise MalformedPublish("bad properties length", packet=packet)
