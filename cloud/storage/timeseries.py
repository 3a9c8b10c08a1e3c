"""How readings are kept over time: one interface, two paths, chosen at run time.

With TimescaleDB (installed in the database, or offered by the server and created at
migrate time), ``readings`` is a hypertable whose chunks are sized by TimescaleDB's
rule, compressed (segmented by device and metric) once older than the late-arrival
window and dropped after the retention period, and ``readings_hourly`` is a real-time
continuous aggregate; TimescaleDB's own background jobs run all of it. Without it,
``readings`` keeps its native monthly partitions and the maintenance round here does
that work: partitions created ahead of time, the hourly rollup folded in by arrival
time (so late readings of any age reach their hour), retention by dropping whole
partitions.

- ``prepare(conn, settings)``: at ``anju cloud migrate``, set up whichever path applies
  (the first time TimescaleDB is used, ``readings`` is rebuilt as a hypertable);
- ``maintain(conn, settings)``: the maintenance round cloud processes run on a schedule;
- ``timescale_plan(settings, catalogue)``: the TimescaleDB statements, pure, so they are
  checked without a TimescaleDB server (none was available where this was written; see
  docs/storage.md for what ran where).

Either way ``readings_hourly`` has the columns (device_id, metric, bucket, value_count,
value_sum, value_min, value_max) and ``readings_rollup_horizon()`` says up to which hour
it is complete, so the readings API runs the same queries on both paths.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from cloud.backoff import Backoff
from cloud.errors import SettingsError, StorageError
from cloud.settings import StorageSettings
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries

log = logging.getLogger(__name__)

INDEX_BYTES_PER_ROW: Final = 100
"""Bytes one reading takes in the (device_id, metric, ts) B-tree as ingest fills it:
99 measured here (realistic ids, COPY in sorted groups of 20,000; docs/storage.md)."""
MIN_CHUNK_INTERVAL: Final = timedelta(hours=1)
MAX_CHUNK_INTERVAL: Final = timedelta(days=7)
"""TimescaleDB's default; longer chunks would hold back compression and retention."""
FOLD_MARGIN: Final = timedelta(seconds=10)
"""The fold never goes nearer to now than this (see ``rollup_safe_until`` in timeseries.sql)."""
LOCK_TIMEOUT: Final = "2s"
"""Longest a maintenance step waits for a lock before giving up until the next round."""

REFRESH_ATTEMPTS: Final = 8
"""Tries of a refresh refused for a lock (about a minute with the backoff's pauses)."""
LOCK_NOT_AVAILABLE: Final = "55P03"
HOUR: Final = timedelta(hours=1)

_READINGS: Final = "readings"


class Backend(StrEnum):
    """Which path keeps the readings."""

    PARTITIONS = "partitions"
    TIMESCALEDB = "timescaledb"


@dataclass(frozen=True, slots=True)
class Catalogue:
    """What the database says about TimescaleDB and the readings relations.

    Kinds are ``pg_class.relkind``: ``p`` a partitioned table, ``r`` a table (or a
    hypertable), ``v`` a view (or a continuous aggregate), ``None`` missing.
    """

    installed: bool
    available: bool
    readings_kind: str | None
    rollup_kind: str | None
    shared_buffers: int
    preloaded: bool = True
    """Whether ``shared_preload_libraries`` names TimescaleDB, which it must to load."""
    rollup_unrefreshed: bool = False
    """Whether the continuous aggregate still awaits its first full refresh."""


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of a plan: a named query, its parameters, and whether it calls
    into TimescaleDB (the others are plain PostgreSQL and run on any server)."""

    query: str
    params: Mapping[str, object]
    timescaledb: bool


@dataclass(frozen=True, slots=True)
class TimescalePlan:
    """``steps`` run in one transaction, then ``after_commit`` outside any."""

    chunk_interval: timedelta
    steps: tuple[Step, ...]
    after_commit: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    """What one maintenance round did (all zero on the TimescaleDB path, whose jobs
    run inside the database)."""

    backend: Backend
    partitions_created: int = 0
    hours_folded: int = 0
    partitions_dropped: tuple[str, ...] = ()
    default_rows_deleted: int = 0
    rollup_rows_deleted: int = 0
    stray_rows_moved: int = 0
    """TimescaleDB: rows found in the hypertable's root table and moved to its chunks."""
    late_hours_refreshed: int = 0
    """TimescaleDB: hours late readings reached, refreshed in the continuous aggregate."""

    @property
    def changed_layout(self) -> bool:
        """Whether partitions were created or dropped (worth an INFO line)."""
        return bool(self.partitions_created or self.partitions_dropped)


