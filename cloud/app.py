"""The cloud tier's processes, wired together: ``run_cloud`` (everything), and
``run_ingest``, ``run_api`` and the other workers, each alone.

Parts run as named tasks in one ``asyncio.TaskGroup`` until ``stop`` is set (or they
are cancelled), then shut down in order: the API stops accepting requests and
finishes the ones in flight, ingest workers are cancelled (safe at any point, since a
message is acknowledged only after its commit) and pools are closed. If any task
fails, the others are stopped and the failure is raised.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final

import psycopg
import uvicorn
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from cloud.api.app import close_streams, create_app
from cloud.configs.worker import ConfigCounters, run_config_pusher
from cloud.errors import CloudError, SettingsError, StorageError
from cloud.ingest.consumer import IngestConsumer, lane_client_ids
from cloud.ingest.counters import IngestCounters
from cloud.ingest.writer import BatchWriter
from cloud.queue.escalation import EscalationWorker
from cloud.rules.checker import check_forever
from cloud.rules.config import load_rules
from cloud.rules.sweeper import sweep_forever
from cloud.settings import CloudSettings, StorageSettings
from cloud.storage.pool import open_pool
from cloud.storage.timeseries import maintain
from cloud.webhooks.delivery import DeliveryCounters, run_delivery_workers

log = logging.getLogger(__name__)

STATS_INTERVAL_S: Final = 60.0


def worker_client_ids(settings: CloudSettings, workers: int, *, first: int = 0) -> list[str]:
    """The stable, distinct MQTT client ids of ``workers`` ingest workers, numbered from
    ``first`` (the workers of the processes started before this one)."""
    return [f"{settings.ingest.client_id}-{index}" for index in range(first, first + workers)]


def ingest_sharing(
    settings: CloudSettings, *, workers: int, shared: bool | None, processes: int = 1
) -> bool:
    """Whether ``processes`` x ``workers`` ingest workers join the shared subscription
    group: by default when there is more than one.

    Raises SettingsError when there is not at least one of each, when several are asked
    not to share (each would get every message), or when sharing is asked of an MQTT
    3.1.1 broker, which has no shared subscriptions.
    """
    if workers < 1:
        raise SettingsError("--workers", f"{workers} workers", "at least 1")
    if processes < 1:
        raise SettingsError("--processes", f"{processes} processes", "at least 1")
    several = workers * processes > 1
    share = several if shared is None else shared
    if several and not share:
        raise SettingsError(
            "--no-shared",
            f"{processes} processes x {workers} workers",
            "one worker in one process, or --shared",
        )
    if share and not settings.broker.supports_shared_subscriptions:
        raise SettingsError(
            "ANJU_MQTT_URL",
            "shared subscriptions are not in MQTT 3.1.1",
            "an MQTT v5 broker (?version=5), or a lone worker without --shared",
        )
    return share


def config_pusher_client_id(settings: CloudSettings) -> str:
    """The config pusher's MQTT client id: ``{ANJU_INGEST_CLIENT_ID}-configs-{pid}``.

    Its session is clean, so nothing is kept under the id and it need not survive a
    restart; it must only differ from every other live connection's, or the broker
    drops one for the other, and the process id keeps ``anju cloud run`` and
    ``anju cloud configs`` on one host apart without another setting.
    """
    return f"{settings.ingest.client_id}-configs-{os.getpid()}"


async def run_ingest(
    settings: CloudSettings,
    *,
    workers: int = 1,
    shared: bool | None = None,
    stop: asyncio.Event | None = None,
    counters: IngestCounters | None = None,
    started: asyncio.Event | None = None,
    first_worker: int = 0,
) -> None:
    """Run ``workers`` ingest workers until ``stop`` is set; their client ids are
    numbered from ``first_worker`` (``worker_client_ids``).

    Each worker is two consumers, each with its own broker session and writer: the
    alarm lane (events) and the telemetry lane, so an alarm never waits behind
    telemetry, in the broker or here. With ``shared`` (the default when ``workers`` >
    1) the workers join the MQTT v5 shared subscription group, as do those of other
    processes and machines started with it, so adding workers adds throughput; the
    sessions of a shared worker end ``shared_session_expiry_s`` after it disconnects,
    and the gateways resend what they held, unacknowledged, to the live ones. Without
    it a lone worker subscribes plainly. The difference matters at a broker restart:
    Mosquitto 2.0 restores a persistent session's plain subscriptions but not its
    shared ones, so between the restart and the workers' return it acknowledges and
    discards what gateways publish to a shared group (measured; see
    docs/decisions.md), which the gateways then resend for want of the cloud's
    acknowledgement.

    Workers share one connection pool and ``counters`` (a fresh one when not given,
    logged every minute). The silence sweep and the windowed rules' checker
    (``cloud.rules.checker``) run beside them on that pool, which holds two
    connections for each worker (its alarm lane and its telemetry lane write at once)
    and two more for those and storage maintenance (each holds one briefly).
    ``started`` is set once every lane has subscribed: from then on the broker keeps
    messages for them even while they reconnect.

    Raises SettingsError when ``ANJU_MQTT_URL`` is missing, and as ``ingest_sharing``
    does.
    """
    broker = settings.broker
    share = ingest_sharing(settings, workers=workers, shared=shared)
    rules = load_rules()
    totals = counters if counters is not None else IngestCounters()
    async with open_pool(settings.database_url, name="ingest", max_size=2 * workers + 2) as pool:
        writer = BatchWriter(
            pool,
            rules,
            queue=settings.queue,
            ingest=settings.ingest,
            connect_timeout_s=settings.ingest.checkout_timeout_s,
        )
        consumers = [
            IngestConsumer(
                broker,
                settings.ingest,
                writer,
                totals,
                channel=channel,
                client_id=lane_id,
                shared_group=settings.ingest.group if share else None,
                ca_file=settings.mqtt_tls.ca_file,
            )
            for client_id in worker_client_ids(settings, workers, first=first_worker)
            for channel, lane_id in lane_client_ids(client_id).items()
        ]
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(consumer.run(), name=f"ingest:{consumer.client_id}")
                for consumer in consumers
            ]
            tasks.append(group.create_task(_log_counters(totals), name="ingest:stats"))
            tasks.append(
                group.create_task(sweep_forever(pool, rules, settings.queue), name="ingest:silence")
            )
            tasks.append(
                group.create_task(check_forever(pool, rules, settings.queue), name="ingest:checks")
            )
            tasks.append(
                group.create_task(_maintain_storage(pool, settings.storage), name="ingest:storage")
            )
            if started is not None:
                tasks.append(
                    group.create_task(
                        _all_set([c.subscribed for c in consumers], started),
                        name="ingest:started",
                    )
                )
            await _wait(stop)
            for task in tasks:
                task.cancel()


async def run_escalation(
    settings: CloudSettings, *, workers: int = 1, stop: asyncio.Event | None = None
) -> None:
    """Run ``workers`` escalation workers (``cloud.queue.escalation``) until ``stop`` is set.

    Workers here and in other processes take due timers with ``FOR UPDATE SKIP LOCKED``,
    so any number may run and none fires a timer twice; cancelling one mid-round rolls
    its round back for another to fire. Raises SettingsError when ``workers`` < 1.
    """
    if workers < 1:
        raise SettingsError("--workers", f"{workers} workers", "at least 1")
    async with open_pool(settings.database_url, name="escalation", max_size=workers) as pool:
        escalators = [
            EscalationWorker(pool, settings.queue, name=f"escalation-{index}")
            for index in range(workers)
        ]
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(worker.run(), name=worker.name) for worker in escalators]
            await _wait(stop)
            for task in tasks:
                task.cancel()


async def run_configs(
    settings: CloudSettings,
    *,
    stop: asyncio.Event | None = None,
    started: asyncio.Event | None = None,
    counters: ConfigCounters | None = None,
) -> None:
    """Run the config pusher (``cloud.configs``) until ``stop`` is set: it sends gateways
    the device configs of the registry and records their answers and statuses.

    Any number may run, here and in other processes (claims skip locked rows). ``started``
    is set once it listens for answers. ``counters`` (fresh ones when not given) count
    what it does, for an API of the same process to export. Raises SettingsError when
    ``ANJU_MQTT_URL`` is missing.
    """
    await run_config_pusher(
        settings.database_url,
        settings.broker,
        client_id=config_pusher_client_id(settings),
        ca_file=settings.mqtt_tls.ca_file,
        stop=stop,
        started=started,
        counters=counters,
    )


async def run_cloud(
    settings: CloudSettings,
    *,
    workers: int = 1,
    shared: bool | None = None,
    stop: asyncio.Event | None = None,
    counters: IngestCounters | None = None,
    started: asyncio.Event | None = None,
) -> None:
    """Run ingest (with the rules and the silence sweep), escalation, webhook delivery,
    the config pusher (``cloud.configs``) and the API (on ``settings.api.host`` and
    ``port``) until ``stop`` is set.

    ``started`` is set once the API accepts connections, every ingest worker has
    subscribed and the config pusher listens for gateways' answers. The API's
    ``GET /metrics`` reads the ingest workers' ``counters`` (fresh ones when not given),
    the webhook workers' and the config pusher's counters. Raises CloudError when the
    API cannot bind its address, SettingsError as ``run_ingest`` does.
    """
    totals = counters if counters is not None else IngestCounters()
    deliveries = DeliveryCounters()
    pushes = ConfigCounters()
    app = create_app(settings, counters=totals, deliveries=deliveries, configs=pushes)
    server = _ApiServer.for_app(app, settings)
    ingest_stop = asyncio.Event()
    ingest_started = asyncio.Event()
    api_started = asyncio.Event()
    configs_started = asyncio.Event()
    async with _cloud_error_alone(), asyncio.TaskGroup() as group:
        api = group.create_task(server.serve_checked(), name="api")
        group.create_task(_api_started(server, api, api_started), name="api:started")
        # The workers start once the API listens: an API that cannot (a taken port)
        # then ends the run before any worker is half-way through connecting, which
        # aiomqtt would report with a traceback of its own.
        if await _first_set(api_started, stop) is api_started:
            group.create_task(
                run_ingest(
                    settings,
                    workers=workers,
                    shared=shared,
                    stop=ingest_stop,
                    counters=totals,
                    started=ingest_started,
                ),
                name="ingest",
            )
            group.create_task(
                run_delivery_workers(
                    settings.database_url, settings.webhooks, stop=ingest_stop, counters=deliveries
                ),
                name="webhooks",
            )
            group.create_task(run_escalation(settings, stop=ingest_stop), name="escalation")
            group.create_task(
                run_configs(settings, stop=ingest_stop, started=configs_started, counters=pushes),
                name="configs",
            )
            if started is not None:
                group.create_task(
                    _all_set([ingest_started, configs_started], started), name="started"
                )
        await _wait(stop)
        close_streams(app)
        server.should_exit = True
        ingest_stop.set()


async def run_api(
    settings: CloudSettings,
    *,
    stop: asyncio.Event | None = None,
    started: asyncio.Event | None = None,
) -> None:
    """Run the API alone (with the dispatcher console and its live feed) on
    ``settings.api.host`` and ``port`` until ``stop`` is set.

    For sites that run ingest in processes of its own: the API's requests and ingest's
    alarms then never wait for each other in one event loop. Any number may run behind
    a load balancer (each has its own pool and feed).
    ``GET /metrics`` here counts the database only, since no worker runs here.
    ``started`` is set once it accepts connections. Raises CloudError when it cannot
    bind its address.
    """
    app = create_app(settings)
    server = _ApiServer.for_app(app, settings)
    async with _cloud_error_alone(), asyncio.TaskGroup() as group:
        api = group.create_task(server.serve_checked(), name="api")
        if started is not None:
            group.create_task(_api_started(server, api, started), name="api:started")
        await _wait(stop)
        close_streams(app)
        server.should_exit = True


class _ApiServer(uvicorn.Server):
    """uvicorn's server without its signal handling: ``run_cloud`` and ``run_api`` own
    shutdown."""

    @classmethod
    def for_app(cls, app: FastAPI, settings: CloudSettings) -> _ApiServer:
        return cls(
            uvicorn.Config(
                app,
                host=settings.api.host,
                port=settings.api.port,
                log_config=None,
                lifespan="on",
                # Live streams end at shutdown (close_streams); one whose client stopped
                # reading may not notice, so the server stops waiting after this.
                timeout_graceful_shutdown=10,
            )
        )

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve_checked(self) -> None:
        """Serve until ``should_exit``; a failed start-up raises CloudError, not SystemExit.

        uvicorn logs a failed bind and calls ``sys.exit`` inside its ``except OSError``,
        so the OSError is the SystemExit's context; other start-up failures (the app's
        lifespan) are only in the log.
        """
        try:
            await self.serve()
        except SystemExit as exc:
            host, port = self.config.host, self.config.port
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            if isinstance(exc.__context__, OSError):
                reason = _os_reason(exc.__context__)
                raise CloudError(f"the API could not listen on {address}: {reason}") from None
            raise CloudError(f"the API could not start on {address} (see the log)") from None


def _os_reason(exc: OSError) -> str:
    """The reason alone (asyncio's bind error repeats the address): ``Address already in use``."""
    return os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or str(exc)


@asynccontextmanager
async def _cloud_error_alone() -> AsyncIterator[None]:
    """Raise a TaskGroup's CloudError itself rather than in an ExceptionGroup, so that a
    caller's ``except CloudError`` (the command line's) reports it in one line."""
    try:
        yield
    except* CloudError as failed:
        raise _first(failed) from None


def _first(group: BaseExceptionGroup[CloudError]) -> CloudError:
    first = group.exceptions[0]
    return first if isinstance(first, CloudError) else _first(first)


async def _api_started(
    server: uvicorn.Server, api: asyncio.Task[None], started: asyncio.Event
) -> None:
    # uvicorn offers a flag, not an event; poll it until it is up or has failed.
    while not server.started:
        if api.done():
            return
        await asyncio.sleep(0.02)
    started.set()


async def _first_set(*events: asyncio.Event | None) -> asyncio.Event | None:
    """The first of ``events`` to be set (None stands for one never set)."""
    waits = {asyncio.ensure_future(event.wait()): event for event in events if event is not None}
    if not waits:
        await asyncio.Future()
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return waits[done.pop()]


async def _all_set(events: list[asyncio.Event], then: asyncio.Event) -> None:
    for event in events:
        await event.wait()
    then.set()


async def _wait(stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.Future()
    else:
        await stop.wait()


async def _maintain_storage(pool: AsyncConnectionPool[Any], settings: StorageSettings) -> None:
    """Keep readings over time: a maintenance round now, then one every interval.

    ``anju cloud migrate`` makes partitions a few months ahead, but ingest may run far
    longer; each round makes them ahead again, folds new readings into the hourly
    rollup and applies retention (``cloud.storage.timeseries.maintain``; on TimescaleDB
    its own jobs do all that). A failed round is logged and the next one tries again:
    readings still land meanwhile (in DEFAULT when their month has no partition), and
    the fold resumes from its watermark. Rounds are jittered by a tenth, so processes
    started together drift apart (when they meet, they take turns in the database).
    """
    while True:
        try:
            async with pool.connection(timeout=30) as conn:
                report = await maintain(conn, settings)
        except (StorageError, psycopg.Error) as exc:
            log.warning(
                "storage maintenance failed, next round in %.0f s: %s",
                settings.maintenance_interval_s,
                exc,
            )
        else:
            log.log(
                logging.INFO if report.changed_layout else logging.DEBUG,
                "storage maintenance: %s",
                report,
            )
        await asyncio.sleep(settings.maintenance_interval_s * random.uniform(0.9, 1.1))


async def _log_counters(counters: IngestCounters) -> None:
    while True:
        await asyncio.sleep(STATS_INTERVAL_S)
        log.info("ingest counters: %s", counters.snapshot())
