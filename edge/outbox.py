"""Sealed batches waiting for the broker, in two lanes: events ahead of telemetry.

A batch is sealed exactly once (header, ``batch_seq``, bytes) and then resent byte for
byte until the broker acknowledges it, which is what lets the cloud drop a repeat by
its (gateway, spool_epoch, batch_seq). Events are sealed at once; readings linger a
moment so many share one message, because a Python MQTT client manages only a few
thousand messages a second.

This outbox lives in memory: it survives broker outages but not a restart of the
agent. The durable on-disk spool with a disk budget replaces it (issue 4) behind the
same interface.
"""

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.topics import Channel
from schemas.wire import Event, EventBatch, Reading, TelemetryBatch, encode


@dataclass(frozen=True, slots=True)
class SealedBatch:
    channel: Channel
    batch_seq: int
    payload: bytes
    items: int


class Outbox:
    """Seals items into batches and hands them out events first.

    ``take`` returns the next batch without removing it; ``done`` removes it once the
    broker acknowledged it. A batch that failed to go out is simply taken again.
    """

    def __init__(
        self,
        gateway: str,
        community: str,
        *,
        linger_s: float = 0.5,
        max_batch_items: int = 2000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        self.community = community
        self.spool_epoch = secrets.token_hex(8)
        self._linger_s = linger_s
        self._max_items = max_batch_items
        self._clock = clock
        self._next_seq = 0
        self._lanes: dict[Channel, deque[SealedBatch]] = {
            Channel.EVENTS: deque(),
            Channel.TELEMETRY: deque(),
        }
        self._pending: list[Reading] = []
        self._pending_since = 0.0
        self._changed = asyncio.Event()

    @property
    def depth(self) -> dict[Channel, int]:
        """Sealed batches waiting per lane (readings still lingering are not counted)."""
        return {channel: len(lane) for channel, lane in self._lanes.items()}

    @property
    def empty(self) -> bool:
        return not self._pending and not any(self._lanes.values())

    def _seal(self, channel: Channel, payload: EventBatch | TelemetryBatch) -> None:
        self._lanes[channel].append(
            SealedBatch(channel, payload.batch_seq, encode(payload), len(payload.items))
        )
        self._changed.set()

    def _claim_seq(self) -> int:
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        return seq

    def add_events(self, events: list[Event]) -> None:
        """Seal ``events`` into a batch at once: alarms never linger."""
        if events:
            batch = EventBatch(
                gateway=self.gateway,
                community=self.community,
                spool_epoch=self.spool_epoch,
                batch_seq=self._claim_seq(),
                sent_at=datetime.now(UTC),
                items=events,
            )
            self._seal(Channel.EVENTS, batch)

    def add_readings(self, readings: list[Reading]) -> None:
        """Queue readings; they are sealed when the batch is full or has lingered enough."""
        if not readings:
            return
        if not self._pending:
            self._pending_since = self._clock()
        self._pending.extend(readings)
        while len(self._pending) >= self._max_items:
            self._seal_readings(self._max_items)
        self._changed.set()

    def flush(self) -> None:
        """Seal lingering readings now (at linger time and at shutdown)."""
        while self._pending:
            self._seal_readings(self._max_items)

    def _seal_readings(self, count: int) -> None:
        chunk, self._pending = self._pending[:count], self._pending[count:]
        batch = TelemetryBatch(
            gateway=self.gateway,
            community=self.community,
            spool_epoch=self.spool_epoch,
            batch_seq=self._claim_seq(),
            sent_at=datetime.now(UTC),
            items=chunk,
        )
        self._seal(Channel.TELEMETRY, batch)
        self._pending_since = self._clock()

    async def take(self) -> SealedBatch:
        """The next batch to send, events first; waits until there is one."""
        while True:
            if self._pending and self._clock() - self._pending_since >= self._linger_s:
                self.flush()
            for lane in self._lanes.values():
                if lane:
                    return lane[0]
            self._changed.clear()
            wait = self._linger_s - (self._clock() - self._pending_since) if self._pending else None
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=wait)
            except TimeoutError:
                continue

    def done(self, batch: SealedBatch) -> None:
        """Drop ``batch`` after the broker acknowledged it."""
        lane = self._lanes[batch.channel]
        if lane and lane[0] is batch:
            lane.popleft()