def chunk_interval(settings: StorageSettings, shared_buffers: int) -> timedelta:
    """The hypertable chunk interval: ``settings.chunk_interval_h`` when given, else
    TimescaleDB's sizing rule.

    The rule: the indexes of the chunks being written should fit in about 25% of
    main memory, which is what ``shared_buffers`` is usually set to. Ingest writes the
    newest chunk (late readings touch older ones lightly), so its index,
    ``ingest_rows_per_s`` x interval x ``INDEX_BYTES_PER_ROW``, must fit in
    ``shared_buffers``. Rounded down to whole hours, between one hour and seven days.
    """
    if settings.chunk_interval_h is not None:
        return timedelta(hours=settings.chunk_interval_h)
    seconds = shared_buffers / (settings.ingest_rows_per_s * INDEX_BYTES_PER_ROW)
    hours = timedelta(hours=math.floor(seconds / 3600))
    return min(max(hours, MIN_CHUNK_INTERVAL), MAX_CHUNK_INTERVAL)


def choose_backend(settings: StorageSettings, catalogue: Catalogue) -> Backend:
    """The path ``settings.backend`` asks for, given what the server offers.

    ``auto`` takes TimescaleDB when it is installed or available and the server preloads
    it; offered but not preloaded, ``auto`` keeps the partitions (``prepare`` warns).
    Raises SettingsError when ``timescaledb`` is asked of a server without it or not
    preloading it, when the database already has the extension but the server does not
    preload it (nothing of it could run), or when ``partitions`` is asked of a database
    whose readings are already a hypertable (there is no way back).
    """
    offered = catalogue.installed or catalogue.available
    is_hypertable = catalogue.installed and catalogue.readings_kind == "r"
    if (
        offered
        and not catalogue.preloaded
        and (catalogue.installed or settings.backend == "timescaledb")
    ):
        raise SettingsError(
            "ANJU_STORAGE_BACKEND",
            "TimescaleDB is "
            + ("installed in this database" if catalogue.installed else "offered by the server")
            + " but not in the server's shared_preload_libraries, so it cannot be loaded",
            "timescaledb added to shared_preload_libraries and the server restarted"
            + ("" if catalogue.installed else ", or auto or partitions"),
        )
    if settings.backend == "partitions":
        if is_hypertable:
            raise SettingsError(
                "ANJU_STORAGE_BACKEND",
                "readings is already a TimescaleDB hypertable, which Anju does not convert back",
                "auto or timescaledb",
            )
        return Backend.PARTITIONS
    if settings.backend == "timescaledb" and not offered:
        raise SettingsError(
            "ANJU_STORAGE_BACKEND",
            "timescaledb is not offered by this PostgreSQL server (not in pg_available_extensions)",
            "auto or partitions, or TimescaleDB installed on the server",
        )
    return Backend.TIMESCALEDB if offered and catalogue.preloaded else Backend.PARTITIONS


