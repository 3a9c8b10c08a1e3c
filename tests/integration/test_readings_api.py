"""``GET /devices/{id}/readings`` against the real PostgreSQL: every bucket the API
returns equals the same statistics computed here, in Python, from the stored readings,
whether the API read them from the hourly rollup, from the readings, or from both."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from psycopg import AsyncConnection

from cloud.api.app import create_app
from cloud.auth.roles import Role
from cloud.registry import register_community, register_device, register_gateway
from cloud.settings import CloudSettings, StorageSettings
from cloud.storage.timeseries import maintain
from schemas.vocabulary import DeviceKind
from tests.api_support import api_client, make_key

DEVICE = "sensor-1"
OTHER = "sensor-2"
CHINA = timezone(timedelta(hours=8))


@dataclass(frozen=True)
class Site:
    now: datetime
    hour: datetime
    """The start of the current UTC hour."""


def _readings(now: datetime) -> list[tuple[datetime, str, str, float]]:
    """Three days up to ``now``: a reading about every 150 s per device and metric, and
    one at ``now`` itself, so the current hour has readings even a second after it
    began (without it the tests failed in the first minutes of every hour)."""
    rng = random.Random(7)
    rows = []
    ts = now - timedelta(days=3)
    while True:
        for device in (DEVICE, OTHER):
            for metric in ("temperature_c", "co_ppm"):
                rows.append((ts, device, metric, round(rng.gauss(20, 8), 4)))
        if ts == now:
            return rows
        ts = min(now, ts + timedelta(seconds=rng.randrange(100, 200)))


@pytest_asyncio.fixture
async def site(database_url: str) -> Site:
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await register_community(conn, "xijin/fenghuang")
        await register_gateway(conn, "gw-1", "xijin/fenghuang")
        for device in (DEVICE, OTHER):
            await register_device(
                conn, device, gateway_id="gw-1", kind=DeviceKind.SMOKE, profile_id="anju-smoke-mb"
            )
    now = datetime.now(UTC)
    _insert(database_url, _readings(now))
    return Site(now=now, hour=now.replace(minute=0, second=0, microsecond=0))


@pytest_asyncio.fixture
async def client(database_url: str, site: Site) -> AsyncIterator[httpx.AsyncClient]:
    """The API as the community's property manager."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        token = await make_key(conn, role=Role.PROPERTY_MANAGER, scope="xijin/fenghuang")
    async with api_client(create_app(CloudSettings(database_url=database_url)), token) as http:
        yield http


def _insert(database_url: str, rows: Sequence[tuple[datetime, str, str, float]]) -> None:
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (ts, device_id, metric, value, gateway_id, seq) "
            "VALUES (%s, %s, %s, %s, 'gw-1', 1)",
            rows,
        )


