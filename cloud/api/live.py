"""The incident feed behind ``GET /incidents/live``: one LISTEN connection per API
process, fanned out to every open stream.

PostgreSQL notifies ``anju_incidents`` when a transaction that opened or changed an
incident (or added a note) commits: with the incident's summary, which the feed offers
at once, or with its bare id (a note; a summary too long for NOTIFY), and then the feed
reads the incidents of a burst of those in one query (migrations 0016, 0020). Each
stream keeps an offered change only when its scope holds the incident's community: a
hundred open consoles cost the database no more than one.

Notifications are not stored. When the LISTEN connection was lost and made again, or
a stream fell behind, or the feed could not read the incidents it was told of, the
streams concerned get ``RESYNC``: the page reloads the queue rather than trusting an
update it may have missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any, Final, Self

import psycopg
from psycopg.conninfo import make_conninfo

from cloud.api.models import IncidentSummary
from cloud.backoff import Backoff
from cloud.storage.database import storage_errors
from cloud.storage.pool import Pool
from cloud.storage.sql import queries

log = logging.getLogger(__name__)

CHANNEL: Final = "anju_incidents"
STREAM_DEPTH: Final = 512
"""Changes a stream may hold unsent; past it the stream is told to resync instead."""


class Signal(Enum):
    """What a stream hears besides a changed incident."""

    RESYNC = "resync"
    """Changes may have been missed: reload the queue."""
    CLOSED = "closed"
    """The feed is shutting down: end the stream (the page reconnects)."""


@dataclass(frozen=True, slots=True)
class Change:
    incident: IncidentSummary
    community_id: int


class Subscription:
    """One stream's view of the feed: the changes within its scope, in order."""

    def __init__(self, scope: list[int] | None) -> None:
        self._scope = None if scope is None else frozenset(scope)
        self._queue: asyncio.Queue[IncidentSummary | Signal] = asyncio.Queue(STREAM_DEPTH)
        self._behind = False

    def offer(self, change: Change) -> None:
        if self._scope is None or change.community_id in self._scope:
            self._put(change.incident)

    def signal(self, signal: Signal) -> None:
        self._put(signal)

    async def next(self) -> IncidentSummary | Signal:
        """The next change or signal; ``RESYNC`` first when changes were dropped."""
        if self._behind:
            self._behind = False
            while not self._queue.empty():
                if self._queue.get_nowait() is Signal.CLOSED:
                    return Signal.CLOSED
            return Signal.RESYNC
        return await self._queue.get()

    def _put(self, item: IncidentSummary | Signal) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._behind = True
            if item is Signal.CLOSED:
                self._queue.get_nowait()
                self._queue.put_nowait(item)


class IncidentFeed:
    """Listens while entered; ``subscribe`` gives each stream its ``Subscription``.

    ``listening`` is set while the LISTEN connection is up (the tests wait for it).
    """

    def __init__(self, database_url: str, pool: Pool) -> None:
        self._url = database_url
        self._pool = pool
        self._subscriptions: set[Subscription] = set()
        self._payloads: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.listening = asyncio.Event()

    async def __aenter__(self) -> Self:
        self._tasks = [
            asyncio.create_task(self._listen(), name="incident-feed:listen"),
            asyncio.create_task(self._publish(), name="incident-feed:publish"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def close(self) -> None:
        """End every stream, and any opened from now on, so a server shutting down is
        not held open by them."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription.signal(Signal.CLOSED)

    @asynccontextmanager
    async def subscribe(self, scope: list[int] | None) -> AsyncIterator[Subscription]:
        """The changes of incidents in ``scope`` (None: every community) from now on."""
        subscription = Subscription(scope)
        if self._closed:
            subscription.signal(Signal.CLOSED)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    def _broadcast(self, signal: Signal) -> None:
        for subscription in self._subscriptions:
            subscription.signal(signal)

    async def _listen(self) -> None:
        backoff = Backoff(initial=0.5, cap=10.0)
        while True:
            try:
                # TCP keepalives: a LISTEN connection cut without a reset (a network
                # partition) is otherwise never noticed and waits for nothing forever.
                listening = make_conninfo(
                    self._url,
                    keepalives=1,
                    keepalives_idle=30,
                    keepalives_interval=10,
                    keepalives_count=3,
                )
                async with await psycopg.AsyncConnection.connect(
                    listening, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    # Changes before this LISTEN (a first start with the database
                    # down, a reconnection) were not heard: every stream reloads.
                    self._broadcast(Signal.RESYNC)
                    backoff.reset()
                    async for notice in conn.notifies():
                        self._payloads.put_nowait(notice.payload)
            except Exception as exc:  # the feed must outlive any failure
                self.listening.clear()
                delay = backoff.next_delay()
                log.warning("incident feed: %s; listening again in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def _publish(self) -> None:
        while True:
            burst = [await self._payloads.get()]
            while not self._payloads.empty():
                burst.append(self._payloads.get_nowait())
            try:
                changes = await self._changes(burst)
            except Exception as exc:  # the feed must outlive any failure
                log.warning("incident feed: could not take notifications %s: %s", burst, exc)
                self._broadcast(Signal.RESYNC)
                continue
            for change in changes:
                for subscription in self._subscriptions:
                    subscription.offer(change)

    async def _changes(self, burst: list[str]) -> list[Change]:
        """The changes a burst of notifications tells of, in order: each incident's
        latest summary, then those read for the bare ids (read now, so the latest)."""
        summaries: dict[int, dict[str, Any]] = {}
        ids: set[int] = set()
        for payload in burst:
            if payload.startswith("{"):
                summary = json.loads(payload)
                summaries.pop(summary["id"], None)  # re-inserted last: dicts keep order
                summaries[summary["id"]] = summary
            else:
                ids.add(int(payload))
        read = await self._read(sorted(ids)) if ids else []
        return [_change(summary) for summary in [*summaries.values(), *read]]

    async def _read(self, ids: list[int]) -> list[dict[str, Any]]:
        with storage_errors("live_incidents"):
            async with self._pool.connection() as conn:
                cur = await conn.execute(queries()["live_incidents"], {"ids": ids})
                return [row[0] for row in await cur.fetchall()]


def _change(summary: dict[str, Any]) -> Change:
    return Change(IncidentSummary.model_validate(summary), int(summary["community_id"]))
