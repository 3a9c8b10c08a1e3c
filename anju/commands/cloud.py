"""``anju cloud``: migrate the database, run the cloud tier, or run ingest or escalation
workers alone; set up the broker's account for the cloud workers."""

import asyncio
import gc
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Final

import typer

from anju.commands import keys, residents
from anju.commands.common import fail
from cloud.app import (
    ingest_sharing,
    run_api,
    run_cloud,
    run_configs,
    run_escalation,
    run_ingest,
)
from cloud.broker.dynsec import DynamicSecurity
from cloud.broker.policy import SERVICE_ROLE
from cloud.errors import CloudError
from cloud.settings import load_settings
from cloud.storage.migrate import apply_migrations
from cloud.supervisor import run_supervised, supervise
from cloud.webhooks.delivery import run_delivery_workers
from schemas.broker import parse_broker_url
from schemas.errors import SchemaError

app = typer.Typer(
    help="The cloud tier: database migrations, ingest workers, the config pusher and the "
    "incident API. "
    "Configured by ANJU_DATABASE_URL and ANJU_MQTT_URL.",
    no_args_is_help=True,
)
app.add_typer(keys.app, name="key")
app.add_typer(residents.app, name="residents")
broker_app = typer.Typer(
    help="The MQTT broker's accounts, driven through Mosquitto's dynamic-security plugin "
    "(docs/broker.md).",
    no_args_is_help=True,
)
app.add_typer(broker_app, name="broker")

RECANCEL_AFTER_S: Final = 2.0
"""How long a cancelled task may take to end before it is cancelled again: longer than
any clean-up on cancellation should take (closing a pool, disconnecting from the broker)."""

_ENVIRONMENT = (
    "Environment: ANJU_DATABASE_URL (postgresql://user[:password]@host[:port]/dbname), "
    "ANJU_MQTT_URL (mqtt://[user[:password]@]host[:port][?version=5|3.1.1]), "
    "ANJU_INGEST_GROUP (MQTT v5 shared-subscription group, default anju-ingest), "
    "ANJU_INGEST_CLIENT_ID (client id prefix, default anju-ingest-HOSTNAME; worker N "
    "connects as PREFIX-N for telemetry and PREFIX-N-alarms for events), ANJU_RULES_FILE "
    "(incident rules; default the packaged rules.yaml, docs/rules.md), ANJU_STORAGE_* "
    "(how readings are kept over time: retention, rollup, TimescaleDB or partitions; "
    "docs/storage.md)."
)

_API_ENVIRONMENT = (
    "ANJU_API_HOST and ANJU_API_PORT (default 127.0.0.1:8080), "
    "ANJU_API_AUTH_FAILURE_LIMIT and ANJU_API_AUTH_FAILURE_WINDOW_S (failed "
    "authentications one client address may make before it is answered 429 until the "
    "window ends; default 20 per 60 s), ANJU_RESIDENT_KEYS (the keys that wrap "
    "residents' personal data: ID:BASE64 entries, comma-separated, the current key "
    "first; `anju cloud residents keygen` makes one; unset, personal data is refused)."
)

Workers = Annotated[
    int,
    typer.Option(
        "--workers",
        "-w",
        min=1,
        help="Ingest workers in this process, each with two MQTT sessions (events and "
        "telemetry, so alarms never queue behind telemetry) on the shared subscription "
        "(MQTT v5 only for more than one).",
    ),
]
Shared = Annotated[
    bool | None,
    typer.Option(
        help="Join the MQTT v5 shared subscription group (ANJU_INGEST_GROUP), so ingest "
        "processes on several machines split the load. Default: shared with more than "
        "one worker, plain with one (a plain subscription survives a Mosquitto restart, "
        "a shared one does not: the gateways then resend what the cloud did not "
        "acknowledge).",
        show_default=False,
    ),
]


