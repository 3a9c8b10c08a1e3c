"""How readings are kept over time, against the real PostgreSQL of the session.

The plain path runs for real: partitions ahead, the rollup folded by arrival (late
readings and readings still being committed included), retention by partitions. The
TimescaleDB path cannot run here (no TimescaleDB in any registry this machine
reaches): its statements are checked for PostgreSQL syntax by the server's own parser,
and its plain PostgreSQL steps (rebuilding ``readings`` without partitions, setting the
rollup table aside) run on a real database. Against a TimescaleDB server
(``ANJU_TEST_DATABASE_URL``) the module is skipped: migrate builds the other path there.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import AsyncConnection, sql

from cloud.backoff import Backoff
from cloud.errors import SettingsError, StorageError
from cloud.ingest.writer import copy_readings
from cloud.settings import StorageSettings
from cloud.storage.migrate import apply_migrations
from cloud.storage.sql import queries
from cloud.storage.timeseries import (
    Backend,
    Catalogue,
    MaintenanceReport,
    Step,
    maintain,
    run_retrying,
    timescale_plan,
)

# Every test here starts from, or asserts, the plain path (native partitions, the
# folded rollup table); tests/integration/test_timescaledb.py covers the TimescaleDB
# path on a server that has it.
pytestmark = pytest.mark.plain_storage

NO_MARGIN = timedelta(0)
Row = tuple[datetime, str, str, float]

EXPECTED_HOURS = """
    SELECT device_id, metric, date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           count(*), sum(value), min(value), max(value)
    FROM readings GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
ROLLUP_HOURS = """
    SELECT device_id, metric, bucket, value_count, value_sum, value_min, value_max
    FROM readings_hourly ORDER BY 1, 2, 3
"""


def _now() -> datetime:
    return datetime.now(UTC)


