"""The cloud tier's Prometheus metrics: this process's counters and the database's figures.

Two sources, read at each scrape. The process's counters (ingest, webhook delivery,
the config pusher) say what this process did since it started; they exist when those
parts run here, as in ``anju cloud run``, and a restart sets them back to 0, which
Prometheus reads as a counter reset. The database's figures (open incidents,
escalations, deliveries waiting, gateways behind their config) are the same from every
process, so they are read at scrape time with a few aggregate queries
(``cloud/storage/queries/metrics.sql``). Webhook attempts, failures and dead letters
come from the process, not the database: a replay sets a delivery's attempts back to
0 and its status back to pending, so totals summed from the rows would fall, which a
Prometheus counter must never do.

prometheus-client collectors are synchronous and the API is async, so a scrape reads
the database first (``read_database``: one pooled connection, a short timeout) and
then renders a per-scrape registry over that snapshot (``render``). When the database
cannot be read the scrape still answers, with the process's metrics and
``anju_cloud_scrape_database_up`` 0.

Metrics (all prefixed ``anju_cloud_``):

======================================  =======  ======================================
name                                    type     labels, source
======================================  =======  ======================================
ingest_messages_total, ..._batches,     counter  process (ingest)
..._duplicates, ..._readings,
..._events, ..._quarantined,
..._poisoned, ..._storage_errors,
..._broker_errors, ..._failures,
..._groups
ingest_lag_seconds                      gauge    process (ingest); absent until a
                                                 batch is stored
webhook_attempts_total, ..._failures,   counter  process (webhook delivery)
webhook_dead_letters_total
config_pushes_total, config_errors_total counter  process (config pusher)
config_results_total                    counter  outcome (applied, refused, failed);
                                                 process (config pusher)
incidents_open                          gauge    priority, status; database
incident_oldest_open_age_seconds        gauge    priority; database (0: none open)
escalations_total                       counter  database
webhook_deliveries                      gauge    status (pending, dead); database
gateways_config_behind                  gauge    database
scrape_database_up                      gauge    1 when the database was read
======================================  =======  ======================================
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from cloud.configs.worker import ConfigCounters
from cloud.errors import StorageError, StorageUnavailable
from cloud.incidents import Priority
from cloud.queue.escalation import ESCALATION_ACTOR
from cloud.queue.states import IncidentStatus
from cloud.storage.database import storage_errors
from cloud.storage.pool import Pool
from cloud.storage.sql import queries
from cloud.webhooks.delivery import DeliveryCounters

log = logging.getLogger(__name__)

PREFIX: Final = "anju_cloud"
DATABASE_TIMEOUT_S: Final = 3.0
"""Longest a scrape waits for a pooled connection and its queries together."""
STATEMENT_TIMEOUT_MS: Final = 2000
ACTIVE_STATUSES: Final = tuple(status for status in IncidentStatus if status.active)
DELIVERY_STATUSES: Final = ("pending", "dead")
INGEST_COUNTS: Final = (
    ("messages", "Messages ingest acknowledged to the broker, whatever became of them."),
    ("batches", "Batches stored, each once (a batch received again is a duplicate)."),
    ("duplicates", "Batches received again after being stored; nothing was written."),
    (
        "conflicts",
        "Batches refused because their key was stored before with other content "
        "(a gateway restored from an old disk image, or a forgery).",
    ),
    ("readings", "Readings stored."),
    ("events", "Events stored."),
    (
        "clock_skewed",
        "Readings and events stored at their time of receipt because their own time "
        "was outside the clock window.",
    ),
    (
        "quarantined",
        "Quarantine rows written: one per rejected message, one per unknown device of a batch.",
    ),
    ("poisoned", "Messages quarantined after making ingest itself fail on every attempt."),
    (
        "storage_errors",
        "Ingest sessions ended by a database failure; their messages were redelivered.",
    ),
    ("broker_errors", "Broker connections lost or refused."),
    ("acks_published", "Batch acknowledgements published to gateways, one per gateway and group."),
    (
        "ack_failures",
        "Batch acknowledgements that could not be published; the gateways resend and "
        "deduplication absorbs it.",
    ),
    ("failures", "Ingest sessions ended by an unforeseen error (a bug: see the log)."),
    (
        "groups",
        "Groups of messages written together, one transaction each; messages_total over "
        "groups_total is the mean group size.",
    ),
)
"""``IngestView`` attributes exported as ``ingest_<name>_total``, with their help."""
CONFIG_OUTCOMES: Final = ("applied", "refused", "failed")
"""``ConfigCounters`` attributes exported as ``config_results_total{outcome=...}``."""


class IngestView(Protocol):
    """What the collector reads of ``cloud.ingest.counters.IngestCounters``.

    A protocol rather than the class: ingest and the API are separate layers of
    ``cloud``, and the API, which serves the metrics, may not import ingest.
    """

    messages: int
    batches: int
    duplicates: int
    conflicts: int
    readings: int
    events: int
    clock_skewed: int
    quarantined: int
    poisoned: int
    storage_errors: int
    broker_errors: int
    acks_published: int
    ack_failures: int
    failures: int
    groups: int
    newest_sealed_at: datetime | None


@dataclass(frozen=True, slots=True)
class DatabaseFigures:
    """What one scrape read from the database."""

    open_incidents: dict[tuple[int, str], int]
    """Active incidents by (priority, status)."""
    oldest_open_age_s: dict[int, float]
    """Age of the oldest active incident, by priority; a priority with none is absent."""
    escalations: int
    deliveries: dict[str, int]
    """Deliveries by status: ``pending`` and ``dead``."""
    gateways_config_behind: int
    """Active gateways not running their wanted config version, nor refusing it."""


async def read_database(pool: Pool, *, timeout_s: float = DATABASE_TIMEOUT_S) -> DatabaseFigures:
    """Read the database's figures on one pooled connection, in one transaction.

    Raises StorageError when the database cannot be reached or answers too slowly
    (``timeout_s`` for the checkout and every query together).
    """
    try:
        async with asyncio.timeout(timeout_s):
            with storage_errors("connect"):
                async with pool.connection(timeout=timeout_s) as conn, conn.transaction():
                    await _rows(conn, "metrics_statement_timeout", timeout_ms=STATEMENT_TIMEOUT_MS)
                    incidents = await _rows(conn, "metrics_open_incidents")
                    [(escalations,)] = await _rows(
                        conn, "metrics_escalations", actor=ESCALATION_ACTOR
                    )
                    [(pending, dead)] = await _rows(conn, "metrics_webhook_deliveries")
                    [(behind,)] = await _rows(conn, "metrics_gateways_config_behind")
    except TimeoutError:
        raise StorageUnavailable(
            f"reading the metrics took over {timeout_s:g} s", query="metrics"
        ) from None
    oldest: dict[int, float] = {}
    for priority, _, _, age_s in incidents:
        oldest[int(priority)] = max(oldest.get(int(priority), 0.0), float(age_s))
    return DatabaseFigures(
        open_incidents={(int(p), str(status)): int(count) for p, status, count, _ in incidents},
        oldest_open_age_s=oldest,
        escalations=int(escalations),
        deliveries={"pending": int(pending), "dead": int(dead)},
        gateways_config_behind=int(behind),
    )


async def _rows(conn: AsyncConnection[TupleRow], name: str, **params: object) -> list[TupleRow]:
    with storage_errors(name):
        cur = await conn.execute(queries()[name], params)
        return await cur.fetchall()


def _name(name: str) -> str:
    return f"{PREFIX}_{name}"


class CloudCollector:
    """A Prometheus collector over one scrape's database figures and the process's counters.

    ``database`` is None when the scrape could not read it: its families are then left
    out and ``scrape_database_up`` is 0. ``ingest``, ``deliveries`` and ``configs`` are
    None when those parts do not run in this process; their families are then left out.
    """

    def __init__(
        self,
        *,
        database: DatabaseFigures | None,
        ingest: IngestView | None = None,
        deliveries: DeliveryCounters | None = None,
        configs: ConfigCounters | None = None,
    ) -> None:
        self._database = database
        self._ingest = ingest
        self._deliveries = deliveries
        self._configs = configs

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family (prometheus-client calls it while rendering)."""
        yield GaugeMetricFamily(
            _name("scrape_database_up"),
            "1 when this scrape read the database, 0 when it could not (unreachable or too "
            "slow); the database's figures are then left out.",
            value=0.0 if self._database is None else 1.0,
        )
        if self._ingest is not None:
            yield from self._ingested(self._ingest, datetime.now(UTC))
        if self._deliveries is not None:
            yield from self._delivered(self._deliveries)
        if self._configs is not None:
            yield from self._pushed(self._configs)
        if self._database is not None:
            yield from self._stored(self._database)

    @staticmethod
    def _ingested(ingest: IngestView, now: datetime) -> Iterable[Metric]:
        families: list[Metric] = [
            CounterMetricFamily(_name(f"ingest_{name}"), help_text, value=getattr(ingest, name))
            for name, help_text in INGEST_COUNTS
        ]
        lag = GaugeMetricFamily(
            _name("ingest_lag_seconds"),
            "Seconds since the gateway sealed the newest batch stored (a sealing time "
            "after its commit counts as the commit's); absent until a batch is stored.",
        )
        if ingest.newest_sealed_at is not None:
            lag.add_metric([], max(0.0, (now - ingest.newest_sealed_at).total_seconds()))
        families.append(lag)
        return families

    @staticmethod
    def _delivered(deliveries: DeliveryCounters) -> Iterable[Metric]:
        failures = deliveries.retried + deliveries.dead
        return [
            CounterMetricFamily(
                _name("webhook_attempts"),
                "Delivery attempts this process's webhook workers finished, whatever the "
                "outcome (one not sent because its subscription was disabled included).",
                value=deliveries.delivered + failures + deliveries.lost_claims,
            ),
            CounterMetricFamily(
                _name("webhook_failures"),
                "Attempts by this process's workers that failed and were recorded, to be "
                "retried or as dead letters.",
                value=failures,
            ),
            CounterMetricFamily(
                _name("webhook_dead_letters"),
                "Deliveries this process's workers made dead letters (attempts used up, "
                "410 Gone, subscription disabled).",
                value=deliveries.dead,
            ),
        ]

    @staticmethod
    def _pushed(configs: ConfigCounters) -> Iterable[Metric]:
        results = CounterMetricFamily(
            _name("config_results"),
            "Gateways' answers to this process's config pushes, and statuses that settled a "
            "push, by outcome: applied (a gateway's applied version moved forward), refused "
            "(a version refused for good, by the gateway or the cloud's own check), failed "
            "(not carried out for a passing reason; pushed again later).",
            labels=["outcome"],
        )
        for outcome in CONFIG_OUTCOMES:
            results.add_metric([outcome], getattr(configs, outcome))
        return [
            CounterMetricFamily(
                _name("config_pushes"),
                "apply_config commands this process's config pusher sent and the broker "
                "acknowledged.",
                value=configs.pushes,
            ),
            results,
            CounterMetricFamily(
                _name("config_errors"),
                "Config pusher sessions ended by the broker or the database (each is "
                "started again).",
                value=configs.errors,
            ),
        ]

    @staticmethod
    def _stored(database: DatabaseFigures) -> Iterable[Metric]:
        open_incidents = GaugeMetricFamily(
            _name("incidents_open"),
            "Incidents neither resolved nor false alarms, by priority and status.",
            labels=["priority", "status"],
        )
        oldest = GaugeMetricFamily(
            _name("incident_oldest_open_age_seconds"),
            "Seconds since the oldest incident of each priority that is neither resolved nor a "
            "false alarm opened; 0 when there is none.",
            labels=["priority"],
        )
        for priority in Priority:
            for status in ACTIVE_STATUSES:
                count = database.open_incidents.get((priority, status), 0)
                open_incidents.add_metric([str(int(priority)), str(status)], count)
            oldest.add_metric([str(int(priority))], database.oldest_open_age_s.get(priority, 0.0))
        deliveries = GaugeMetricFamily(
            _name("webhook_deliveries"),
            "Webhook deliveries waiting to be sent (pending) and dead letters (dead).",
            labels=["status"],
        )
        for state in DELIVERY_STATUSES:
            deliveries.add_metric([state], database.deliveries.get(state, 0))
        return [
            open_incidents,
            oldest,
            CounterMetricFamily(
                _name("escalations"),
                "Escalations of incidents left unclaimed or unacknowledged, by any worker.",
                value=database.escalations,
            ),
            deliveries,
            GaugeMetricFamily(
                _name("gateways_config_behind"),
                "Active gateways that do not run the device config version the cloud wants "
                "them to, and have not refused it: offline, or answers still to come.",
                value=database.gateways_config_behind,
            ),
        ]


async def render(
    pool: Pool,
    *,
    ingest: IngestView | None = None,
    deliveries: DeliveryCounters | None = None,
    configs: ConfigCounters | None = None,
) -> bytes:
    """The exposition text of one scrape: the database read first, then rendered.

    Never raises for the database: a StorageError is logged and reported as
    ``scrape_database_up`` 0, so Prometheus still gets the process's metrics.
    """
    try:
        database: DatabaseFigures | None = await read_database(pool)
    except StorageError as exc:
        log.warning("metrics: the database could not be read: %s", exc)
        database = None
    registry = CollectorRegistry()
    registry.register(
        CloudCollector(database=database, ingest=ingest, deliveries=deliveries, configs=configs)
    )
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return generate_latest(registry)