def timescale_plan(settings: StorageSettings, catalogue: Catalogue) -> TimescalePlan:
    """The statements that bring a database with TimescaleDB installed to the
    TimescaleDB path, from whatever state ``catalogue`` describes.

    A natively partitioned ``readings`` cannot become a hypertable, so the first time
    it is set aside, a table with the same columns and defaults is made a hypertable,
    the rows are moved, the old table dropped and the (device_id, metric, ts) index
    created; compression is enabled then. A plain ``readings_hourly`` is set aside for
    the continuous aggregate, which is filled after the commit; until that first full
    refresh succeeds, every later plan owes it again. Every time, the chunk
    interval and all policies are set again from ``settings``, so a changed setting
    takes effect at the next ``anju cloud migrate``.
    """
    interval = chunk_interval(settings, catalogue.shared_buffers)
    late = timedelta(hours=settings.late_window_h)
    steps: list[Step] = []
    after_commit: list[Step] = []

    def pg(query: str, **params: object) -> None:
        steps.append(Step(query, params, timescaledb=False))

    def ts(query: str, **params: object) -> None:
        steps.append(Step(query, params, timescaledb=True))

    if catalogue.readings_kind == "p":
        pg("timescale_lock_readings")
        pg("timescale_set_aside_partitioned")
        pg("timescale_create_table")
        ts("timescale_create_hypertable", chunk_interval=interval)
        pg("timescale_move_rows")
        pg("timescale_drop_partitioned")
        pg("timescale_create_index")
        pg("timescale_drop_partition_functions")
        ts("timescale_enable_compression")
    if catalogue.rollup_kind != "v":
        if catalogue.rollup_kind == "r":
            pg("timescale_set_aside_rollup")
        ts("timescale_create_rollup")
        pg("timescale_create_rollup_index")
        pg("timescale_mark_rollup_unrefreshed")
    pg("timescale_rollup_horizon")
    if catalogue.rollup_kind != "v" or catalogue.rollup_unrefreshed:
        after_commit.append(Step("timescale_refresh_rollup", {}, timescaledb=True))
        after_commit.append(Step("timescale_rollup_refreshed", {}, timescaledb=False))
    ts("timescale_chunk_interval", chunk_interval=interval)
    ts("timescale_remove_compression_policy")
    ts("timescale_add_compression_policy", compress_after=late)
    ts("timescale_remove_retention_policy")
    ts("timescale_add_retention_policy", drop_after=timedelta(days=settings.retention_days))
    ts("timescale_remove_rollup_policy")
    ts(
        "timescale_add_rollup_policy",
        start_offset=late + timedelta(hours=2),
        schedule=timedelta(seconds=settings.maintenance_interval_s),
    )
    ts("timescale_remove_rollup_retention")
    ts(
        "timescale_add_rollup_retention",
        drop_after=timedelta(days=settings.rollup_retention_days),
    )
    return TimescalePlan(interval, tuple(steps), tuple(after_commit))


def prepare(conn: psycopg.Connection[TupleRow], settings: StorageSettings) -> Backend:
    """Set up the path that applies on the autocommit connection ``conn``; return it.

    Run by ``apply_migrations`` after the numbered migrations, under their lock. With
    ``auto``, a TimescaleDB the server offers but cannot load (it must be in
    ``shared_preload_libraries``) is logged and the plain path kept; with
    ``timescaledb`` that raises. Raises SettingsError as ``choose_backend`` does, and
    StorageError (naming the statement) when a statement fails: the TimescaleDB
    steps run in one transaction, so a failure leaves ``readings`` as it was.
    """
    sql = queries()
    catalogue = _catalogue(conn)
    backend = choose_backend(settings, catalogue)
    if catalogue.available and not catalogue.preloaded:
        log.warning(
            "TimescaleDB is offered by the server but not in shared_preload_libraries, so "
            "it cannot be loaded; keeping native partitions (add it and restart the server, "
            "then run anju cloud migrate again, to use TimescaleDB)"
        )
    if backend is Backend.TIMESCALEDB and not catalogue.installed:
        try:
            with conn.transaction():
                conn.execute(sql["timescale_create_extension"])
        except psycopg.Error as exc:
            if conn.closed:
                raise StorageError(
                    f"the server closed the connection creating the timescaledb extension: {exc}",
                    query="timescale_create_extension",
                    sqlstate=exc.sqlstate,
                ) from exc
            if settings.backend == "timescaledb":
                raise StorageError(
                    f"could not create the timescaledb extension: {exc}",
                    query="timescale_create_extension",
                    sqlstate=exc.sqlstate,
                ) from exc
            log.warning(
                "TimescaleDB is offered but could not be created (%s); keeping partitions", exc
            )
            backend = Backend.PARTITIONS
        else:
            catalogue = _catalogue(conn)

    if backend is Backend.PARTITIONS:
        with storage_errors("partitions_ahead"):
            conn.execute(sql["partitions_ahead"], _partition_params(settings))
        log.info(
            "readings: monthly partitions, %d months ahead; hourly rollup folded every %.0f s; "
            "raw kept %d days, rollup %d days",
            settings.partition_months_ahead,
            settings.maintenance_interval_s,
            settings.retention_days,
            settings.rollup_retention_days,
        )
        return backend

    plan = timescale_plan(settings, catalogue)
    with conn.transaction():
        for step in plan.steps:
            _run(conn, step)
    for step in plan.after_commit:
        run_retrying(conn, step)
    log.info(
        "readings: TimescaleDB hypertable, chunks of %s, compressed after %d h; raw kept "
        "%d days, hourly continuous aggregate %d days",
        plan.chunk_interval,
        settings.late_window_h,
        settings.retention_days,
        settings.rollup_retention_days,
    )
    return backend