async def _fold(database_url: str) -> None:
    """Bring the rollup up to date: the plain path's fold, or on TimescaleDB (a server
    of ANJU_TEST_DATABASE_URL) a full refresh of the continuous aggregate."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        report = await maintain(conn, StorageSettings(), fold_margin=timedelta(0))
        cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
        if await cur.fetchone() is not None:
            await conn.execute("CALL refresh_continuous_aggregate('readings_hourly', NULL, NULL)")
            return
    assert report.hours_folded > 0


def _expected(
    database_url: str, metric: str, start: datetime, end: datetime, width: timedelta
) -> list[dict[str, Any]]:
    """Buckets counted from ``start``, computed in Python from the stored readings."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT ts, value FROM readings WHERE device_id = %s AND metric = %s "
            "AND ts >= %s AND ts < %s",
            [DEVICE, metric, start, end],
        ).fetchall()
    buckets: dict[int, list[float]] = {}
    for ts, value in rows:
        buckets.setdefault((ts - start) // width, []).append(value)
    return [
        {
            "start": start + index * width,
            "count": len(values),
            "min": min(values),
            "max": max(values),
            "avg": sum(values) / len(values),
        }
        for index, values in sorted(buckets.items())
    ]


async def _series(
    client: httpx.AsyncClient, metric: str, start: datetime, end: datetime, bucket: str
) -> dict[str, Any]:
    response = await client.get(
        f"/devices/{DEVICE}/readings",
        params={
            "metric": metric,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "bucket": bucket,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _assert_buckets(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [datetime.fromisoformat(b["start"]) for b in got] == [b["start"] for b in want]
    assert [(b["count"], b["min"], b["max"]) for b in got] == [
        (b["count"], b["min"], b["max"]) for b in want
    ]
    assert [b["avg"] for b in got] == pytest.approx([b["avg"] for b in want], rel=1e-12)


# rollup_until follows the plain path's fold; TimescaleDB's real-time aggregate is
# complete at every hour (test_timescaledb.py checks its late hours).
@pytest.mark.plain_storage
async def test_hourly_buckets_are_the_same_from_readings_and_from_the_rollup(
    site: Site, client: httpx.AsyncClient, database_url: str
) -> None:
    start, end = site.hour - timedelta(hours=30), site.hour - timedelta(hours=6)
    want = _expected(database_url, "temperature_c", start, end, timedelta(hours=1))
    assert len(want) == 24

    before = await _series(client, "temperature_c", start, end, "1h")
    assert datetime.fromisoformat(before["rollup_until"]) == start  # nothing folded yet
    _assert_buckets(before["buckets"], want)

    await _fold(database_url)
    after = await _series(client, "temperature_c", start, end, "1h")
    assert datetime.fromisoformat(after["rollup_until"]) == end  # every hour from the rollup
    _assert_buckets(after["buckets"], want)
    assert after["bucket"] == "1h"
    assert (datetime.fromisoformat(after["from"]), datetime.fromisoformat(after["to"])) == (
        start,
        end,
    )


# rollup_until follows the plain path's fold; TimescaleDB's real-time aggregate is
# complete at every hour (test_timescaledb.py checks its late hours).
@pytest.mark.plain_storage
async def test_a_window_reaching_now_joins_rollup_and_readings(
    site: Site, client: httpx.AsyncClient, database_url: str
) -> None:
    await _fold(database_url)
    start, end = site.hour - timedelta(hours=5), site.hour + timedelta(hours=2)
    body = await _series(client, "co_ppm", start, end, "1h")
    assert datetime.fromisoformat(body["rollup_until"]) == site.hour
    _assert_buckets(
        body["buckets"], _expected(database_url, "co_ppm", start, end, timedelta(hours=1))
    )
    assert datetime.fromisoformat(body["buckets"][-1]["start"]) == site.hour  # the current hour


async def test_late_readings_reach_the_rollup_at_the_next_fold(
    site: Site, client: httpx.AsyncClient, database_url: str
) -> None:
    await _fold(database_url)
    start, end = site.hour - timedelta(hours=48), site.hour - timedelta(hours=24)
    on_time = _expected(database_url, "temperature_c", start, end, timedelta(hours=1))
    late_hour = start + timedelta(hours=7)
    _insert(
        database_url,
        [(late_hour + timedelta(minutes=m), DEVICE, "temperature_c", 100.0 + m) for m in (3, 31)],
    )
    with_late = _expected(database_url, "temperature_c", start, end, timedelta(hours=1))
    assert with_late != on_time

    # Until the next fold, hours the rollup serves do not show the late readings yet.
    stale = await _series(client, "temperature_c", start, end, "1h")
    _assert_buckets(stale["buckets"], on_time)

    await _fold(database_url)
    folded = await _series(client, "temperature_c", start, end, "1h")
    _assert_buckets(folded["buckets"], with_late)


async def test_daily_buckets_follow_the_local_midnight_given(
    site: Site, client: httpx.AsyncClient, database_url: str
) -> None:
    await _fold(database_url)
    local_midnight = (
        (site.now - timedelta(days=2))
        .astimezone(CHINA)
        .replace(hour=0, minute=0, second=0, microsecond=0)
    )
    end = local_midnight + timedelta(days=2)
    body = await _series(client, "co_ppm", local_midnight, end, "1d")
    want = _expected(database_url, "co_ppm", local_midnight, end, timedelta(days=1))
    assert len(want) == 2
    _assert_buckets(body["buckets"], want)
    assert datetime.fromisoformat(body["buckets"][0]["start"]) == local_midnight


async def test_minute_buckets_count_from_the_window_start(
    site: Site, client: httpx.AsyncClient, database_url: str
) -> None:
    start = site.now - timedelta(hours=20, minutes=17, seconds=13)
    end = start + timedelta(hours=3)
    body = await _series(client, "temperature_c", start, end, "1m")
    want = _expected(database_url, "temperature_c", start, end, timedelta(minutes=1))
    assert len(want) > 50
    _assert_buckets(body["buckets"], want)
    assert body["rollup_until"] is None


async def test_raw_readings_in_order_and_cut_at_the_limit(
    site: Site, client: httpx.AsyncClient, database_url: str
) -> None:
    start, end = site.now - timedelta(hours=10), site.now - timedelta(hours=8)
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT ts, value FROM readings WHERE device_id = %s AND metric = 'co_ppm' "
            "AND ts >= %s AND ts < %s ORDER BY ts",
            [DEVICE, start, end],
        ).fetchall()
    path = f"/devices/{DEVICE}/readings"
    window = {"metric": "co_ppm", "from": start.isoformat(), "to": end.isoformat()}

    whole = (await client.get(path, params={**window, "bucket": "raw"})).json()
    assert [(datetime.fromisoformat(r["ts"]), r["value"]) for r in whole["readings"]] == stored
    assert (whole["truncated"], whole["buckets"]) == (False, [])

    cut = (await client.get(path, params={**window, "bucket": "raw", "limit": 5})).json()
    assert [(datetime.fromisoformat(r["ts"]), r["value"]) for r in cut["readings"]] == stored[:5]
    assert cut["truncated"] is True


@pytest.mark.parametrize(
    ("query", "status", "detail"),
    [
        ({"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T09:00:00Z"}, 422, "must be after"),
        ({"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T10:00:00Z"}, 422, "must be after"),
        ({"bucket": "raw", "to": "2026-03-04T00:00:00Z"}, 422, "at most 1 day"),
        ({"bucket": "1m", "to": "2026-03-12T00:00:00Z"}, 422, "more than 10000"),
        ({"bucket": "1h", "from": "2026-03-02T00:30:00Z"}, 422, "must be a whole hour"),
        ({"bucket": "1d", "to": "2026-03-03T05:00:00.5+08:00"}, 422, "must be a whole hour"),
        ({"bucket": "5m"}, 422, "'raw', '1m', '1h' or '1d'"),
        ({"from": "2026-03-02T00:00:00"}, 422, "timezone"),
        ({"from": "yesterday"}, 422, "datetime"),
        ({"metric": "loudness"}, 422, "temperature_c"),
        ({"bucket": "raw", "limit": 0}, 422, "greater than or equal to 1"),
        ({"device": "nobody"}, 404, "no device 'nobody'"),
        ({"device": "%00"}, 422, "path.device_id"),
        ({"from": "0001-01-01T00:00:00+01:00"}, 422, "between 1900"),
        ({"to": "9999-12-31T22:00:00-01:00"}, 422, "between 1900"),
    ],
)
async def test_bad_requests_say_what_is_wrong(
    site: Site, client: httpx.AsyncClient, query: dict[str, Any], status: int, detail: str
) -> None:
    params = {"metric": "co_ppm", "from": "2026-03-02T00:00:00Z", "to": "2026-03-03T00:00:00Z"}
    params.update(query)
    device = params.pop("device", DEVICE)
    response = await client.get(f"/devices/{device}/readings", params=params)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in str(response.json())


async def test_an_offset_that_is_not_whole_hours_is_accepted_when_utc_is(
    site: Site, client: httpx.AsyncClient, database_url: str
) -> None:
    """Whole hours are checked in UTC, where the rollup's hours are: India's +05:30
    midnight is 18:30 UTC, not a whole hour; 05:30 local is 00:00 UTC, which is."""
    india = timezone(timedelta(hours=5, minutes=30))
    start = (site.hour - timedelta(hours=24)).astimezone(india)
    end = start + timedelta(hours=12)
    body = await _series(client, "co_ppm", start, end, "1h")
    _assert_buckets(
        body["buckets"], _expected(database_url, "co_ppm", start, end, timedelta(hours=1))
    )
