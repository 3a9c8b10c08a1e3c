"""Wire payloads of docs/design.md section 3, as msgspec structs.

msgspec was chosen over pydantic for these after measuring decode and validation of a
100-item batch with both (docs/decisions.md): the cloud decodes every batch of every
gateway, so this is the hottest parse in the platform.

Every payload starts with ``schema_version``. Batches carry a header (gateway,
community, spool epoch, batch sequence, send time) that the cloud uses to deduplicate
whole batches; items carry the device, its timestamp (UTC) and a per-device sequence.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec

from schemas import SCHEMA_VERSION
from schemas.errors import SchemaVersionMismatch, WireError
from schemas.vocabulary import EventType, Metric, Severity

IDENTIFIER_PATTERN: Final = r"^[a-z0-9][a-z0-9._-]{0,63}$"
"""Gateway and device ids, on the wire and in the cloud's registry and API."""
_NODE_NAME: Final = "[a-z0-9][a-z0-9-]{0,31}"
NODE_NAME_PATTERN: Final = f"^{_NODE_NAME}$"
"""The name of one node of the community tree (a city, a street or a community)."""
NODE_PATH_PATTERN: Final = f"^{_NODE_NAME}(/{_NODE_NAME})?$"
"""Any node's path: a city's or street's name, or ``street/community``."""
COMMUNITY_PATH_PATTERN: Final = f"^{_NODE_NAME}/{_NODE_NAME}$"

Identifier = Annotated[
    str,
    msgspec.Meta(
        pattern=IDENTIFIER_PATTERN,
        description="Lower-case id: letters, digits, '.', '_' and '-', at most 64 characters.",
    ),
]
CommunityPath = Annotated[
    str,
    msgspec.Meta(
        pattern=COMMUNITY_PATH_PATTERN,
        description="street/community, the two lower tiers of the city's community tree.",
    ),
]
UtcTime = Annotated[datetime, msgspec.Meta(tz=True, description="An aware timestamp (UTC).")]
Sequence = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
SpoolEpoch = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9a-f]{16,32}$",
        description="Random hex id made when a gateway's spool is created.",
    ),
]
Version = Literal[2]
"""``schemas.SCHEMA_VERSION``; a payload of another version is refused as
``SchemaVersionMismatch``, naming both."""


Name = Annotated[str, msgspec.Meta(max_length=64)]
"""A point, zone or door name, an agent version: short by nature. Every string and list
on the wire is bounded, so one forged field cannot make ingest store megabytes."""
Reason = Annotated[str, msgspec.Meta(max_length=1024)]
"""A human-readable reason or detail; long enough for a message, not for a document."""


