"""MQTT topic names of docs/design.md section 3: ``anju/v1/{street}/{community}/{gateway}/...``.

The community path holds exactly one '/', so every topic of a kind has the same number
of levels and one wildcard subscription (``anju/v1/+/+/+/telemetry``) covers the city.
"""

from dataclasses import dataclass
from enum import StrEnum

from schemas.errors import WireError

ROOT = "anju/v1"


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    EVENTS = "events"
    STATUS = "status"
    COMMAND = "cmd"
    COMMAND_RESULT = "cmd-result"
    ACK = "ack"
    """The cloud's acknowledgement of committed batches, to one gateway."""


_WITH_ID = {Channel.COMMAND, Channel.COMMAND_RESULT}


@dataclass(frozen=True, slots=True)
class TopicAddress:
    """Who a topic belongs to: the community path, the gateway and the channel."""

    community: str
    gateway: str
    channel: Channel
    command_id: str | None = None


def topic_for(community: str, gateway: str, channel: Channel, command_id: str | None = None) -> str:
    """The topic a gateway publishes on (or receives commands on) for ``channel``."""
    if (command_id is None) == (channel in _WITH_ID):
        raise WireError(f"channel {channel} {'needs' if channel in _WITH_ID else 'takes no'} id")
    base = f"{ROOT}/{community}/{gateway}/{channel}"
    return f"{base}/{command_id}" if command_id else base


def parse_topic(topic: str) -> TopicAddress:
    """Split a topic into its address; raises WireError for a topic outside the contract."""
    parts = topic.split("/")
    if len(parts) < 6 or "/".join(parts[:2]) != ROOT:
        raise WireError("topic is not under anju/v1/{street}/{community}/{gateway}/", topic=topic)
    street, community, gateway, channel_name, *rest = parts[2:]
    try:
        channel = Channel(channel_name)
    except ValueError:
        raise WireError(f"unknown channel {channel_name!r}", topic=topic) from None
    if len(rest) != (1 if channel in _WITH_ID else 0) or not all(parts):
        raise WireError("wrong number of topic levels", topic=topic)
    return TopicAddress(f"{street}/{community}", gateway, channel, rest[0] if rest else None)


def subscription(channel: Channel, *, shared_group: str | None = None) -> str:
    """The wildcard filter for ``channel`` across every gateway, shared when a group is given.

    A shared subscription (MQTT v5 ``$share/{group}/...``) splits messages among the
    members of the group, which is how ingest workers scale out.
    """
    suffix = f"{channel}/+" if channel in _WITH_ID else str(channel)
    topic = f"{ROOT}/+/+/+/{suffix}"
    return f"$share/{shared_group}/{topic}" if shared_group else topic
