"""Delivery workers: take due outbox rows, send them, record what happened.

Any number of workers, in one process or many, share the ``webhook_deliveries``
table. A worker claims due rows with ``FOR UPDATE SKIP LOCKED`` in one short
statement that also gives each a fresh claim token, counts the attempt and leases it
(``next_attempt_at`` pushed past the longest a send may take), then sends them
concurrently outside any transaction and records each outcome only if its token is
still the row's. So:

- no two live workers send one delivery at once: a leased row is not due;
- nothing lives in memory: a worker killed at any point leaves its rows pending,
  due again when their lease ends (``timeout_s`` + ``lease_margin_s``), and its
  retry times are in the rows;
- delivery is **at least once**: a worker that dies after the receiver answered
  2xx but before recording it sends that delivery again when the lease ends. Every
  attempt of a delivery, and every replay of it, carries the same ``webhook-id``,
  which is how Standard Webhooks receivers drop repeats.

Outcomes: 2xx delivers; 410 Gone dead-letters the delivery and disables the
subscription, dead-lettering its other pending deliveries; any other failure is
retried on the schedule (``cloud.webhooks.retry``) until the attempts run out, then
the row is a dead letter, listed and replayed through ``cloud.webhooks.subscriptions``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final
from uuid import UUID

import psycopg
from psycopg.rows import class_row

from cloud.backoff import Backoff
from cloud.errors import StorageError
from cloud.settings import WebhookSettings
from cloud.storage.database import storage_errors
from cloud.storage.pool import Pool, open_pool
from cloud.storage.sql import queries
from cloud.webhooks.retry import retry_delay
from cloud.webhooks.sender import Attempt, Sender

log = logging.getLogger(__name__)

CHECKOUT_TIMEOUT_S: Final = 10.0
STATS_INTERVAL_S: Final = 60.0
_STORAGE_BACKOFF_CAP_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery this worker holds until ``next_attempt_at``: what it needs to send it."""

    id: int
    message_id: str
    subscription_id: int
    attempts: int
    """Attempts including the one about to be made."""
    claim_token: UUID
    body: str
    url: str
    secrets: list[str]
    subscription_status: str


