"""The ``apply_config`` command the cloud sends, and what a gateway's answer means.

Pure: no I/O, so the pusher and the listener agree on ids and verdicts by construction.

Command ids are ``cfg-{version}-{pushed_at in epoch milliseconds}``: one id per attempt,
not one per version. A gateway's first verdict on an id is final, and that includes
the transient ones (expired while it was offline, interrupted by a restart, "not now"
during a fire alarm): under a stable id every retry would get the same transient
answer back until the gateway forgets the id. A fresh id per attempt is still harmless
to repeat, because applying is idempotent by version on the gateway (a version at or
below the one it runs is answered "already runs version N", nothing done), and the
version is in the id, so the listener knows which version an answer is about without
remembering what it sent. The millisecond part is the ``config_pushed_at`` the attempt
recorded, so an id shown in a gateway's audit log leads to the row and back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from schemas.errors import WireError
from schemas.topics import Channel, topic_for
from schemas.wire import (
    Command,
    CommandName,
    CommandResult,
    GatewayConfigDocument,
    decode,
    encode,
)

COMMAND_ID_PREFIX: Final = "cfg-"
_COMMAND_ID: Final = re.compile(r"^cfg-([1-9][0-9]{0,18})-([0-9]{1,16})$")


@dataclass(frozen=True, slots=True)
class ConfigPush:
    """One gateway's wanted config, claimed for pushing at ``pushed_at``."""

    gateway: str
    community: str
    version: int
    document: str
    """The stored ``GatewayConfigDocument``, as JSON text."""
    pushed_at: datetime


class Verdict(StrEnum):
    """What an answer to an ``apply_config`` command says about its version."""

    APPLIED = "applied"
    """The gateway runs the version, or a later one (``running`` says which)."""
    REFUSED = "refused"
    """The gateway judged the document invalid: this version will never run there."""
    FAILED = "failed"
    """Not carried out for a passing reason (expired, busy, interrupted): retry later."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A gateway's answer to one of our ``apply_config`` commands."""

    gateway: str
    community: str
    command_id: str
    requested: int
    """The version the command carried (from its id)."""
    verdict: Verdict
    running: int
    """The version the gateway runs after the command, as it says (``requested`` if it
    does not say); meaningful for APPLIED."""
    detail: str


def command_id(version: int, pushed_at: datetime) -> str:
    """The id of the attempt to push ``version`` made at ``pushed_at``."""
    return f"{COMMAND_ID_PREFIX}{version}-{int(pushed_at.timestamp() * 1000)}"


def requested_version(command_id: str) -> int | None:
    """The version an id made by ``command_id`` carries; None for any other command's id."""
    match = _COMMAND_ID.match(command_id)
    return int(match.group(1)) if match else None


def document_problem(push: ConfigPush) -> str | None:
    """Why the stored document must not be sent, or None when it may.

    The registry writes the document; checking it here costs a decode and keeps a
    broken row (a bug, a hand edit) from reaching the gateway, whose refusal would say
    less about where the fault lies.
    """
    try:
        document = decode(push.document.encode(), GatewayConfigDocument)
    except WireError as exc:
        return f"the cloud's stored config version {push.version} is not a valid document: {exc}"
    if document.gateway != push.gateway or document.version != push.version:
        return (
            f"the cloud's stored config version {push.version} of {push.gateway} says it is "
            f"version {document.version} of {document.gateway}"
        )
    return None


def apply_config(push: ConfigPush, *, lifetime_s: float) -> tuple[str, bytes]:
    """The topic and payload of the command pushing ``push``, valid ``lifetime_s`` seconds.

    The command is issued at ``push.pushed_at``; ``lifetime_s`` bounds how long it may
    wait in an offline gateway's broker session before the gateway refuses it as expired.
    """
    ident = command_id(push.version, push.pushed_at)
    command = Command(
        id=ident,
        name=CommandName.APPLY_CONFIG,
        args={"version": push.version, "document": push.document},
        issued_at=push.pushed_at,
        expires_at=push.pushed_at + timedelta(seconds=lifetime_s),
    )
    topic = topic_for(push.community, push.gateway, Channel.COMMAND, ident)
    return topic, encode(command)


def read_answer(
    community: str, gateway: str, command_id: str, payload: bytes, *, topic: str
) -> Answer | None:
    """The answer in a ``cmd-result`` payload, or None when the command is not ours.

    Raises WireError (carrying ``topic``) for a payload that is no ``CommandResult``, or
    one whose id or gateway contradicts its topic.

    Only a refusal the gateway marks ``invalid`` is REFUSED (edge/pushed_config.py):
    every other failure (expired, clock skew, a fire alarm in progress, a state
    directory it could not write) says nothing about the document.
    """
    requested = requested_version(command_id)
    if requested is None:
        return None
    result = decode(payload, CommandResult, topic=topic)
    if result.id != command_id or result.gateway != gateway:
        raise WireError(
            f"result of {result.id} from {result.gateway} on the topic of {command_id} "
            f"from {gateway}",
            topic=topic,
        )
    said = result.data.get("version")
    running = said if isinstance(said, int) and not isinstance(said, bool) else requested
    if result.ok:
        verdict = Verdict.APPLIED
    elif result.data.get("invalid") is True:
        verdict = Verdict.REFUSED
    else:
        verdict = Verdict.FAILED
    return Answer(
        gateway=gateway,
        community=community,
        command_id=command_id,
        requested=requested,
        verdict=verdict,
        running=running,
        detail=result.detail,
    )
