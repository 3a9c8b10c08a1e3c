"""Who may do what on the broker: the roles of gateways and of the cloud workers.

Pure data, no I/O: ``cloud.broker.dynsec`` writes these roles into Mosquitto's
dynamic-security plugin, and docs/broker.md maps the same table onto EMQX.

Everything not allowed here is denied (``DEFAULT_ACCESS``). A gateway publishes only
its own telemetry, events, status and command results, and receives only its own
commands and acknowledgements; the cloud workers read every gateway's uplink and send
commands and acknowledgements, and publish nothing a gateway would.

The dynamic-security plugin checks a shared subscription (``$share/GROUP/FILTER``)
against the whole filter, group included, so the cloud role carries each of its
filters twice: plain, and behind ``$share/+/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from cloud.broker.errors import TopicLevelError
from schemas.topics import ROOT, Channel

GATEWAY_ROLE_PREFIX: Final = "anju-gw-"
SERVICE_ROLE: Final = "anju-cloud"


class AclType(StrEnum):
    """The plugin's ACL types (mosquitto.org/documentation/dynamic-security)."""

    PUBLISH_SEND = "publishClientSend"
    PUBLISH_RECEIVE = "publishClientReceive"
    SUBSCRIBE_PATTERN = "subscribePattern"
    UNSUBSCRIBE_PATTERN = "unsubscribePattern"


class DefaultAclType(StrEnum):
    """The four kinds of access the plugin's default applies to."""

    PUBLISH_SEND = "publishClientSend"
    PUBLISH_RECEIVE = "publishClientReceive"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"


DEFAULT_ACCESS: Final = dict.fromkeys(DefaultAclType, False)
"""Deny whatever no role allows, receiving included (the plugin allows that by default)."""


@dataclass(frozen=True, slots=True)
class Acl:
    """One allow rule of a role: ``type`` on topics matching ``topic``."""

    type: AclType
    topic: str
    allow: bool = True
    priority: int = 0

    def to_json(self) -> dict[str, object]:
        """The rule as the plugin's ``acls`` entries and ``getRole`` answers spell it."""
        return {
            "acltype": str(self.type),
            "topic": self.topic,
            "allow": self.allow,
            "priority": self.priority,
        }

    @classmethod
    def from_json(cls, entry: dict[str, object]) -> Acl:
        """An ACL from a ``getRole`` answer (which omits nothing of the above)."""
        priority = entry.get("priority", 0)
        return cls(
            AclType(str(entry["acltype"])),
            str(entry["topic"]),
            bool(entry.get("allow", False)),
            priority if isinstance(priority, int) else 0,
        )


def gateway_role(gateway: str) -> str:
    """The role name of ``gateway``: ``anju-gw-{gateway}``."""
    return f"{GATEWAY_ROLE_PREFIX}{_level('gateway id', gateway)}"


def gateway_acls(community: str, gateway: str) -> tuple[Acl, ...]:
    """What gateway ``gateway`` of ``community`` (``street/community``) may do.

    Publish under its own telemetry, events, status and ``cmd-result/#``; subscribe to,
    receive and unsubscribe from its own ``cmd/#`` and ``ack/#``. Raises
    ``TopicLevelError`` for an id or community that would widen these filters.
    """
    base = f"{ROOT}/{_community(community)}/{_level('gateway id', gateway)}"
    sends = [
        f"{base}/{Channel.TELEMETRY}",
        f"{base}/{Channel.EVENTS}",
        f"{base}/{Channel.STATUS}",
        f"{base}/{Channel.COMMAND_RESULT}/#",
    ]
    inbound = [f"{base}/{Channel.COMMAND}/#", f"{base}/{Channel.ACK}/#"]
    return (
        *(Acl(AclType.PUBLISH_SEND, topic) for topic in sends),
        *(Acl(AclType.SUBSCRIBE_PATTERN, topic) for topic in inbound),
        *(Acl(AclType.PUBLISH_RECEIVE, topic) for topic in inbound),
        *(Acl(AclType.UNSUBSCRIBE_PATTERN, topic) for topic in inbound),
    )


def service_acls() -> tuple[Acl, ...]:
    """What the cloud workers' role ``anju-cloud`` may do.

    Subscribe (plainly or shared), receive and unsubscribe every gateway's telemetry,
    events, status and command results; publish commands and acknowledgements to any
    gateway.
    """
    every = f"{ROOT}/+/+/+"
    uplink = [
        f"{every}/{Channel.TELEMETRY}",
        f"{every}/{Channel.EVENTS}",
        f"{every}/{Channel.STATUS}",
        f"{every}/{Channel.COMMAND_RESULT}/#",
    ]
    filters = [*uplink, *(f"$share/+/{topic}" for topic in uplink)]
    return (
        *(Acl(AclType.SUBSCRIBE_PATTERN, topic) for topic in filters),
        *(Acl(AclType.UNSUBSCRIBE_PATTERN, topic) for topic in filters),
        *(Acl(AclType.PUBLISH_RECEIVE, topic) for topic in uplink),
        Acl(AclType.PUBLISH_SEND, f"{every}/{Channel.COMMAND}/#"),
        Acl(AclType.PUBLISH_SEND, f"{every}/{Channel.ACK}/#"),
    )


def _community(community: str) -> str:
    street, _, name = community.partition("/")
    _level("community", street, shown=community)
    _level("community", name, shown=community)
    return community


def _level(what: str, value: str, *, shown: str | None = None) -> str:
    if not value or value.startswith("$") or any(c in value for c in "/+#\0"):
        raise TopicLevelError(what, shown if shown is not None else value)
    return value