@app.command(
    epilog="Example: ANJU_DATABASE_URL=postgresql://anju@127.0.0.1:5432/anju "
    "anju cloud migrate\n\n"
    "Environment: ANJU_DATABASE_URL (postgresql://user[:password]@host[:port]/dbname), "
    "ANJU_STORAGE_BACKEND (auto, timescaledb or partitions) and the other ANJU_STORAGE_* "
    "settings (docs/storage.md)."
)
def migrate() -> None:
    """Apply the database migrations not applied yet, then set up readings' storage.

    Each migration is applied once, in order. Readings go into a TimescaleDB
    hypertable with compression, retention and an hourly continuous aggregate when the
    server offers TimescaleDB, else into monthly partitions with an hourly rollup table
    that ingest keeps up to date. Safe to run
    from several processes at once: they take turns and the later ones find nothing
    to do. Run it again after changing an ANJU_STORAGE_* setting. Prints the
    migrations applied now.
    """
    try:
        settings = load_settings(require_mqtt=False)
        applied = apply_migrations(settings.database_url, storage=settings.storage)
    except CloudError as exc:
        fail(str(exc))
    for name in applied:
        typer.echo(f"applied {name}")
    if not applied:
        typer.echo("database is up to date")
    if keys.count_usable_admin_keys(settings.database_url) == 0:
        typer.echo(
            "no usable admin API key yet: make the first with "
            "`anju cloud key create --name YOUR-NAME --role admin` (it is shown once)"
        )


@app.command(
    epilog="Example: ANJU_DATABASE_URL=postgresql://anju@127.0.0.1:5432/anju "
    "ANJU_MQTT_URL=mqtt://127.0.0.1:1883 anju cloud run --workers 2\n\n"
    f"{_ENVIRONMENT} {_API_ENVIRONMENT}"
)
def run(workers: Workers = 1, shared: Shared = None) -> None:
    """Run the whole cloud tier in one process until Ctrl-C or SIGTERM.

    Ingest with the rules and the silence sweep, escalation, webhook delivery, the
    config pusher (each gateway's device config sent as an apply_config command) and
    the HTTP API: enough for a small site. Larger ones run `anju cloud ingest`,
    `api`, `escalate`, `webhooks` and `configs` as separate processes, as many of each
    as they need.
    """
    try:
        settings = load_settings()
        _run_until_signal(
            lambda stop: run_cloud(settings, workers=workers, shared=shared, stop=stop)
        )
    except CloudError as exc:
        fail(str(exc))


@app.command(
    epilog="Example: ANJU_DATABASE_URL=postgresql://anju@db:5432/anju "
    "ANJU_MQTT_URL=mqtt://broker:1883 anju cloud ingest --workers 4\n\n"
    f"{_ENVIRONMENT}"
)
def ingest(
    workers: Workers = 1,
    shared: Shared = None,
    processes: Annotated[
        int,
        typer.Option(
            "--processes",
            "-p",
            min=1,
            help="Ingest processes, each with --workers workers, all on the shared "
            "subscription. One process uses about one core; give it one per core that "
            "ingest may have (docs/capacity.md).",
        ),
    ] = 1,
    first_worker: Annotated[int, typer.Option(hidden=True, min=0)] = 0,
    supervised: Annotated[bool, typer.Option(hidden=True)] = False,
) -> None:
    """Run ingest workers only (no API) until Ctrl-C or SIGTERM.

    Workers here share one MQTT v5 subscription group, and so do those of other
    processes or machines started with --shared, so adding workers adds throughput.
    Messages are written in groups, one transaction each; after the commit each
    gateway is told which of its batches are stored (its ack topic), and only then
    does the broker get its acknowledgement. A gateway keeps a batch until then.

    With --processes N this process starts N ingest processes and watches them: a
    stop reaches all of them, and if one ends by itself the rest are stopped and the
    command fails, so that the service manager restarts the set; if this process is
    killed, they stop by themselves. Worker client ids are numbered across the
    processes (PREFIX-0 up to PREFIX-(N x workers - 1)), the same at every start.
    """
    try:
        settings = load_settings()
        share = ingest_sharing(settings, workers=workers, shared=shared, processes=processes)
        if processes > 1:
            children = [
                [
                    sys.executable, "-m", "anju", "cloud", "ingest",
                    "--workers", str(workers), "--shared", "--supervised",
                    "--first-worker", str(first_worker + index * workers),
                ]
                for index in range(processes)
            ]  # fmt: skip
            _run_until_signal(lambda stop: supervise(children, stop=stop, name="ingest process"))
            return

        def main(stop: asyncio.Event) -> Awaitable[None]:
            return run_ingest(
                settings, workers=workers, shared=share, stop=stop, first_worker=first_worker
            )

        _run_until_signal(lambda stop: run_supervised(main, stop) if supervised else main(stop))
    except CloudError as exc:
        fail(str(exc))


