"""The cloud's acknowledgement of batches to the gateways that sent them (``BatchAck``).

A PUBACK only says the broker has a message; the gateway deletes a batch from its
spool only when this acknowledgement says the batch is settled. After a group's
transaction commits, each of its messages whose batch key is known becomes an
``AckedBatch``: stored, duplicate (committed before; the gateway's resend after a lost
acknowledgement) or refused (quarantined or conflicting, with the reason: resending
cannot change it). They are gathered into one ``BatchAck`` per gateway, published on
that gateway's ``ack`` topic, so a group of 500 messages from 40 gateways costs 40
publishes, not 500.

Pure: builds topics and payloads. The consumer hands them to its broker connection,
after the commit and before the PUBACKs of the group's messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, get_args

from cloud.ingest.counters import BatchOutcome
from cloud.ingest.writer import Decoded
from schemas.topics import Channel, topic_for
from schemas.wire import AckedBatch, AckOutcome, BatchAck, Reason, encode

ACK_OUTCOMES: Final[dict[str, AckOutcome]] = {
    "stored": AckOutcome.STORED,
    "duplicate": AckOutcome.DUPLICATE,
    "quarantined": AckOutcome.REFUSED,
    "conflict": AckOutcome.REFUSED,
}
"""What each kind of ``BatchOutcome`` tells the gateway."""

BATCHES_PER_ACK: Final = 10_000
"""``BatchAck.batches``' bound on the wire: a larger share of a group is split."""
_REASON_MAX: Final[int] = get_args(Reason)[1].max_length
"""``AckedBatch.reason``'s bound on the wire; a longer quarantine reason is cut to it,
or the gateway would refuse the whole acknowledgement."""


@dataclass(frozen=True, slots=True)
class AckMessage:
    """One ``BatchAck``, encoded, and where it goes."""

    topic: str
    payload: bytes
    batches: int


def batch_acks(
    group: Sequence[Decoded], outcomes: Sequence[BatchOutcome], *, acked_at: datetime
) -> list[AckMessage]:
    """The acknowledgements of a committed group, one per gateway (in order of first
    appearance), from its messages and their outcomes (one each, in order).

    A message is acknowledged to the gateway its topic names, since only that gateway
    may publish there. None is sent for a message whose topic did not parse (no gateway
    to send to) or whose batch key could not be read (nothing to name). A key twice in
    the group (a redelivery racing its original) is named once, with its first outcome.
    """
    by_gateway: dict[tuple[str, str], dict[tuple[str, int], AckedBatch]] = {}
    for decoded, outcome in zip(group, outcomes, strict=True):
        if decoded.address is None or outcome.key is None:
            continue
        epoch, seq = outcome.key
        refused = ACK_OUTCOMES[outcome.kind] is AckOutcome.REFUSED
        acked = AckedBatch(
            spool_epoch=epoch,
            batch_seq=seq,
            outcome=ACK_OUTCOMES[outcome.kind],
            reason=outcome.reason[:_REASON_MAX] if refused else "",
        )
        address = (decoded.address.community, decoded.address.gateway)
        by_gateway.setdefault(address, {}).setdefault(outcome.key, acked)
    messages: list[AckMessage] = []
    for (community, gateway), acked_batches in by_gateway.items():
        batches = list(acked_batches.values())
        topic = topic_for(community, gateway, Channel.ACK)
        for start in range(0, len(batches), BATCHES_PER_ACK):
            part = batches[start : start + BATCHES_PER_ACK]
            ack = BatchAck(gateway=gateway, batches=part, acked_at=acked_at)
            messages.append(AckMessage(topic, encode(ack), len(part)))
    return messages
