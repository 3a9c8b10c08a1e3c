"""The config pusher: sends gateways the device config the registry wants them to run,
and records what they answer.

One ``ConfigWorker`` keeps one broker connection (``cloud.configs.link``) and runs two
loops on it:

- **push**: every ``poll_s`` (jittered), claim the gateways whose wanted version is due
  (``configs_claim_pushes``: not running there, not refused, never pushed or unanswered
  past the retry wait) and publish each an ``apply_config`` command at QoS 1, in the
  claiming transaction: a publish that fails rolls the claim back and the version stays
  due. Ids are one per attempt (``cloud.configs.commands`` says why).
- **listen**: every gateway's ``cmd-result/+`` and ``status``. An applied answer moves
  ``config_applied`` forward; a refusal the gateway marks invalid stores its reason in
  ``config_error`` and stops the pushes of that version; any other failure (expired,
  busy, interrupted) is logged and left to the retry. An online status's
  ``config_version`` is the gateway's own word on what it runs: it may move
  ``config_applied`` back (a replaced box runs 0) and makes a gateway that is behind due
  at once. Offline statuses are ignored: the Last Will carries the version of its
  connect time, which a later apply outdated.

The same session carries installers' device tests (``cloud.configs.device_test_store``
says why they come through the database): a **reads** loop claims, every
``read_poll_s``, the test requests not yet sent and publishes each a ``read_device``
command (id ``test-{request}``, expiring with the request) in the claiming transaction,
and the listen loop records each answer on its request, which the API is waiting on.
A test is sent once and never retried: the installer is waiting for it, and asks again.

Any number of workers may run, in one process or several: claims skip locked rows and
stamp ``config_pushed_at``, so one attempt goes out per due version; every worker hears
every answer and status, and recording them twice changes nothing.

A broker or database failure ends the session; the worker reconnects after capped,
jittered backoff (reset after a round that reached the database). Nothing is lost by
it (``cloud.configs.link``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Final

from cloud.backoff import Backoff
from cloud.configs.commands import (
    Answer,
    Verdict,
    apply_config,
    command_id,
    document_problem,
    read_answer,
)
from cloud.configs.device_test_store import claim_requests, record_answer
from cloud.configs.device_tests import ReadAnswer, read_device
from cloud.configs.device_tests import read_answer as read_test_answer
from cloud.configs.errors import ConfigLinkLost
from cloud.configs.link import ConfigLink
from cloud.configs.store import claim_pushes, record_applied, record_refused, record_status
from cloud.errors import StorageError
from cloud.storage.database import storage_errors
from cloud.storage.pool import Pool, open_pool
from schemas.broker import BrokerAddress
from schemas.errors import WireError
from schemas.topics import Channel, parse_topic, subscription
from schemas.wire import GatewayState, Status, decode

log = logging.getLogger(__name__)

CHECKOUT_TIMEOUT_S: Final = 10.0
STATS_INTERVAL_S: Final = 60.0
SUBSCRIPTIONS: Final = (subscription(Channel.COMMAND_RESULT), subscription(Channel.STATUS))


@dataclass(frozen=True, slots=True)
class PushPolicy:
    """When configs are pushed and how long a command lives.

    ``poll_s``: how often the database is asked for due pushes (a new version reaches
    its gateway within about that). ``retry_s`` and ``retry_cap_s``: the shortest and
    longest wait before an unanswered version is pushed again (the wait grows with the
    version's age in between). ``lifetime_s``: from a command's issue to its expiry, the
    longest it may wait in an offline gateway's broker session. ``batch``: pushes per
    claim. ``backoff_initial_s`` and ``backoff_cap_s``: reconnect delays. ``read_poll_s``:
    how often the database is asked for device tests to send (an installer waits on
    each, so far more often than for configs; the query reads a partial index of the
    unsent ones).
    """

    poll_s: float = 1.0
    retry_s: float = 30.0
    retry_cap_s: float = 1800.0
    lifetime_s: float = 300.0
    batch: int = 100
    backoff_initial_s: float = 1.0
    backoff_cap_s: float = 30.0
    read_poll_s: float = 0.2


@dataclass(slots=True)
class ConfigCounters:
    """What the config workers of this process did since it started."""

    pushes: int = 0
    """``apply_config`` commands the broker acknowledged."""
    applied: int = 0
    """Answers that moved a gateway's ``config_applied`` forward."""
    refused: int = 0
    """Versions refused as invalid (by a gateway, or by the cloud's own check)."""
    failed: int = 0
    """Answers of commands not carried out for a passing reason; retried."""
    reported: int = 0
    """Statuses that changed a gateway's row."""
    reads_sent: int = 0
    """``read_device`` commands of device tests the broker acknowledged."""
    reads_answered: int = 0
    """Answers to them recorded on their requests."""
    malformed: int = 0
    """Results and statuses that could not be read."""
    errors: int = 0
    """Sessions ended by the broker or the database."""

    def snapshot(self) -> dict[str, int]:
        return {each.name: getattr(self, each.name) for each in fields(self)}


@dataclass(slots=True)
class ConfigWorker:
    """One pusher and listener on one broker session; ``run`` until cancelled.

    ``client_id`` must be distinct among the workers connected to the broker (the
    broker drops a connection when another takes its id).
    """

    pool: Pool
    broker: BrokerAddress
    client_id: str
    policy: PushPolicy = field(default_factory=PushPolicy)
    counters: ConfigCounters = field(default_factory=ConfigCounters)
    ca_file: Path | None = None
    """The CA of an ``mqtts://`` broker; None trusts the system's."""
    uniform: Callable[[float, float], float] = random.uniform
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the first session listens for answers (never cleared)."""

    async def run(self) -> None:
        """Push and listen until cancelled, reconnecting after broker or database failures."""
        policy = self.policy
        backoff = Backoff(
            initial=policy.backoff_initial_s, cap=policy.backoff_cap_s, uniform=self.uniform
        )
        while True:
            try:
                await self._session(backoff)
            except* ConfigLinkLost as lost:
                self.counters.errors += 1
                log.warning("%s: broker link lost: %s", self.client_id, _first(lost))
            except* StorageError as failed:
                self.counters.errors += 1
                log.warning("%s: database failed: %s", self.client_id, _first(failed))
            except* Exception:
                # The task's outer loop: log with context, count, start a new session.
                self.counters.errors += 1
                log.exception("%s: session failed unexpectedly", self.client_id)
            delay = backoff.next_delay()
            log.info("%s: reconnecting in %.1f s", self.client_id, delay)
            await asyncio.sleep(delay)

    async def _session(self, backoff: Backoff) -> None:
        async with ConfigLink(self.broker, client_id=self.client_id, ca_file=self.ca_file) as link:
            await link.subscribe(SUBSCRIPTIONS)
            log.info("%s: pushing configs on %s", self.client_id, self.broker.redacted())
            self.subscribed.set()
            async with asyncio.TaskGroup() as loops:
                loops.create_task(self._push(link, backoff), name=f"{self.client_id}:push")
                loops.create_task(self._send_reads(link), name=f"{self.client_id}:reads")
                loops.create_task(self._listen(link), name=f"{self.client_id}:listen")

    async def _push(self, link: ConfigLink, backoff: Backoff) -> None:
        policy = self.policy
        while True:
            pushed = await self.push_once(link)
            backoff.reset()
            if pushed < policy.batch:
                await asyncio.sleep(policy.poll_s * self.uniform(0.5, 1.0))

    async def push_once(self, link: ConfigLink) -> int:
        """Claim the due pushes and publish them in one transaction; return how many.

        Raises StorageError or ConfigLinkLost; either rolls every claim of the round
        back, so those versions are due again at the next round.
        """
        policy = self.policy
        with storage_errors("configs_claim_pushes"):
            return await self._push_round(link, policy)

    async def _push_round(self, link: ConfigLink, policy: PushPolicy) -> int:
        async with (
            self.pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn,
            conn.transaction(),
        ):
            claimed = await claim_pushes(
                conn, limit=policy.batch, retry_s=policy.retry_s, retry_cap_s=policy.retry_cap_s
            )
            for push in claimed:
                problem = document_problem(push)
                if problem is not None:
                    await record_refused(conn, push.gateway, push.community, push.version, problem)
                    self.counters.refused += 1
                    log.error("%s: not pushed to %s: %s", self.client_id, push.gateway, problem)
                    continue
                topic, payload = apply_config(push, lifetime_s=policy.lifetime_s)
                await link.publish(topic, payload)
                self.counters.pushes += 1
                log.info(
                    "%s: pushed config version %d to %s as %s",
                    self.client_id,
                    push.version,
                    push.gateway,
                    command_id(push.version, push.pushed_at),
                )
        return len(claimed)

    async def _send_reads(self, link: ConfigLink) -> None:
        policy = self.policy
        while True:
            sent = await self.send_reads_once(link)
            if sent < policy.batch:
                await asyncio.sleep(policy.read_poll_s * self.uniform(0.5, 1.0))

    async def send_reads_once(self, link: ConfigLink) -> int:
        """Claim the unsent device tests and publish them in one transaction; return how
        many. Raises StorageError or ConfigLinkLost; either rolls the claims back."""
        with storage_errors("device_tests_claim"):
            async with (
                self.pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn,
                conn.transaction(),
            ):
                claimed = await claim_requests(conn, limit=self.policy.batch)
                for request in claimed:
                    topic, payload = read_device(request)
                    await link.publish(topic, payload)
                    self.counters.reads_sent += 1
                    log.info(
                        "%s: asked %s to read %s (device test %d)",
                        self.client_id,
                        request.gateway,
                        request.device,
                        request.id,
                    )
        return len(claimed)

    async def _listen(self, link: ConfigLink) -> None:
        async for topic, payload in link.messages():
            await self.hear(topic, payload)

    async def hear(self, topic: str, payload: bytes) -> None:
        """Record what one message on a result or status topic says.

        A message that cannot be read is logged and counted; StorageError is raised.
        """
        try:
            address = parse_topic(topic)
            if address.channel is Channel.STATUS:
                await self._status(address.community, address.gateway, topic, payload)
            elif address.channel is Channel.COMMAND_RESULT and address.command_id is not None:
                ident = address.command_id
                answer = read_answer(
                    address.community, address.gateway, ident, payload, topic=topic
                )
                if answer is not None:
                    await self._answer(answer)
                read = read_test_answer(
                    address.community, address.gateway, ident, payload, topic=topic
                )
                if read is not None:
                    await self._read_answer(read)
        except WireError as exc:
            self.counters.malformed += 1
            log.warning("%s: unreadable message on %s: %s", self.client_id, topic, exc)

    async def _status(self, community: str, gateway: str, topic: str, payload: bytes) -> None:
        status = decode(payload, Status, topic=topic)
        if status.state is not GatewayState.ONLINE:
            return
        if status.gateway != gateway or status.community != community:
            raise WireError(
                f"status of {status.community}/{status.gateway} on the topic of "
                f"{community}/{gateway}",
                topic=topic,
            )
        with storage_errors("configs_record_status"):
            async with self.pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn:
                changed = await record_status(conn, gateway, community, status.config_version)
        if changed:
            self.counters.reported += 1
            log.info(
                "%s: %s reports config version %d",
                self.client_id,
                gateway,
                status.config_version,
            )

    async def _answer(self, answer: Answer) -> None:
        if answer.verdict is Verdict.APPLIED:
            with storage_errors("configs_record_applied"):
                async with self.pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn:
                    moved = await record_applied(conn, answer)
            if moved:
                self.counters.applied += 1
                log.info(
                    "%s: %s runs config version %d (%s): %s",
                    self.client_id,
                    answer.gateway,
                    answer.running,
                    answer.command_id,
                    answer.detail,
                )
        elif answer.verdict is Verdict.REFUSED:
            with storage_errors("configs_record_refused"):
                async with self.pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn:
                    recorded = await record_refused(
                        conn, answer.gateway, answer.community, answer.requested, answer.detail
                    )
            self.counters.refused += 1 if recorded else 0
            log.warning(
                "%s: %s refused config version %d (%s)%s: %s",
                self.client_id,
                answer.gateway,
                answer.requested,
                answer.command_id,
                "" if recorded else ", a version no longer wanted",
                answer.detail,
            )
        else:
            self.counters.failed += 1
            log.warning(
                "%s: %s did not apply config version %d (%s), pushed again later: %s",
                self.client_id,
                answer.gateway,
                answer.requested,
                answer.command_id,
                answer.detail,
            )

    async def _read_answer(self, answer: ReadAnswer) -> None:
        with storage_errors("device_tests_record"):
            async with self.pool.connection(timeout=CHECKOUT_TIMEOUT_S) as conn:
                recorded = await record_answer(conn, answer)
        if recorded:
            self.counters.reads_answered += 1
            log.info(
                "%s: %s answered device test %d: %s",
                self.client_id,
                answer.gateway,
                answer.request_id,
                answer.detail,
            )


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def run_config_pusher(
    database_url: str,
    broker: BrokerAddress,
    *,
    client_id: str,
    ca_file: Path | None = None,
    policy: PushPolicy | None = None,
    stop: asyncio.Event | None = None,
    counters: ConfigCounters | None = None,
    started: asyncio.Event | None = None,
) -> None:
    """Run one ``ConfigWorker`` as ``client_id`` on a pool of its own until ``stop`` is set.

    ``started`` is set once it listens for answers. Its counters (fresh ones when not
    given) are logged every minute.
    """
    totals = counters if counters is not None else ConfigCounters()
    halt = stop if stop is not None else asyncio.Event()
    async with open_pool(database_url, name="configs", max_size=2) as pool:
        worker = ConfigWorker(
            pool,
            broker,
            client_id,
            policy=policy or PushPolicy(),
            counters=totals,
            ca_file=ca_file,
        )
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(worker.run(), name=f"configs:{client_id}"),
                group.create_task(_log_counters(totals), name="configs:stats"),
            ]
            if started is not None:
                tasks.append(
                    group.create_task(_set_when(worker.subscribed, started), name="configs:started")
                )
            await halt.wait()
            for task in tasks:
                task.cancel()


async def _set_when(event: asyncio.Event, then: asyncio.Event) -> None:
    await event.wait()
    then.set()


async def _log_counters(counters: ConfigCounters) -> None:
    while True:
        await asyncio.sleep(STATS_INTERVAL_S)
        log.info("config push counters: %s", counters.snapshot())