@app.command(
    epilog="Example: ANJU_DATABASE_URL=postgresql://anju@db:5432/anju "
    "ANJU_API_HOST=0.0.0.0 anju cloud api\n\n"
    "Environment: ANJU_DATABASE_URL (postgresql://user[:password]@host[:port]/dbname), "
    "ANJU_RULES_FILE (the incident types webhook filters are checked against), "
    "ANJU_BROKER_* (the broker accounts that gateway registration issues; "
    f"docs/broker.md), {_API_ENVIRONMENT}"
)
def api() -> None:
    """Run the HTTP API only (no ingest, no workers) until Ctrl-C or SIGTERM.

    The incident API, the dispatcher console (/console/) and its live feed, for sites
    that run `anju cloud ingest`, `escalate`, `webhooks` and `configs` as processes of
    their own: requests then never share a process with ingest, so neither slows the
    other's alarms. Run as many as needed behind a load balancer. Its /metrics shows
    the database's figures; each worker process's counters are logged by that process.
    """
    try:
        settings = load_settings(require_mqtt=False)
        _run_until_signal(lambda stop: run_api(settings, stop=stop))
    except CloudError as exc:
        fail(str(exc))


EscalationWorkers = Annotated[
    int,
    typer.Option(
        "--workers",
        "-w",
        min=1,
        help="Escalation workers in this process. Any number may run here and in other "
        "processes: each takes due timers with FOR UPDATE SKIP LOCKED, so none fires twice.",
    ),
]


@app.command(
    epilog="Example: ANJU_DATABASE_URL=postgresql://anju@db:5432/anju "
    "anju cloud escalate --workers 2\n\n"
    "Environment: ANJU_DATABASE_URL (postgresql://user[:password]@host[:port]/dbname), "
    "ANJU_QUEUE_P1_UNCLAIMED_S (default 60), ANJU_QUEUE_P1_UNACKNOWLEDGED_S (180), "
    "ANJU_QUEUE_P2_* (120, 300), ANJU_QUEUE_P3_* (300, 900), ANJU_QUEUE_REPEAT_S (60), "
    "ANJU_QUEUE_POLL_INTERVAL_S (1), ANJU_QUEUE_BATCH_SIZE (100); docs/emergency-queue.md."
)
def escalate(workers: EscalationWorkers = 1) -> None:
    """Run emergency-queue escalation workers only, until Ctrl-C or SIGTERM.

    An incident left unclaimed or unacknowledged past its priority's limit gets one
    step more urgent, a log row and an incident.escalated webhook, and again every
    ANJU_QUEUE_REPEAT_S until a dispatcher claims or acknowledges it. `anju cloud run`
    runs one such worker too.
    """
    try:
        settings = load_settings(require_mqtt=False)
        _run_until_signal(lambda stop: run_escalation(settings, workers=workers, stop=stop))
    except CloudError as exc:
        fail(str(exc))


WebhookWorkers = Annotated[
    int,
    typer.Option(
        "--workers",
        "-w",
        min=1,
        help="Webhook delivery workers in this process. Any number may run here and in "
        "other processes: each claims due deliveries with FOR UPDATE SKIP LOCKED and a "
        "lease, so none is sent by two workers at once.",
    ),
]