async def detect(conn: AsyncConnection[TupleRow]) -> Backend:
    """The path the database at ``conn`` was prepared for.

    Raises StorageError when ``readings`` is neither partitioned nor a hypertable
    (``anju cloud migrate`` has not run, or ran with a different anju).
    """
    with storage_errors("timeseries_catalogue"):
        cur = await conn.execute(queries()["timeseries_catalogue"])
        row = await cur.fetchone()
    assert row is not None  # one row, always
    installed, _, readings_kind = row[0], row[1], row[2]
    if readings_kind == "p":
        return Backend.PARTITIONS
    if installed and readings_kind == "r":
        return Backend.TIMESCALEDB
    raise StorageError(
        f"{_READINGS} is neither partitioned nor a TimescaleDB hypertable; run anju cloud migrate",
        query="timeseries_catalogue",
    )


async def maintain(
    conn: AsyncConnection[TupleRow],
    settings: StorageSettings,
    *,
    fold_margin: timedelta = FOLD_MARGIN,
) -> MaintenanceReport:
    """One maintenance round on the autocommit connection ``conn``.

    On the plain path, in order, each step its own transaction: partitions up to
    ``settings.partition_months_ahead`` months ahead; the rollup folded up to the
    newest instant every earlier reading is committed (``fold_margin`` short of now,
    at most); then partitions wholly older than the retention period dropped, and
    expired rows deleted from the DEFAULT partition and the rollup. On the TimescaleDB
    path its policies run as background jobs; the round moves any rows found in the
    hypertable's root table (which no query reads) to its chunks, and refreshes the
    hours late readings reached (``readings_late_hours``), which the refresh policy's
    window near now never does.

    Raises StorageError for the first step that fails (a lock not granted within
    ``LOCK_TIMEOUT`` among them); the steps before it stay done and the next round
    picks up the rest. Also raises StorageError when this role cannot see when other
    sessions' transactions began (``pg_stat_activity``), without which a fold could
    skip readings still being committed.
    """
    backend = await detect(conn)
    if backend is Backend.TIMESCALEDB:
        stray = await _rescue_root_rows(conn)
        retention = timedelta(days=settings.retention_days)
        refreshed = await _refresh_late_hours(conn, retention)
        return MaintenanceReport(backend, stray_rows_moved=stray, late_hours_refreshed=refreshed)
    sql = queries()
    retention = timedelta(days=settings.retention_days)

    async with conn.transaction():
        created: int = await _scalar(conn, "partitions_ahead", _partition_params(settings))
    hours = await _fold(conn, fold_margin)
    with storage_errors("forget_all_late_hours"):
        await conn.execute(sql["forget_all_late_hours"])
    async with conn.transaction():
        await _scalar(conn, "maintenance_lock_timeout", {"timeout": LOCK_TIMEOUT})
        with storage_errors("retention_drop_partitions"):
            cur = await conn.execute(sql["retention_drop_partitions"], {"retention": retention})
            dropped = tuple(str(name) for (name,) in await cur.fetchall())
        with storage_errors("retention_default_rows"):
            cur = await conn.execute(sql["retention_default_rows"], {"retention": retention})
            default_deleted = cur.rowcount
        with storage_errors("retention_rollup_rows"):
            cur = await conn.execute(
                sql["retention_rollup_rows"],
                {"retention": timedelta(days=settings.rollup_retention_days)},
            )
            rollup_deleted = cur.rowcount
    return MaintenanceReport(
        backend,
        partitions_created=created,
        hours_folded=hours,
        partitions_dropped=dropped,
        default_rows_deleted=default_deleted,
        rollup_rows_deleted=rollup_deleted,
    )


