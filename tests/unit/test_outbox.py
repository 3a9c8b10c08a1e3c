"""Sealing and lane order of the outbox."""

import asyncio
from datetime import UTC, datetime

from edge.outbox import Outbox
from schemas.topics import Channel
from schemas.vocabulary import EventType, Metric, Severity
from schemas.wire import Event, EventBatch, Reading, TelemetryBatch, decode

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def reading(seq: int) -> Reading:
    return Reading(device="sd-1", ts=NOW, seq=seq, metric=Metric.TEMPERATURE, value=21.0)


def alarm(seq: int) -> Event:
    return Event(
        device="sd-1", ts=NOW, seq=seq, type=EventType.SMOKE_ALARM, severity=Severity.CRITICAL
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_events_jump_ahead_of_sealed_telemetry() -> None:
    outbox = Outbox("gw-1", "xijin/fenghuang", max_batch_items=2)
    outbox.add_readings([reading(1), reading(2)])
    outbox.add_events([alarm(3)])
    first = await outbox.take()
    assert first.channel is Channel.EVENTS
    batch = decode(first.payload, EventBatch)
    assert (batch.gateway, batch.spool_epoch, batch.items[0].seq) == ("gw-1", outbox.spool_epoch, 3)
    outbox.done(first)
    second = await outbox.take()
    assert second.channel is Channel.TELEMETRY
    assert decode(second.payload, TelemetryBatch).batch_seq < batch.batch_seq


async def test_unacknowledged_batch_is_taken_again_byte_for_byte() -> None:
    outbox = Outbox("gw-1", "xijin/fenghuang")
    outbox.add_events([alarm(1)])
    first = await outbox.take()
    again = await outbox.take()
    assert again is first
    outbox.done(first)
    assert outbox.empty


async def test_readings_linger_then_seal_into_one_batch() -> None:
    clock = Clock()
    outbox = Outbox("gw-1", "xijin/fenghuang", linger_s=0.5, clock=clock)
    outbox.add_readings([reading(1)])
    outbox.add_readings([reading(2)])
    assert outbox.depth[Channel.TELEMETRY] == 0
    clock.now += 0.5
    batch = await asyncio.wait_for(outbox.take(), timeout=1)
    assert [r.seq for r in decode(batch.payload, TelemetryBatch).items] == [1, 2]


async def test_full_batch_seals_without_waiting() -> None:
    outbox = Outbox("gw-1", "xijin/fenghuang", linger_s=60, max_batch_items=3)
    outbox.add_readings([reading(i) for i in range(1, 8)])
    assert outbox.depth[Channel.TELEMETRY] == 2
    outbox.flush()
    sizes = []
    while not outbox.empty:
        batch = await outbox.take()
        sizes.append(batch.items)
        outbox.done(batch)
    assert sizes == [3, 3, 1]