@app.command(
    epilog="Example: ANJU_DATABASE_URL=postgresql://anju@db:5432/anju "
    "anju cloud webhooks --workers 2\n\n"
    "Environment: ANJU_DATABASE_URL (postgresql://user[:password]@host[:port]/dbname), "
    "ANJU_WEBHOOK_TIMEOUT_S (default 15), ANJU_WEBHOOK_ALLOW_PRIVATE (0; 1 lets webhooks "
    "reach private and loopback addresses), ANJU_WEBHOOK_ALLOWED_NETWORKS (none), "
    "ANJU_WEBHOOK_RETRY_SCHEDULE_S (Standard Webhooks: 5,300,1800,7200,18000,36000,"
    "50400,72000,86400), ANJU_WEBHOOK_POLL_INTERVAL_S (1), ANJU_WEBHOOK_BATCH_SIZE (20); "
    "docs/webhooks.md."
)
def webhooks(workers: WebhookWorkers = 1) -> None:
    """Run webhook delivery workers only (no API, no ingest) until Ctrl-C or SIGTERM.

    Each sends due outbox deliveries signed the Standard Webhooks way, retries failures
    on the schedule, disables an endpoint that answers 410 and dead-letters what runs
    out of attempts. `anju cloud run` runs one such worker too.
    """
    try:
        settings = load_settings(require_mqtt=False)
        _run_until_signal(
            lambda stop: run_delivery_workers(
                settings.database_url, settings.webhooks, workers=workers, stop=stop
            )
        )
    except CloudError as exc:
        fail(str(exc))


@app.command(
    epilog="Example: ANJU_DATABASE_URL=postgresql://anju@db:5432/anju "
    "ANJU_MQTT_URL=mqtt://anju-cloud:PASSWORD@broker:1883 anju cloud configs\n\n"
    "Environment: ANJU_DATABASE_URL (postgresql://user[:password]@host[:port]/dbname), "
    "ANJU_MQTT_URL (mqtt://[user[:password]@]host[:port][?version=5|3.1.1]; the cloud "
    "workers' account of `anju cloud broker setup`, which may publish commands and read "
    "results and statuses), ANJU_INGEST_CLIENT_ID (client id prefix, default "
    "anju-ingest-HOSTNAME; this process connects as PREFIX-configs-PID)."
)
def configs() -> None:
    """Run the config pusher only (no API, no ingest) until Ctrl-C or SIGTERM.

    It sends each gateway the device config the registry keeps for it, as an
    apply_config command, whenever a device is added, moved or removed, and again
    while the gateway does not answer (after 30 s, then waits that double up to 30
    minutes; at once when the gateway comes online). It records the version each
    gateway runs and the reason of a config a gateway refuses, which is not sent again:
    `GET /gateways/ID/config` shows both. `anju cloud run` runs one such worker too;
    more may run here and elsewhere, none pushes a version twice at once.
    """
    try:
        settings = load_settings()
        _run_until_signal(lambda stop: run_configs(settings, stop=stop))
    except CloudError as exc:
        fail(str(exc))