async def _refresh_late_hours(conn: AsyncConnection[TupleRow], retention: timedelta) -> int:
    """Refresh the continuous aggregate over each run of noted hours; forget those
    whose notes had settled, and those older than ``retention`` unrefreshed (their raw
    chunks may be gone: a refresh would erase the hour). Returns the hours refreshed."""
    with storage_errors("forget_expired_late_hours"):
        await conn.execute(queries()["forget_expired_late_hours"], {"retention": retention})
    with storage_errors("late_hours"):
        cur = await conn.execute(queries()["late_hours"], {"retention": retention})
        noted = await cur.fetchall()
    if not noted:
        return 0
    hours = [bucket for bucket, _ in noted]
    for start, end in _runs(hours):
        await _call_retrying(conn, "timescale_refresh_hours", {"start": start, "end": end})
    with storage_errors("forget_late_hours"):
        await conn.execute(queries()["forget_late_hours"], {"hours": hours, "settled": noted[0][1]})
    return len(hours)


def _runs(hours: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Sorted whole hours as [start, end) runs of consecutive hours."""
    runs: list[tuple[datetime, datetime]] = []
    for hour in hours:
        if runs and runs[-1][1] == hour:
            runs[-1] = (runs[-1][0], hour + HOUR)
        else:
            runs.append((hour, hour + HOUR))
    return runs


async def _call_retrying(
    conn: AsyncConnection[TupleRow], query: str, params: Mapping[str, object]
) -> None:
    """A refresh, again after a pause while a refresh policy holds the aggregate
    (SQLSTATE 55P03), as ``run_retrying`` does at migrate time."""
    delays = Backoff(initial=0.5, cap=8.0)
    for attempt in range(1, REFRESH_ATTEMPTS + 1):
        try:
            with storage_errors(query):
                await conn.execute(queries()[query], params)
            return
        except StorageError as exc:
            if exc.sqlstate != LOCK_NOT_AVAILABLE or attempt == REFRESH_ATTEMPTS:
                raise
            await asyncio.sleep(delays.next_delay())


async def _rescue_root_rows(conn: AsyncConnection[TupleRow]) -> int:
    """Move rows from the hypertable's root table into its chunks; return how many.

    Such rows are invisible to every query. They can only come from a COPY that began
    before ``readings`` became a hypertable and waited out the conversion; the writer
    prevents that for ingest, so finding any means another writer did it.
    """
    async with conn.transaction():
        await _scalar(conn, "timescale_see_root_table", {"on": "on"})
        if not await _scalar(conn, "timescale_root_rows_exist", {}):
            return 0
        await _scalar(conn, "maintenance_lock_timeout", {"timeout": LOCK_TIMEOUT})
        for query in ("timescale_lock_root_table", "timescale_take_root_rows"):
            with storage_errors(query):
                await conn.execute(queries()[query])
        with storage_errors("timescale_clear_root_rows"):
            moved = (await conn.execute(queries()["timescale_clear_root_rows"])).rowcount
        await _scalar(conn, "timescale_see_root_table", {"on": "off"})
        with storage_errors("timescale_put_root_rows"):
            await conn.execute(queries()["timescale_put_root_rows"])
    log.warning(
        "readings: %d rows were in the hypertable's root table, where no query reads "
        "them, and are now in its chunks (a COPY begun before the conversion to "
        "TimescaleDB by a writer that did not lock readings first)",
        moved,
    )
    return moved


async def _fold(conn: AsyncConnection[TupleRow], margin: timedelta) -> int:
    """Fold readings received since the watermark into the rollup; return hours touched."""
    sql = queries()
    async with conn.transaction():
        # First statement of the transaction: now() is taken before pg_stat_activity is read.
        with storage_errors("rollup_claim"):
            cur = await conn.execute(sql["rollup_claim"])
            if await cur.fetchone() is None:
                return 0  # another process is folding; its fold covers ours
        with storage_errors("rollup_safe_until"):
            cur = await conn.execute(sql["rollup_safe_until"], {"margin": margin})
            row = await cur.fetchone()
        assert row is not None  # an aggregate without GROUP BY yields one row
        until, hidden = row
        if hidden:
            raise StorageError(
                f"{hidden} session(s) of other roles hide when their transactions began, "
                "so the rollup cannot tell which readings are committed; grant this role "
                "pg_read_all_stats, or run ingest and maintenance as one role",
                query="rollup_safe_until",
            )
        with storage_errors("rollup_fold"):
            cur = await conn.execute(sql["rollup_fold"], {"until": until})
            hours = cur.rowcount
        with storage_errors("rollup_advance"):
            await conn.execute(sql["rollup_advance"], {"until": until})
    return hours


async def _scalar(conn: AsyncConnection[TupleRow], query: str, params: Mapping[str, object]) -> Any:
    with storage_errors(query):
        cur = await conn.execute(queries()[query], params)
        row = await cur.fetchone()
    assert row is not None  # a SELECT without FROM or WHERE yields one row
    return row[0]


def _partition_params(settings: StorageSettings) -> dict[str, object]:
    return {
        "retention": timedelta(days=settings.retention_days),
        "ahead": settings.partition_months_ahead,
    }


def _catalogue(conn: psycopg.Connection[TupleRow]) -> Catalogue:
    with storage_errors("timeseries_catalogue"):
        row = conn.execute(queries()["timeseries_catalogue"]).fetchone()
    assert row is not None  # one row, always
    installed, available, readings_kind, rollup_kind, shared_buffers, preloaded, unrefreshed = row
    return Catalogue(
        installed=bool(installed),
        available=bool(available),
        readings_kind=None if readings_kind is None else str(readings_kind),
        rollup_kind=None if rollup_kind is None else str(rollup_kind),
        shared_buffers=int(str(shared_buffers)),
        preloaded=bool(preloaded),
        rollup_unrefreshed=bool(unrefreshed),
    )


def _run(conn: psycopg.Connection[TupleRow], step: Step) -> None:
    with storage_errors(step.query):
        conn.execute(queries()[step.query], step.params or None)


def run_retrying(
    conn: psycopg.Connection[TupleRow],
    step: Step,
    *,
    backoff: Backoff | None = None,
    attempts: int = REFRESH_ATTEMPTS,
) -> None:
    """``_run``, again after a pause while the step is refused for a lock held
    elsewhere: the refresh policy this migrate just added may be refreshing the same
    aggregate at that moment (SQLSTATE 55P03). Other failures, and the last refusal,
    raise StorageError."""
    delays = backoff or Backoff(initial=0.5, cap=8.0)
    for attempt in range(1, attempts + 1):
        try:
            _run(conn, step)
            return
        except StorageError as exc:
            if exc.sqlstate != LOCK_NOT_AVAILABLE or attempt == attempts:
                raise
            delay = delays.next_delay()
            log.info("%s: %s; trying again in %.1f s", step.query, exc, delay)
            time.sleep(delay)