class _Wire(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Base of every wire struct: strict, immutable, keyword-only."""


class Reading(_Wire, kw_only=True, frozen=True, omit_defaults=True, gc=False):
    """One sample of one metric of one device.

    Not tracked by the garbage collector (its fields are scalars, so it can hold no
    cycle): ingest keeps tens of thousands alive per transaction, and tracking them made
    collections take about a third of decoding (docs/decisions.md).
    """

    device: Identifier
    ts: UtcTime
    seq: Sequence
    metric: Metric
    value: float


class EventData(_Wire, kw_only=True, frozen=True, omit_defaults=True):
    """Typed details of an event; every field is optional and only some apply per type.

    Card numbers, faces and names never appear: ``card_hash`` is a keyed hash made at
    the edge, cameras send zones and counts.
    """

    point: Name | None = None
    value: float | None = None
    threshold: float | None = None
    zone: Name | None = None
    channel: int | None = None
    count: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    card_hash: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    door: Name | None = None
    duration_s: float | None = None
    reason: Reason | None = None
    confidence: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    """How sure the edge's analysis is (a confirmed fall), from 0 to 1."""
    direction: Literal["in", "out"] | None = None
    """Which way people crossed a camera's line (``count`` of them): ``in`` is into the
    place its door guards, as configured at the gateway."""


class Event(_Wire, kw_only=True, frozen=True, omit_defaults=True):
    """Something that happened at a device; alarms are events of severity critical."""

    device: Identifier
    ts: UtcTime
    seq: Sequence
    type: EventType
    severity: Severity
    data: EventData = EventData()


class _BatchHeader(_Wire, kw_only=True, frozen=True):
    schema_version: Version = SCHEMA_VERSION
    gateway: Identifier
    community: CommunityPath
    spool_epoch: SpoolEpoch
    batch_seq: Sequence
    sent_at: UtcTime


class TelemetryBatch(_BatchHeader, kw_only=True, frozen=True):
    """Readings sealed once by the edge and resent byte for byte until acknowledged."""

    items: Annotated[list[Reading], msgspec.Meta(min_length=1, max_length=100_000)]


class EventBatch(_BatchHeader, kw_only=True, frozen=True):
    """Events sealed like telemetry; travels on its own topic, ahead of telemetry."""

    items: Annotated[list[Event], msgspec.Meta(min_length=1, max_length=10_000)]


class GatewayState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class Status(_Wire, kw_only=True, frozen=True):
    """Retained gateway status; the offline form is the gateway's MQTT Last Will."""

    schema_version: Version = SCHEMA_VERSION
    gateway: Identifier
    community: CommunityPath
    state: GatewayState
    at: UtcTime
    agent_version: Name = ""
    config_version: Annotated[int, msgspec.Meta(ge=0)] = 0
    """The version of the cloud-pushed device config the gateway runs; 0 for none
    (it runs the devices of its own config file)."""


class CommandName(StrEnum):
    UNLOCK_DOOR = "unlock_door"
    RESET_ALARM = "reset_alarm"
    RELOAD_CONFIG = "reload_config"
    PING = "ping"
    SCAN = "scan"
    APPLY_CONFIG = "apply_config"
    """Args ``version`` (int) and ``document`` (a ``GatewayConfigDocument`` as JSON)."""
    READ_DEVICE = "read_device"
    """``device``: the device to read once, every point of its profile; no args. The
    result's data holds ``point.{name}`` per point (``READ_POINT_PREFIX``; engineering
    values) and ``elapsed_ms``; a device that does not answer fails with ``fault``
    (its kind: timeout, unreachable, ...)."""


ArgValue = Annotated[str, msgspec.Meta(max_length=1_048_576)] | int | float | bool
"""A command argument or result value; a string may hold a whole config document
(``apply_config``), hence the megabyte."""
ArgName = Annotated[str, msgspec.Meta(max_length=128)]

READ_POINT_PREFIX: Final = "point."
"""Prefix of each point's key in a ``read_device`` result's data (``point.temperature``):
it keeps a point named ``elapsed_ms`` or ``fault`` apart from the keys about the read."""


class Command(_Wire, kw_only=True, frozen=True):
    """A command from the cloud to one gateway; ``id`` makes a repeat harmless."""

    schema_version: Version = SCHEMA_VERSION
    id: Identifier
    name: CommandName
    device: Identifier | None = None
    args: Annotated[dict[ArgName, ArgValue], msgspec.Meta(max_length=64)] = {}
    issued_at: UtcTime
    expires_at: UtcTime


class CommandResult(_Wire, kw_only=True, frozen=True):
    """What a gateway did with a command, including a refusal and its reason."""

    schema_version: Version = SCHEMA_VERSION
    id: Identifier
    gateway: Identifier
    ok: bool
    detail: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    data: Annotated[dict[ArgName, ArgValue], msgspec.Meta(max_length=4096)] = {}
    finished_at: UtcTime


class PushedDevice(_Wire, kw_only=True, frozen=True):
    """One device of a pushed config, as the gateway config file's ``devices`` entry."""

    id: Identifier
    profile: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    address: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    building: Annotated[str, msgspec.Meta(max_length=64)] = ""
    unit: Annotated[str, msgspec.Meta(max_length=64)] = ""
    egress: bool = False
    poll_interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] | None = None


class GatewayConfigDocument(_Wire, kw_only=True, frozen=True):
    """The device list the cloud keeps for one gateway, and the profiles it uses.

    Sent as the ``document`` argument of an ``apply_config`` command. The gateway
    replaces its config file's ``devices`` with these and adds these profiles to its
    own (a pushed profile wins over a bundled one of the same id); everything else
    (identity, broker, drivers, cameras) stays as the file says.
    """

    schema_version: Version = SCHEMA_VERSION
    gateway: Identifier
    version: Annotated[int, msgspec.Meta(ge=1)]
    devices: Annotated[list[PushedDevice], msgspec.Meta(max_length=10_000)] = []
    profiles: Annotated[dict[Name, dict[str, Any]], msgspec.Meta(max_length=1000)] = {}
    """Profile documents by id, as ``DeviceProfile.model_dump(mode="json")`` gives them."""