def _run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)``; SIGINT or SIGTERM sets ``stop`` for a graceful shutdown.

    Both a graceful shutdown and a failed task (the API unable to bind) end in
    cancelling tasks, and a task can swallow its cancellation: Python 3.11's
    ``asyncio.wait_for``, with which aiomqtt awaits CONNACK and SUBACK, returns the
    result instead when the two arrive together. Its TaskGroup would wait for it
    forever, and a signal would only set ``stop`` again, so ``_recancel_stragglers``
    cancels such a task once more.
    """

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        watchdog = asyncio.create_task(_recancel_stragglers(), name="recancel")
        try:
            await main(stop)
        finally:
            watchdog.cancel()

    # What the imports built lives as long as the process: out of the collector's sight,
    # a full collection walks only what the work allocates (about 70 ms less per pause
    # in ingest, docs/decisions.md "Ingest's own PUBLISH reader, a frozen heap").
    gc.freeze()
    asyncio.run(runner())


async def _recancel_stragglers() -> None:
    """Every ``RECANCEL_AFTER_S``, cancel again each task still running after a cancel
    that was already seen one round before."""
    seen: set[asyncio.Task[Any]] = set()
    while True:
        await asyncio.sleep(RECANCEL_AFTER_S)
        cancelling = {task for task in asyncio.all_tasks() if task.cancelling() and not task.done()}
        for task in cancelling & seen:
            task.cancel()
        seen = cancelling


@broker_app.command(
    epilog="Example: ANJU_BROKER_ADMIN_URL=mqtts://admin:SECRET@mqtt.example.cn:8883 "
    "ANJU_BROKER_ADMIN_CA_FILE=/etc/anju/broker-ca.pem anju cloud broker setup "
    "--user anju-cloud --password-file /run/secrets/anju-mqtt\n\n"
    "Then run the cloud with ANJU_MQTT_URL=mqtts://anju-cloud:PASSWORD@mqtt.example.cn:8883."
)
def setup(
    admin_url: Annotated[
        str,
        typer.Option(
            envvar="ANJU_BROKER_ADMIN_URL",
            help="The plugin's admin account, the one `mosquitto_ctrl dynsec init` made: "
            "mqtt(s)://ADMIN:PASSWORD@HOST:PORT.",
            show_default=False,
        ),
    ],
    admin_ca_file: Annotated[
        Path | None,
        typer.Option(
            envvar="ANJU_BROKER_ADMIN_CA_FILE",
            exists=True,
            dir_okay=False,
            help="PEM of the CA that signed the broker's certificate, when the system "
            "does not trust it.",
        ),
    ] = None,
    user: Annotated[str, typer.Option(help="The cloud workers' MQTT username.")] = "anju-cloud",
    password_file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Read the password from this file (first line). Without it a random "
            "one is made and printed once.",
        ),
    ] = None,
) -> None:
    """Make the broker deny by default and give the cloud workers their account.

    Sets the plugin's default access to deny for everything, writes the role
    anju-cloud (read every gateway's telemetry, events, status and command results,
    plain or shared; send commands) and gives USER that role and the password. Safe
    to run again: the role is put back as it should be and the password replaced
    (sessions already connected stay). Gateways' own accounts are made by the cloud
    as installers register them (`anju provision gateway`).
    """
    try:
        admin = parse_broker_url(admin_url)
    except SchemaError as exc:
        fail(f"ANJU_BROKER_ADMIN_URL: {exc}", code=2)
    if admin.username is None:
        fail("ANJU_BROKER_ADMIN_URL has no user: give the dynsec admin account", code=2)
    if password_file is not None:
        lines = password_file.read_text(encoding="utf-8").splitlines()
        password, shown = (lines[0] if lines else ""), False
        if not password:
            fail(f"{password_file}: the first line is empty; write the password there", code=2)
    else:
        password, shown = secrets.token_urlsafe(32), True

    async def apply() -> None:
        async with DynamicSecurity(admin, ca_file=admin_ca_file) as dynsec:
            await dynsec.set_default_deny()
            await dynsec.ensure_service_account(user, password)

    try:
        asyncio.run(apply())
    except CloudError as exc:
        fail(str(exc))
    typer.echo(f"broker {admin.redacted()}: default access deny; role {SERVICE_ROLE} written")
    typer.echo(f"account {user} has role {SERVICE_ROLE}")
    if shown:
        typer.echo(f"password (shown once): {password}")
    scheme = "mqtts" if admin.tls else "mqtt"
    typer.echo(
        f"next: run the cloud with ANJU_MQTT_URL={scheme}://{user}:PASSWORD@"
        f"{admin.host}:{admin.port}"
    )
