"""The ``read_device`` command the cloud sends for an installer's device test, and
what the gateway's answer says. Pure: no I/O.

An installer's ``POST /devices/{id}/test`` becomes a row of ``device_tests``; the
config pusher sends it as a ``read_device`` command with the id ``test-{row id}``, so
an answer leads to its row with nothing remembered in between, and an id seen in a
gateway's audit log leads to the row and back. One row is one command: a test is
never retried (a request the pusher could not send before it expired is reported so,
and the installer asks again), so the gateway's rule that a first verdict is final
costs nothing here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from schemas.errors import WireError
from schemas.topics import Channel, topic_for
from schemas.wire import (
    READ_POINT_PREFIX,
    ArgValue,
    Command,
    CommandName,
    CommandResult,
    decode,
    encode,
)

COMMAND_ID_PREFIX: Final = "test-"
_COMMAND_ID: Final = re.compile(r"^test-([1-9][0-9]{0,18})$")


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """A test request claimed for sending at ``sent_at``."""

    id: int
    device: str
    gateway: str
    community: str
    sent_at: datetime
    expires_at: datetime
    """The request's deadline: the gateway refuses the command after it."""


@dataclass(frozen=True, slots=True)
class ReadAnswer:
    """A gateway's answer to the ``read_device`` of request ``request_id``."""

    request_id: int
    gateway: str
    community: str
    ok: bool
    detail: str
    data: dict[str, ArgValue]
    """The result's data as sent: ``point.{name}`` values, ``elapsed_ms``, ``fault``."""


def command_id(request_id: int) -> str:
    """The command id of test request ``request_id``."""
    return f"{COMMAND_ID_PREFIX}{request_id}"


def request_id(command_id: str) -> int | None:
    """The request an id made by ``command_id`` names; None for any other command's id."""
    match = _COMMAND_ID.match(command_id)
    return int(match.group(1)) if match else None


def read_device(request: ReadRequest) -> tuple[str, bytes]:
    """The topic and payload of the command carrying ``request``, issued when it was
    claimed and expiring with the request."""
    ident = command_id(request.id)
    command = Command(
        id=ident,
        name=CommandName.READ_DEVICE,
        device=request.device,
        issued_at=request.sent_at,
        expires_at=request.expires_at,
    )
    topic = topic_for(request.community, request.gateway, Channel.COMMAND, ident)
    return topic, encode(command)


def read_answer(
    community: str, gateway: str, command_id: str, payload: bytes, *, topic: str
) -> ReadAnswer | None:
    """The answer in a ``cmd-result`` payload, or None when the command is no test's.

    Raises WireError (carrying ``topic``) for a payload that is no ``CommandResult``,
    or one whose id or gateway contradicts its topic.
    """
    requested = request_id(command_id)
    if requested is None:
        return None
    result = decode(payload, CommandResult, topic=topic)
    if result.id != command_id or result.gateway != gateway:
        raise WireError(
            f"result of {result.id} from {result.gateway} on the topic of {command_id} "
            f"from {gateway}",
            topic=topic,
        )
    return ReadAnswer(
        request_id=requested,
        gateway=gateway,
        community=community,
        ok=result.ok,
        detail=result.detail,
        data=dict(result.data),
    )


def point_values(data: dict[str, ArgValue]) -> dict[str, ArgValue]:
    """The points of a ``read_device`` result's data, by point name, in the order sent."""
    return {
        key.removeprefix(READ_POINT_PREFIX): value
        for key, value in data.items()
        if key.startswith(READ_POINT_PREFIX)
    }