def _rows(start: datetime, hours: int, *, devices: Sequence[str] = ("dev-a", "dev-b")) -> list[Row]:
    """Readings every 7 minutes over ``hours`` from ``start``, two metrics, random values."""
    rng = random.Random(start.timestamp())
    found: list[Row] = []
    for step in range(hours * 60 // 7):
        ts = start + timedelta(minutes=7 * step, seconds=rng.randrange(60))
        for device in devices:
            for metric in ("temperature_c", "co_ppm"):
                found.append((ts, device, metric, round(rng.uniform(-5, 40), 3)))
    return found


def _insert(conn: psycopg.Connection[Any], rows: Sequence[Row]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (ts, device_id, metric, value, gateway_id, seq) "
            "VALUES (%s, %s, %s, %s, 'gw-1', 1)",
            rows,
        )


def _fetch(database_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


async def _maintain(
    database_url: str, settings: StorageSettings | None = None, *, margin: timedelta = NO_MARGIN
) -> MaintenanceReport:
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await maintain(conn, settings or StorageSettings(), fold_margin=margin)


def _assert_rollup_matches_readings(database_url: str) -> None:
    expected = _fetch(database_url, EXPECTED_HOURS)
    rolled = _fetch(database_url, ROLLUP_HOURS)
    assert [row[:4] for row in rolled] == [row[:4] for row in expected]
    for got, want in zip(rolled, expected, strict=True):
        assert got[4] == pytest.approx(want[4], rel=1e-12)
        assert got[5:] == want[5:]


def _partitions(database_url: str) -> set[str]:
    return {
        name
        for (name,) in _fetch(
            database_url,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'readings'::regclass",
        )
    }


def _as_role(url: str, role: str) -> str:
    """``url`` with its user replaced by ``role`` (and no password: trust auth)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


def _month_name(instant: datetime, months: int = 0) -> str:
    index = instant.year * 12 + instant.month - 1 + months
    return f"readings_{index // 12:04d}_{index % 12 + 1:02d}"


# --- the plain path ------------------------------------------------------------------


async def test_partitions_are_made_ahead_and_from_the_retention_cutoff(database_url: str) -> None:
    now = _now()
    ahead = [_month_name(now, months) for months in (1, 2, 3, 4)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name in ahead:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    assert not set(ahead) & _partitions(database_url)

    report = await _maintain(database_url, StorageSettings(partition_months_ahead=4))

    assert report.backend is Backend.PARTITIONS
    assert report.partitions_created == 4
    assert set(ahead) <= _partitions(database_url)
    # A retention shorter than a month starts partitions at its cutoff, not last
    # month, so no partition is made only to be dropped in the same round.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(_month_name(now, -1))))
    short = StorageSettings(retention_days=2, late_window_h=24, rollup_retention_days=2)
    report = await _maintain(database_url, short)
    cutoff = _now() - timedelta(days=2)
    expected_created = 1 if _month_name(cutoff) != _month_name(now) else 0
    assert report.partitions_created == expected_created
    assert report.partitions_dropped == ()
    assert "readings_default" in _partitions(database_url)


async def test_fold_matches_readings_and_takes_late_readings(database_url: str) -> None:
    now = _now()
    with psycopg.connect(database_url, autocommit=True) as conn:
        _insert(conn, _rows(now - timedelta(hours=6), 6))

    first = await _maintain(database_url)
    assert first.hours_folded > 0
    _assert_rollup_matches_readings(database_url)

    # Late readings: for hours already folded, and for a day long before any fold.
    late = _rows(now - timedelta(hours=5), 2, devices=("dev-a",))[::3]
    late += _rows(now - timedelta(days=3), 1, devices=("dev-c",))
    with psycopg.connect(database_url, autocommit=True) as conn:
        _insert(conn, late)
    before = _fetch(database_url, ROLLUP_HOURS)
    assert before != _fetch(database_url, EXPECTED_HOURS)  # not folded yet

    await _maintain(database_url)
    _assert_rollup_matches_readings(database_url)

    # Folding again with nothing new adds nothing twice.
    again = await _maintain(database_url)
    assert again.hours_folded == 0
    _assert_rollup_matches_readings(database_url)


async def test_fold_waits_for_readings_still_being_committed(database_url: str) -> None:
    """A writer that began before the fold commits after it: its readings carry a
    received_at before the fold's instant, and a fold that took "now" as its watermark
    would skip them forever. The watermark stops at the writer's start instead."""
    now = _now()
    writer = psycopg.connect(database_url)
    try:
        _insert(writer, _rows(now - timedelta(hours=3), 1, devices=("dev-slow",)))
        started = writer.execute("SELECT now()").fetchone()
        assert started is not None
        await _maintain(database_url)
        watermark = _fetch(database_url, "SELECT watermark FROM readings_rollup_state")[0][0]
        assert watermark <= started[0]
        writer.commit()
    finally:
        writer.close()
    await _maintain(database_url)
    _assert_rollup_matches_readings(database_url)
    assert _fetch(
        database_url, "SELECT count(*) FROM readings_hourly WHERE device_id = 'dev-slow'"
    )[0][0]


async def test_fold_keeps_a_margin_from_now(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        _insert(conn, _rows(_now() - timedelta(hours=2), 1))
    report = await _maintain(database_url, margin=timedelta(minutes=5))
    assert report.hours_folded == 0
    assert _fetch(database_url, "SELECT count(*) FROM readings_hourly") == [(0,)]


async def test_a_fold_in_progress_elsewhere_is_left_alone(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        _insert(conn, _rows(_now() - timedelta(hours=2), 1))
    with psycopg.connect(database_url) as other:
        other.execute("SELECT * FROM readings_rollup_state FOR UPDATE")
        report = await _maintain(database_url)
    assert report.hours_folded == 0
    assert (await _maintain(database_url)).hours_folded > 0


async def test_fold_refuses_when_other_sessions_are_hidden(
    database_url: str, unique_id: Callable[[str], str]
) -> None:
    """Without seeing when another role's transaction began, a fold could skip its rows."""
    writer_role, maintainer_role = unique_id("writer").replace("-", "_"), unique_id("maint")
    maintainer_role = maintainer_role.replace("-", "_")
    with psycopg.connect(database_url, autocommit=True) as admin:
        for role in (writer_role, maintainer_role):
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(maintainer_role)
            )
        )
    try:
        with psycopg.connect(_as_role(database_url, writer_role)) as writer:
            writer.execute("SELECT 1")  # an open transaction of another role
            with pytest.raises(StorageError, match="pg_read_all_stats") as caught:
                await _maintain(_as_role(database_url, maintainer_role))
        assert caught.value.query == "rollup_safe_until"
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            for role in (writer_role, maintainer_role):
                admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


async def test_retention_drops_old_partitions_and_rows_and_keeps_the_rest(
    database_url: str,
) -> None:
    now = _now()
    cutoff = now - timedelta(days=90)
    old = (now - timedelta(days=200)).replace(day=2)  # well inside its month
    recent = now - timedelta(hours=3)
    parked_old, parked_future = now - timedelta(days=400), now + timedelta(days=3 * 366)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT readings_ensure_partitions(%s, 1)", [old])
        conn.execute("SELECT readings_ensure_partitions(%s, 1)", [cutoff])
        _insert(conn, _rows(old, 2) + _rows(recent, 2))
        _insert(
            conn,
            [
                (parked_old, "dev-a", "co_ppm", 1.0),
                (parked_future, "dev-a", "co_ppm", 2.0),
                (cutoff + timedelta(minutes=1), "dev-a", "co_ppm", 3.0),
            ],
        )
        conn.execute(
            "INSERT INTO readings_hourly VALUES ('dev-a', 'co_ppm', %s, 1, 1, 1, 1), "
            "('dev-a', 'co_ppm', %s, 1, 1, 1, 1)",
            [now - timedelta(days=800), now - timedelta(days=100)],
        )
    assert {_month_name(old), _month_name(cutoff)} <= _partitions(database_url)
    expired_hours = _fetch(
        database_url,
        "SELECT count(DISTINCT (device_id, metric, hour)) FROM (SELECT device_id, metric, "
        "date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour FROM readings) r "
        "WHERE hour < %s",
        cutoff,
    )[0][0]

    report = await _maintain(database_url, StorageSettings(retention_days=90))

    # Whole months wholly before the cutoff go; the month holding it stays.
    assert report.partitions_dropped == (_month_name(old),)
    partitions = _partitions(database_url)
    assert _month_name(cutoff) in partitions
    assert "readings_default" in partitions
    # DEFAULT keeps its recent rows (here one from a clock far ahead) and loses old ones.
    assert report.default_rows_deleted == 1
    assert _fetch(database_url, "SELECT count(*) FROM readings WHERE ts < %s", cutoff) == [(0,)]
    kept = _fetch(database_url, "SELECT count(*) FROM readings WHERE ts >= %s", cutoff)[0][0]
    assert kept == len(_rows(recent, 2)) + 2
    # Hourly rollups outlive the raw readings: the old month was folded before it went.
    assert report.rollup_rows_deleted == 1
    old_hours = _fetch(
        database_url, "SELECT count(*) FROM readings_hourly WHERE bucket < %s", cutoff
    )[0][0]
    assert old_hours == expired_hours + 1  # and the rollup row planted 100 days ago


async def test_a_busy_table_fails_the_round_and_the_next_round_finishes(
    database_url: str,
) -> None:
    old = _now() - timedelta(days=200)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT readings_ensure_partitions(%s, 1)", [old])
        _insert(conn, _rows(_now() - timedelta(hours=2), 1))
    with psycopg.connect(database_url) as reader:
        reader.execute("SELECT count(*) FROM readings")  # holds a lock until it ends
        with pytest.raises(StorageError) as caught:
            await _maintain(database_url)
    assert caught.value.query == "retention_drop_partitions"
    assert caught.value.sqlstate == "55P03"  # lock_not_available: gave up, did not queue
    # The fold before it stayed done; the retention is finished by the next round.
    assert _fetch(database_url, "SELECT count(*) FROM readings_hourly")[0][0] > 0
    report = await _maintain(database_url)
    assert report.partitions_dropped == (_month_name(old),)


async def test_the_writer_notes_the_hours_of_late_readings(database_url: str) -> None:
    """Issue 17, defect 4: the TimescaleDB path's refresh policy never reaches hours
    older than its window, so the writer notes them for maintenance to refresh; live
    readings note nothing."""
    now = _now()
    late = now - timedelta(hours=60)
    rows = [
        ("dev-a", "co_ppm", late, 1.0, "gw-1", 1),
        ("dev-a", "co_ppm", late + timedelta(minutes=1), 2.0, "gw-1", 2),
        ("dev-a", "co_ppm", now - timedelta(hours=3), 3.0, "gw-1", 3),
        ("dev-a", "co_ppm", now - timedelta(seconds=5), 4.0, "gw-1", 4),
    ]
    async with await AsyncConnection.connect(database_url) as conn, conn.transaction():
        await copy_readings(conn, rows)
        await copy_readings(conn, [("dev-b", "co_ppm", now, 5.0, "gw-1", 5)])
    noted = [bucket for (bucket,) in _fetch(database_url, "SELECT bucket FROM readings_late_hours")]
    hour = timedelta(hours=1)
    assert sorted(noted) == [
        datetime.fromtimestamp(instant.timestamp() // 3600 * 3600, UTC)
        for instant in (late, now - 3 * hour)
    ]
    # The plain path folds late readings by arrival; its round forgets the notes.
    await _maintain(database_url)
    assert _fetch(database_url, "SELECT count(*) FROM readings_late_hours") == [(0,)]


def test_a_refresh_refused_for_a_lock_is_tried_again(database_url: str) -> None:
    """Issue 17, defect 2: the refresh after a conversion met the refresh policy's
    refresh (SQLSTATE 55P03) and migrate gave up. Here a lock_timeout gives the same
    SQLSTATE on plain PostgreSQL: the step waits out the lock holder and succeeds."""
    step = Step("retention_default_rows", {"retention": timedelta(days=1)}, timescaledb=False)
    with (
        psycopg.connect(database_url) as holder,
        psycopg.connect(database_url, autocommit=True) as conn,
    ):
        holder.execute("LOCK TABLE readings_default IN ACCESS EXCLUSIVE MODE")
        conn.execute("SET lock_timeout = '100ms'")
        with ThreadPoolExecutor(max_workers=1) as pool:
            released = pool.submit(lambda: (time.sleep(1.0), holder.rollback()))
            started = time.monotonic()
            run_retrying(conn, step, backoff=Backoff(initial=0.2, cap=0.2), attempts=20)
            released.result()
        assert time.monotonic() - started >= 1.0  # it did wait for the holder
        # A lock held past the last try fails the step, naming the SQLSTATE.
        holder.execute("LOCK TABLE readings_default IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(StorageError) as caught:
            run_retrying(conn, step, backoff=Backoff(initial=0.1, cap=0.1), attempts=2)
        assert caught.value.sqlstate == "55P03"


def test_migrate_refuses_timescaledb_where_the_server_has_none(database_url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        apply_migrations(database_url, storage=StorageSettings(backend="timescaledb"))
    assert caught.value.variable == "ANJU_STORAGE_BACKEND"
    assert apply_migrations(database_url, storage=StorageSettings(backend="partitions")) == []


# --- the TimescaleDB path, as far as PostgreSQL alone can check it -------------------


@pytest.fixture
def syntax_checker(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def _check_syntax(conn: psycopg.Connection[Any], statement: str) -> None:
    """Have the server parse ``statement`` without running it or resolving its names.

    PL/pgSQL checks the syntax of every statement in a function body when the function
    is created, and looks names up only when it runs; the function is never called.
    """
    body = re.sub(r"%\(\w+\)s", "NULL", statement)
    conn.execute(
        "CREATE OR REPLACE FUNCTION pg_temp.syntax_check() RETURNS void LANGUAGE plpgsql "
        f"AS $check$ BEGIN {body}; END $check$"
    )


def test_every_timescaledb_statement_is_valid_postgresql(
    syntax_checker: psycopg.Connection[Any],
) -> None:
    first = timescale_plan(StorageSettings(), Catalogue(True, True, "p", "r", 2**30))
    for step in (*first.steps, *first.after_commit):
        _check_syntax(syntax_checker, queries()[step.query])
    # The check can fail: a statement with a typo is refused.
    with pytest.raises(psycopg.errors.SyntaxError):
        _check_syntax(syntax_checker, "ALTER TABLE readings SET (timescaledb.compress,")


def _columns(database_url: str) -> list[tuple[Any, ...]]:
    return _fetch(
        database_url,
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull, "
        "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = 'readings'::regclass AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
    )


def _run_plain_steps(database_url: str, steps: Sequence[Step]) -> None:
    with psycopg.connect(database_url) as conn:
        for step in steps:
            if not step.timescaledb:
                conn.execute(queries()[step.query], step.params or None)


def test_rebuilding_readings_keeps_columns_index_and_rows(database_url: str) -> None:
    """The plain PostgreSQL steps of the conversion, on a real database: everything
    but create_hypertable and compression, which need TimescaleDB."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        _insert(conn, _rows(_now() - timedelta(days=50), 3) + _rows(_now(), 3))
        _insert(conn, [(_now() - timedelta(days=700), "dev-z", "co_ppm", 9.0)])  # in DEFAULT
    columns = _columns(database_url)
    rows = _fetch(database_url, "SELECT * FROM readings ORDER BY ts, device_id, metric")

    plan = timescale_plan(StorageSettings(), Catalogue(True, True, "p", "r", 2**30))
    names = [step.query for step in plan.steps]
    _run_plain_steps(database_url, plan.steps[: names.index("timescale_enable_compression")])

    assert _fetch(
        database_url, "SELECT relkind::text FROM pg_class WHERE relname = 'readings'"
    ) == [("r",)]
    assert _columns(database_url) == columns
    assert _fetch(database_url, "SELECT * FROM readings ORDER BY ts, device_id, metric") == rows
    assert _fetch(
        database_url,
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'readings'",
    ) == [
        (
            "readings_device_metric_ts",
            "CREATE INDEX readings_device_metric_ts ON public.readings "
            "USING btree (device_id, metric, ts)",
        )
    ]
    leftovers = _fetch(
        database_url,
        "SELECT relname FROM pg_class WHERE relname LIKE 'readings\\_%%' AND relkind IN ('r', 'p') "
        "AND relname NOT LIKE 'readings\\_hourly%%' "
        "AND relname NOT IN ('readings_rollup_state', 'readings_late_hours')",
    )
    assert leftovers == []
    assert _fetch(
        database_url, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'readings\\_%%partitions'"
    ) == [(0,)]


@pytest.mark.parametrize("with_rows", [False, True])
def test_the_rollup_table_gives_way_and_keeps_its_history(
    database_url: str, with_rows: bool
) -> None:
    if with_rows:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO readings_hourly VALUES ('dev-a', 'co_ppm', now(), 3, 6, 1, 3)"
            )
    _run_plain_steps(database_url, [Step("timescale_set_aside_rollup", {}, timescaledb=False)])

    remaining = {
        name
        for (name,) in _fetch(
            database_url,
            "SELECT relname FROM pg_class WHERE relname IN "
            "('readings_hourly', 'readings_rollup_state', 'readings_hourly_before_timescaledb')",
        )
    }
    assert remaining == ({"readings_hourly_before_timescaledb"} if with_rows else set())


def test_maintenance_on_many_connections_at_once_stays_exact(database_url: str) -> None:
    """Several processes run the round at the same time; the rollup counts each reading once."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        _insert(conn, _rows(_now() - timedelta(hours=4), 4))

    def round_trip(_: int) -> MaintenanceReport:
        return asyncio.run(_maintain(database_url))

    with ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(round_trip, range(8)))
    assert sum(report.hours_folded for report in reports) > 0
    _assert_rollup_matches_readings(database_url)
