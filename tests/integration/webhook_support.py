"""What the webhook tests share: a real HTTP receiver on a loopback port, a community
with incidents, delivery workers with a schedule of fractions of a second, and the
cloud's API presenting a key.

The receiver is a uvicorn server running a bare ASGI app in the test's event loop. It
records every request (headers and exact body bytes) and answers from a script: per
``webhook-id`` it can fail the first N requests with a status (and ``Retry-After``),
answer 410, or hang until the test ends.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import uvicorn
from psycopg import AsyncConnection
from standardwebhooks import Webhook

from anju.services.ports import LOOPBACK, free_port
from cloud.api.app import create_app
from cloud.registry import register_community
from cloud.settings import CloudSettings, WebhookSettings
from cloud.storage.pool import open_pool
from cloud.webhooks.delivery import DeliveryWorker
from cloud.webhooks.outbox import WebhookEvent, enqueue
from cloud.webhooks.sender import Sender
from cloud.webhooks.signing import generate_secret
from tests.api_support import api_client

COMMUNITY = "xijin/fenghuang"

Scope = dict[str, Any]
Message = dict[str, Any]


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it, and what it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int | None
    """None when the receiver hung and never answered."""

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Script:
    """How the receiver answers: per webhook-id, the first ``fail_first`` requests get
    ``fail_status`` (with ``retry_after`` when set); ``hang_first`` requests before
    them never get an answer. Every other request gets ``status``."""

    status: int = 200
    fail_first: int = 0
    fail_status: int = 500
    retry_after: str | None = None
    hang_first: int = 0
    delay_s: float = 0.0


@dataclass
class Receiver:
    """The test's webhook endpoint: ``url``, the ``requests`` it got, its ``script``."""

    port: int
    script: Script = field(default_factory=Script)
    requests: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _seen: Counter[str] = field(default_factory=Counter)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/hook"

    def answered_2xx(self, webhook_id: str) -> int:
        return sum(
            1
            for r in self.requests
            if r.webhook_id == webhook_id and r.status is not None and 200 <= r.status < 300
        )

    def ids(self) -> Counter[str]:
        return Counter(r.webhook_id for r in self.requests)

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        webhook_id = headers.get("webhook-id", "")
        self._seen[webhook_id] += 1
        nth = self._seen[webhook_id]
        script = self.script
        if script.delay_s:
            await asyncio.sleep(script.delay_s)
        if nth <= script.hang_first:
            self.requests.append(Received(scope["path"], headers, body, time.monotonic(), None))
            await self.release.wait()
            return
        status = (
            script.fail_status if nth <= script.hang_first + script.fail_first else script.status
        )
        extra: list[tuple[bytes, bytes]] = []
        if status != script.status and script.retry_after is not None:
            extra.append((b"retry-after", script.retry_after.encode()))
        self.requests.append(Received(scope["path"], headers, body, time.monotonic(), status))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": b"ok" if status < 300 else b"no"})


@asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    """A receiver listening on a free loopback port until the block ends."""
    receiver = Receiver(free_port())
    config = uvicorn.Config(
        receiver,
        host=LOOPBACK,
        port=receiver.port,
        lifespan="off",
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="webhook-receiver")
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError(f"the test receiver did not start on port {receiver.port}")
        await asyncio.sleep(0.01)
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


def fast_settings(**overrides: Any) -> WebhookSettings:
    """A schedule of fifths of a second, loopback allowed, short timeouts."""
    values: dict[str, Any] = {
        "allow_private": True,
        "retry_schedule_s": (0.2, 0.2, 0.2, 0.2, 0.2),
        "jitter": 0.0,
        "poll_interval_s": 0.05,
        "timeout_s": 2.0,
        "lease_margin_s": 1.0,
        "batch_size": 10,
    }
    values.update(overrides)
    return WebhookSettings.model_validate(values)


@asynccontextmanager
async def webhook_api(
    database_url: str, token: str, webhooks: WebhookSettings | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The cloud's API presenting ``token``, with ``webhooks`` settings (by default
    ``fast_settings``, which let it subscribe the loopback receiver)."""
    settings = CloudSettings(database_url=database_url, webhooks=webhooks or fast_settings())
    async with api_client(create_app(settings), token) as http:
        yield http


async def add_subscription(
    conn: AsyncConnection[Any], community_id: int, url: str, *secrets: str
) -> tuple[int, list[str]]:
    """A subscription inserted directly (no URL check), with its secrets."""
    keys = list(secrets) or [generate_secret()]
    cur = await conn.execute(
        "INSERT INTO webhook_subscriptions (community_id, url, secrets) "
        "VALUES (%s, %s, %s) RETURNING id",
        [community_id, url, keys],
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), keys


async def community(conn: AsyncConnection[Any]) -> int:
    return (await register_community(conn, COMMUNITY)).id


async def open_incidents(conn: AsyncConnection[Any], community_id: int, count: int) -> list[int]:
    """``count`` smoke incidents, each announced to the subscriptions in its transaction."""
    ids = []
    for n in range(count):
        async with conn.transaction():
            cur = await conn.execute(
                "INSERT INTO incidents (type, priority, community_id, building, unit, device_id) "
                "VALUES ('smoke', 1, %s, '3', %s, %s) RETURNING id",
                [community_id, f"{n + 1:03d}", f"smoke-{uuid.uuid4().hex[:12]}"],
            )
            row = await cur.fetchone()
            assert row is not None
            await enqueue(conn, incident_id=int(row[0]), event=WebhookEvent.OPENED)
        ids.append(int(row[0]))
    return ids


async def deliveries(database_url: str) -> list[dict[str, Any]]:
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        await cur.execute(
            "SELECT id, message_id, subscription_id, status, attempts, next_attempt_at, "
            "last_status_code, last_error, payload::text AS body, claim_token "
            "FROM webhook_deliveries ORDER BY id"
        )
        return await cur.fetchall()


@asynccontextmanager
async def running_workers(
    database_url: str, settings: WebhookSettings, *, workers: int = 1
) -> AsyncIterator[list[DeliveryWorker]]:
    """``workers`` delivery workers on a pool of their own (like one process), running
    until the block ends; they finish their round before it does."""
    stop = asyncio.Event()
    async with (
        open_pool(database_url, name="test-webhooks", max_size=workers * 2) as pool,
        Sender(settings) as sender,
    ):
        crew = [
            DeliveryWorker(pool, settings, sender, name=f"test-{index}") for index in range(workers)
        ]
        tasks = [asyncio.create_task(worker.run(stop)) for worker in crew]
        try:
            yield crew
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, within_s: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def all_settled(database_url: str) -> bool:
    return all(row["status"] != "pending" for row in await deliveries(database_url))


def verify(secret: str, request: Received) -> Any:
    """The payload, after the reference library checked the signature."""
    return Webhook(secret).verify(request.body, request.headers)


def parse(body: bytes) -> Any:
    return json.loads(body)


async def run_then_kill(
    database_url: str,
    settings: WebhookSettings,
    until: Callable[[], Awaitable[bool]],
    *,
    what: str,
) -> None:
    """A worker on a pool of its own, cancelled mid-flight (as a killed process would
    stop) as soon as ``until`` holds: it records nothing more and releases nothing."""
    async with (
        open_pool(database_url, name="doomed", max_size=2) as pool,
        Sender(settings) as sender,
    ):
        doomed = asyncio.create_task(DeliveryWorker(pool, settings, sender, name="doomed").run())
        await wait_until(until, what=what)
        doomed.cancel()
        try:
            await doomed
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the doomed worker returned instead of being cancelled")