@dataclass(slots=True)
class DeliveryCounters:
    """What the workers of a process did since it started."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    disabled: int = 0
    lost_claims: int = 0
    """Outcomes not recorded because the row had been taken back (lease expired,
    subscription disabled meanwhile)."""
    errors: int = 0
    """Rounds that failed on the database or unexpectedly."""

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class DeliveryWorker:
    """One worker loop; ``run`` until ``stop`` is set, ``run_once`` for one round."""

    pool: Pool
    settings: WebhookSettings
    sender: Sender
    name: str = "webhooks-0"
    counters: DeliveryCounters = field(default_factory=DeliveryCounters)
    uniform: Callable[[float, float], float] = random.uniform

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Deliver until ``stop`` is set (or cancelled), finishing the round in flight.

        A full batch is followed at once by the next; otherwise the worker sleeps up
        to ``poll_interval_s`` (jittered, so workers drift apart). A round that fails
        on the database is logged and retried with capped backoff; the rows it claimed
        are due again when their lease ends.
        """
        settings = self.settings
        backoff = Backoff(
            initial=settings.poll_interval_s,
            cap=max(settings.poll_interval_s, _STORAGE_BACKOFF_CAP_S),
            uniform=self.uniform,
        )
        halt = stop if stop is not None else asyncio.Event()
        while not halt.is_set():
            try:
                handled = await self.run_once()
            except (StorageError, psycopg.Error) as exc:
                self.counters.errors += 1
                delay = backoff.next_delay()
                log.warning("%s: database failed, next round in %.1f s: %s", self.name, delay, exc)
                await _sleep_unless(halt, delay)
                continue
            except Exception:
                # The outer loop of a long-lived task: log with context, count, go on.
                self.counters.errors += 1
                delay = backoff.next_delay()
                log.exception("%s: round failed unexpectedly, next in %.1f s", self.name, delay)
                await _sleep_unless(halt, delay)
                continue
            backoff.reset()
            if handled < settings.batch_size:
                await _sleep_unless(halt, settings.poll_interval_s * self.uniform(0.5, 1.0))

    async def run_once(self) -> int:
        """Claim due deliveries, send them concurrently, record each; return how many.

        Raises StorageError when the claim fails; a failed recording is logged and
        counted, and its row comes due again when its lease ends.
        """
        claimed = await self._claim()
        if claimed:
            async with asyncio.TaskGroup() as group:
                for delivery in claimed:
                    group.create_task(self._deliver(delivery), name=f"webhook:{delivery.id}")
        return len(claimed)

    async def _claim(self) -> list[ClaimedDelivery]:
        with storage_errors("claim_webhook_deliveries"):
            async with self.pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn:
                cur = conn.cursor(row_factory=class_row(ClaimedDelivery))
                await cur.execute(
                    queries()["claim_webhook_deliveries"],
                    {"limit": self.settings.batch_size, "lease_s": self.settings.lease_s},
                )
                return await cur.fetchall()

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        if delivery.subscription_status != "active":
            # Enqueued while the subscription was being disabled: never send it.
            attempt = Attempt(None, "subscription disabled")
        else:
            try:
                attempt = await self.sender.send(
                    url=delivery.url,
                    secrets=delivery.secrets,
                    message_id=delivery.message_id,
                    body=delivery.body.encode(),
                )
            except Exception as exc:
                # The outer edge of this delivery's task: an unforeseen failure is this
                # delivery's failed attempt (retried, then a dead letter), never a crash
                # of the TaskGroup, which would cancel the batch's other sends mid-flight
                # (sent, unrecorded, so sent again) and claim this row again forever.
                self.counters.errors += 1
                log.exception(
                    "%s: delivery %d (%s) to %s failed unexpectedly",
                    self.name,
                    delivery.id,
                    delivery.message_id,
                    delivery.url,
                )
                attempt = Attempt(None, f"{type(exc).__name__}: {exc}")
        try:
            await self._record(delivery, attempt)
        except StorageError as exc:
            self.counters.errors += 1
            log.warning(
                "%s: delivery %d (%s) attempt %d: %s, but recording it failed (%s); "
                "it is due again when its lease ends",
                self.name,
                delivery.id,
                delivery.message_id,
                delivery.attempts,
                "delivered" if attempt.delivered else attempt.error,
                exc,
            )

    async def _record(self, delivery: ClaimedDelivery, attempt: Attempt) -> None:
        sql = queries()
        key = {"id": delivery.id, "claim_token": delivery.claim_token}
        outcome = {"status_code": attempt.status_code, "error": attempt.error}
        async with self.pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn:
            if attempt.delivered:
                with storage_errors("record_webhook_delivered"):
                    cur = await conn.execute(
                        sql["record_webhook_delivered"], {**key, "status_code": attempt.status_code}
                    )
                self._count(cur.rowcount, "delivered", delivery, attempt)
                return
            if attempt.gone or delivery.subscription_status != "active":
                async with conn.transaction():
                    with storage_errors("record_webhook_dead"):
                        cur = await conn.execute(sql["record_webhook_dead"], {**key, **outcome})
                    recorded = cur.rowcount
                    if attempt.gone and recorded:
                        reason = f"the endpoint answered 410 Gone to delivery {delivery.message_id}"
                        with storage_errors("disable_webhook_subscription"):
                            await conn.execute(
                                sql["disable_webhook_subscription"],
                                {"id": delivery.subscription_id, "reason": reason, "scope": None},
                            )
                        self.counters.disabled += 1
                        log.warning(
                            "%s: subscription %d disabled: %s",
                            self.name,
                            delivery.subscription_id,
                            reason,
                        )
                self._count(recorded, "dead", delivery, attempt)
                return
            delay = retry_delay(
                self.settings,
                attempts=delivery.attempts,
                retry_after_s=attempt.retry_after_s,
                uniform=self.uniform,
            )
            if delay is None:
                with storage_errors("record_webhook_dead"):
                    cur = await conn.execute(sql["record_webhook_dead"], {**key, **outcome})
                self._count(cur.rowcount, "dead", delivery, attempt)
                return
            with storage_errors("record_webhook_retry"):
                cur = await conn.execute(
                    sql["record_webhook_retry"], {**key, **outcome, "delay_s": delay}
                )
            self._count(cur.rowcount, "retried", delivery, attempt, delay)

    def _count(
        self,
        recorded: int,
        outcome: str,
        delivery: ClaimedDelivery,
        attempt: Attempt,
        delay: float | None = None,
    ) -> None:
        if not recorded:
            self.counters.lost_claims += 1
            log.info(
                "%s: delivery %d attempt %d ended (%s) after its claim was taken back",
                self.name,
                delivery.id,
                delivery.attempts,
                "delivered" if attempt.delivered else attempt.error,
            )
            return
        setattr(self.counters, outcome, getattr(self.counters, outcome) + 1)
        if outcome == "delivered":
            log.debug("%s: delivered %s", self.name, delivery.message_id)
        elif outcome == "retried":
            log.info(
                "%s: delivery %d (%s) attempt %d failed: %s; next in %.1f s",
                self.name,
                delivery.id,
                delivery.message_id,
                delivery.attempts,
                attempt.error,
                delay,
            )
        else:
            log.warning(
                "%s: delivery %d (%s) is a dead letter after %d attempts: %s",
                self.name,
                delivery.id,
                delivery.message_id,
                delivery.attempts,
                attempt.error,
            )


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass


async def run_delivery_workers(
    database_url: str,
    settings: WebhookSettings,
    *,
    workers: int = 1,
    stop: asyncio.Event | None = None,
    counters: DeliveryCounters | None = None,
) -> None:
    """Run ``workers`` delivery workers on one pool and one HTTP client until ``stop``.

    Each finishes the round it is in (at most ``timeout_s`` of sending) before
    returning, so a graceful stop leaves no claimed row waiting for its lease. Raises
    ValueError for fewer than one worker.
    """
    if workers < 1:
        raise ValueError(f"at least one webhook worker, not {workers}")
    totals = counters if counters is not None else DeliveryCounters()
    halt = stop if stop is not None else asyncio.Event()
    async with (
        open_pool(database_url, name="webhooks", max_size=workers * 2) as pool,
        Sender(settings) as sender,
        asyncio.TaskGroup() as group,
    ):
        for index in range(workers):
            worker = DeliveryWorker(
                pool, settings, sender, name=f"webhooks-{index}", counters=totals
            )
            group.create_task(worker.run(halt), name=f"webhooks:{index}")
        group.create_task(_log_counters(totals, halt), name="webhooks:stats")


async def _log_counters(counters: DeliveryCounters, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await _sleep_unless(stop, STATS_INTERVAL_S)
        log.info("webhook counters: %s", counters.snapshot())