class AckOutcome(StrEnum):
    """What the cloud made of one batch; every outcome ends the gateway's resending."""

    STORED = "stored"
    """Committed by this acknowledgement's transaction."""
    DUPLICATE = "duplicate"
    """Committed before, with the same content (a resend after a lost acknowledgement)."""
    REFUSED = "refused"
    """Never stored: quarantined in the cloud, or a different content under a stored
    batch key; ``reason`` says which. Resending cannot change it."""


class AckedBatch(_Wire, kw_only=True, frozen=True, omit_defaults=True):
    """One batch of a gateway, named as its spool sealed it."""

    spool_epoch: SpoolEpoch
    batch_seq: Sequence
    outcome: AckOutcome
    reason: Reason = ""


class BatchAck(_Wire, kw_only=True, frozen=True):
    """The cloud's word that batches of one gateway are settled, sent after the commit.

    The gateway deletes a batch from its spool only on this, never on the broker's
    PUBACK, so a broker that loses a message cannot make a batch vanish.
    """

    schema_version: Version = SCHEMA_VERSION
    gateway: Identifier
    batches: Annotated[list[AckedBatch], msgspec.Meta(min_length=1, max_length=10_000)]
    acked_at: UtcTime


class BatchHeader(msgspec.Struct, kw_only=True, frozen=True):
    """The key of a batch, read leniently from a payload that failed its full decode, so
    a refused batch can still be acknowledged as refused."""

    schema_version: Any = None
    gateway: Identifier
    spool_epoch: SpoolEpoch
    batch_seq: Sequence


_HEADER_DECODER = msgspec.json.Decoder(BatchHeader)


class _VersionOnly(msgspec.Struct):
    schema_version: Any = None


_VERSION_DECODER = msgspec.json.Decoder(_VersionOnly)


def read_batch_header(payload: bytes) -> BatchHeader | None:
    """The batch key of ``payload``, or None when even that cannot be read; never raises."""
    try:
        return _HEADER_DECODER.decode(payload)
    except msgspec.DecodeError:
        return None


WIRE_TYPES: dict[str, type[msgspec.Struct]] = {
    "telemetry_batch": TelemetryBatch,
    "event_batch": EventBatch,
    "status": Status,
    "command": Command,
    "command_result": CommandResult,
    "gateway_config": GatewayConfigDocument,
    "batch_ack": BatchAck,
}
"""The payloads that get a JSON Schema file in schemas/json/, by file stem."""

_W = TypeVar("_W", bound=msgspec.Struct)
_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {
    wire_type: msgspec.json.Decoder(wire_type) for wire_type in WIRE_TYPES.values()
}


def encode(payload: msgspec.Struct) -> bytes:
    """Serialise a wire struct to JSON bytes, fields in declaration order."""
    return _ENCODER.encode(payload)


def decode(payload: bytes, wire_type: type[_W], *, topic: str | None = None) -> _W:
    """Parse and validate ``payload`` as ``wire_type``.

    Raises WireError naming the first offending field (for example
    ``Expected `int` >= 0 - at `$.items[3].seq```) and carrying the payload, or
    SchemaVersionMismatch when the payload says another ``schema_version``.
    """
    decoder = _DECODERS.get(wire_type) or msgspec.json.Decoder(wire_type)
    try:
        result: _W = decoder.decode(payload)
    except msgspec.DecodeError as exc:
        found = _schema_version(payload)
        if isinstance(found, int) and found != SCHEMA_VERSION:
            raise SchemaVersionMismatch(
                found, SCHEMA_VERSION, topic=topic, payload=payload
            ) from None
        raise WireError(str(exc), topic=topic, payload=payload) from None
    return result


def _schema_version(payload: bytes) -> object:
    """The top-level ``schema_version`` of a JSON object, or None when there is none."""
    try:
        return _VERSION_DECODER.decode(payload).schema_version
    except msgspec.DecodeError:
        return None
