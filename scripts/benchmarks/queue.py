"""queue: the dispatcher's queue request and the live push of a new incident, under a
full database of open incidents.

Everything is real and shares this machine's cores: a durable PostgreSQL holding
``--incidents`` active incidents (open, claimed, acknowledged or dispatched; every
one with its event, its event link and its log row, spread over the last day) across
``--communities`` communities, Mosquitto, ``anju cloud run`` in its own process (the
API with its incident feed, and the ingest, escalation, webhook and config workers,
idle here), and this process as the dispatcher's console, with a dispatcher key
scoped to one community (about incidents / communities of them in her queue).

Queue: ``--requests`` sequential ``GET /incidents?limit=100`` over one keep-alive
connection, after ``--warmup`` unmeasured ones; each is timed until its whole body
is read. Baseline, interleaved request by request so a noisy machine slows both: the
same ``list_queue`` SQL with the same parameters (the key's scope, limit 101) run
directly over psycopg from this process (``queue_sql_*``).

Push: the console holds ``GET /incidents/live`` open; this process opens
``--pushes`` new incidents in her community one at a time, each with its event in
one transaction through ``cloud.incidents.open_or_join`` as ingest does, and times
from just before the commit to the moment the stream delivers that incident's
``incident`` message; it waits for each before the next. ``lost`` counts those not
delivered within 5 s. Baseline, interleaved likewise: a bare NOTIFY committed on one
connection of the same database until a LISTEN connection of this process hears it
(``notify_*``), the first hop of the push's path.

The goal (issue 18): queue p99 at most 30 ms and push p99 at most 500 ms.
"""

import argparse
import asyncio
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import psycopg

from anju.services.mosquitto import MosquittoServer
from anju.services.postgres import PostgresServer, find_postgres_bin
from benchmarks import Result
from benchmarks.processes import cloud_process, cpu_seconds
from cloud.auth.keys import authenticate, create_key
from cloud.auth.roles import Role
from cloud.incidents import IncidentDraft, Priority, open_or_join
from cloud.registry import register_community, register_gateway
from cloud.storage.migrate import apply_migrations
from cloud.storage.sql import queries

NAME: Final = "queue"
STREET: Final = "bench-queue"
PAGE: Final = 100
LOST_AFTER_S: Final = 5.0
WARMUP_PUSHES: Final = 5
NOTIFY_CHANNEL: Final = "bench_probe"
QUEUE_P99_MAX_MS: Final = 30.0
PUSH_P99_MAX_MS: Final = 500.0

# (incident type, event type, priority, severity), taken in turn by the seeded incidents.
KINDS: Final = (
    ("sos", "wearable.sos", 1, "critical"),
    ("fall", "wearable.fall", 1, "critical"),
    ("heart_rate_abnormal", "wearable.heart_rate_abnormal", 2, "warning"),
    ("door_forced_open", "door.forced_open", 2, "warning"),
    ("inactivity", "wearable.inactivity", 3, "warning"),
)

# Seeded incident n (1..N) is in community n % C, of kind (n / C) % 5, opened n * 86400 / N
# seconds ago; of every 20 in a community, 14 are open, 3 claimed, 2 acknowledged and
# 1 dispatched. Each has its own device, so "one active incident per (device, type)"
# holds as it does for incidents rules open.
SEED_EVENTS: Final = """
INSERT INTO events (ts, received_at, device_id, gateway_id, seq, type, severity)
SELECT now() - make_interval(secs => n * 86400.0 / %(n)s) - interval '200 ms',
       now() - make_interval(secs => n * 86400.0 / %(n)s) - interval '100 ms',
       format('bench-dev-%%s', n), format('bench-gw-%%s', n %% %(c)s), 1,
       (%(event_types)s::text[])[1 + (n / %(c)s) %% 5],
       (%(severities)s::text[])[1 + (n / %(c)s) %% 5]
FROM generate_series(1, %(n)s) AS n
"""
SEED_INCIDENTS: Final = """
INSERT INTO incidents (
    type, priority, status, community_id, building, unit, device_id, opened_at, updated_at,
    event_count, first_event_id, last_event_at, claimed_by, claimed_at, acknowledged_at,
    dispatched_to, dispatched_at
)
SELECT (%(types)s::text[])[1 + k], (%(priorities)s::smallint[])[1 + k],
       CASE WHEN s < 14 THEN 'open' WHEN s < 17 THEN 'claimed'
            WHEN s < 19 THEN 'acknowledged' ELSE 'dispatched' END,
       (%(communities)s::bigint[])[1 + n %% %(c)s],
       (1 + n %% 12)::text, (101 + n %% 30)::text, e.device_id, e.ts + interval '200 ms',
       e.ts + interval '200 ms', 1, e.id, e.ts,
       CASE WHEN s >= 14 THEN 'bench-dispatcher' END,
       CASE WHEN s >= 14 THEN e.ts + interval '30 s' END,
       CASE WHEN s >= 17 THEN e.ts + interval '60 s' END,
       CASE WHEN s >= 19 THEN 'ambulance' END,
       CASE WHEN s >= 19 THEN e.ts + interval '90 s' END
FROM (
    SELECT e.*, split_part(e.device_id, '-', 3)::int AS n
    FROM events e WHERE e.device_id LIKE 'bench-dev-%%'
) e
CROSS JOIN LATERAL (SELECT (e.n / %(c)s) %% 5 AS k, (e.n / %(c)s / 5) %% 20 AS s) AS pick
"""
SEED_LINKS: Final = """
INSERT INTO incident_events (incident_id, event_id, joined_at)
SELECT id, first_event_id, opened_at FROM incidents
"""
SEED_LOG: Final = """
INSERT INTO incident_log (incident_id, at, from_status, to_status, actor, note)
SELECT id, opened_at, NULL, 'open', 'system', type || ' from device ' || device_id
FROM incidents
"""


def _progress(message: str) -> None:
    print(f"[{NAME}] {message}", file=sys.stderr, flush=True)


def _community(index: int) -> str:
    return f"{STREET}/c-{index:02d}"


@dataclass(frozen=True, slots=True)
class Seeded:
    token: str
    community_id: int
    scope: list[int] | None
    in_queue: int


async def _seed(url: str, incidents: int, communities: int) -> Seeded:
    """Register the communities, insert the incidents in bulk, make the dispatcher's key."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        ids = []
        for index in range(communities):
            node = await register_community(conn, _community(index))
            await register_gateway(conn, f"bench-gw-{index}", _community(index))
            ids.append(node.id)
        params = {
            "n": incidents,
            "c": communities,
            "communities": ids,
            "types": [kind[0] for kind in KINDS],
            "event_types": [kind[1] for kind in KINDS],
            "priorities": [kind[2] for kind in KINDS],
            "severities": [kind[3] for kind in KINDS],
        }
        async with conn.transaction():
            for statement in (SEED_EVENTS, SEED_INCIDENTS, SEED_LINKS, SEED_LOG):
                await conn.execute(statement, params)
        await conn.execute("VACUUM ANALYZE")
        key = await create_key(conn, name="bench-dispatcher", role=Role.DISPATCHER, scope_id=ids[0])
        principal = await authenticate(conn, key.token)
        cur = await conn.execute(
            "SELECT count(*) FROM incidents "
            "WHERE community_id = %s AND status NOT IN ('resolved', 'false_alarm')",
            [ids[0]],
        )
        row = await cur.fetchone()
    return Seeded(key.token, ids[0], principal.scope, int(row[0]) if row else 0)


def _queue_params(scope: list[int] | None) -> dict[str, object]:
    """``list_queue``'s parameters as ``GET /incidents?limit=100`` passes them."""
    names = ("status", "priority", "type", "device", "claimed_by", "opened_from", "opened_to")
    after = ("after_priority", "after_opened", "after_id")
    return {"scope": scope, **dict.fromkeys(names + after), "limit": PAGE + 1}


@dataclass(slots=True)
class QueueTimes:
    api_ms: list[float] = field(default_factory=list)
    sql_ms: list[float] = field(default_factory=list)
    api_cpu_s: float = 0.0


async def _queue(
    api: str, db_url: str, seeded: Seeded, requests: int, warmup: int, api_pid: int
) -> QueueTimes:
    """Time the queue request and, interleaved, the bare query (ms each)."""
    times = QueueTimes()
    sql = queries()["list_queue"]
    params = _queue_params(seeded.scope)
    headers = {"Authorization": f"Bearer {seeded.token}"}
    async with (
        httpx.AsyncClient(base_url=api, timeout=10, headers=headers) as http,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
    ):
        cpu_before = 0.0
        for index in range(warmup + requests):
            if index == warmup:
                cpu_before = cpu_seconds(api_pid)
            started = time.perf_counter()
            response = await http.get("/incidents", params={"limit": PAGE})
            api_s = time.perf_counter() - started
            response.raise_for_status()
            started = time.perf_counter()
            cur = await conn.execute(sql, params)
            rows = await cur.fetchall()
            sql_s = time.perf_counter() - started
            if index == 0:
                items = len(response.json()["items"])
                if items != min(PAGE, seeded.in_queue) or len(rows) != min(
                    PAGE + 1, seeded.in_queue
                ):
                    raise RuntimeError(f"queue page of {items} items, query {len(rows)} rows")
            if index >= warmup:
                times.api_ms.append(api_s * 1000)
                times.sql_ms.append(sql_s * 1000)
        times.api_cpu_s = cpu_seconds(api_pid) - cpu_before
    return times


@dataclass(slots=True)
class Stream:
    """What the console's stream delivered: the first arrival of each incident."""

    hello: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: dict[int, asyncio.Future[float]] = field(default_factory=dict)
    messages: int = 0
    resyncs: int = 0

    def deliver(self, event: str, data: str, at: float) -> None:
        if event == "hello":
            self.hello.set()
        elif event == "resync":
            self.resyncs += 1
        elif event == "incident":
            self.messages += 1
            waiter = self.waiting.pop(int(json.loads(data)["id"]), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(at)


async def _read_stream(response: httpx.Response, stream: Stream) -> None:
    """Parse server-sent events as they arrive, stamping each message on arrival."""
    event = "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data or event != "message":
                stream.deliver(event, "\n".join(data), time.perf_counter())
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


@dataclass(slots=True)
class PushTimes:
    push_ms: list[float] = field(default_factory=list)
    notify_ms: list[float] = field(default_factory=list)
    lost: int = 0
    notify_lost: int = 0
    messages: int = 0
    resyncs: int = 0


async def _pushes(api: str, db_url: str, seeded: Seeded, pushes: int) -> PushTimes:
    """Open incidents one at a time and time each to the stream; interleave bare NOTIFYs."""
    times = PushTimes()
    stream = Stream()
    heard: dict[str, asyncio.Future[float]] = {}
    headers = {"Authorization": f"Bearer {seeded.token}"}
    timeout = httpx.Timeout(10, read=None)
    async with (
        httpx.AsyncClient(base_url=api, timeout=timeout, headers=headers) as http,
        http.stream("GET", "/incidents/live", params={"lifetime_s": 300}) as response,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as writer,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener,
    ):
        response.raise_for_status()
        reader = asyncio.create_task(_read_stream(response, stream))
        await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        hearing = asyncio.create_task(_hear(listener, heard))
        try:
            await asyncio.wait_for(stream.hello.wait(), timeout=10)
            # Unmeasured: the first ones also wait for the API's feed to be listening.
            for index in range(WARMUP_PUSHES):
                await _push(writer, seeded, stream, f"bench-warm-{index}", lost_after_s=30)
            for index in range(pushes):
                latency = await _push(writer, seeded, stream, f"bench-push-{index}")
                if latency is None:
                    times.lost += 1
                else:
                    times.push_ms.append(latency * 1000)
                latency = await _notify(writer, heard, f"{index}")
                if latency is None:
                    times.notify_lost += 1
                else:
                    times.notify_ms.append(latency * 1000)
                if (index + 1) % 50 == 0:
                    _progress(f"{index + 1} of {pushes} pushes")
        finally:
            reader.cancel()
            hearing.cancel()
            await asyncio.gather(reader, hearing, return_exceptions=True)
    times.messages, times.resyncs = stream.messages, stream.resyncs
    return times


async def _push(
    conn: psycopg.AsyncConnection[Any],
    seeded: Seeded,
    stream: Stream,
    device: str,
    *,
    lost_after_s: float = LOST_AFTER_S,
) -> float | None:
    """Open one SOS incident, as ingest would; seconds from commit to the stream, or None."""
    arrived: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO events (ts, device_id, gateway_id, seq, type, severity) "
            "VALUES (now(), %s, 'bench-gw-0', 1, 'wearable.sos', 'critical') RETURNING id, ts",
            [device],
        )
        row = await cur.fetchone()
        if row is None:
            raise RuntimeError("no event row returned")
        draft = IncidentDraft(
            type="sos",
            priority=Priority.CRITICAL,
            community_id=seeded.community_id,
            building="3",
            unit="201",
            device_id=device,
            cause="wearable.sos",
        )
        outcome = await open_or_join(conn, draft, event_id=row[0], event_ts=row[1])
        stream.waiting[outcome.incident_id] = arrived
        started = time.perf_counter()
    try:
        return await asyncio.wait_for(arrived, timeout=lost_after_s) - started
    except TimeoutError:
        stream.waiting.pop(outcome.incident_id, None)
        return None


async def _hear(
    listener: psycopg.AsyncConnection[Any], heard: dict[str, asyncio.Future[float]]
) -> None:
    async for notice in listener.notifies():
        waiter = heard.pop(notice.payload, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(time.perf_counter())


async def _notify(
    conn: psycopg.AsyncConnection[Any], heard: dict[str, asyncio.Future[float]], payload: str
) -> float | None:
    """Commit one bare NOTIFY; seconds until this process's LISTEN hears it, or None."""
    arrived: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    heard[payload] = arrived
    async with conn.transaction():
        await conn.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, payload])
        started = time.perf_counter()
    try:
        return await asyncio.wait_for(arrived, timeout=LOST_AFTER_S) - started
    except TimeoutError:
        heard.pop(payload, None)
        return None


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _ms(values: list[float], fraction: float) -> float | None:
    """A percentile for the JSON: None when nothing was measured (JSON has no NaN)."""
    return round(_percentile(values, fraction), 2) if values else None


def _ratio(numerator: float, denominator: float) -> float | None:
    if math.isnan(numerator) or not denominator > 0:
        return None
    return round(numerator / denominator, 2)


def run(argv: list[str]) -> Result:
    parser = argparse.ArgumentParser(prog=f"bench.py {NAME}", description=__doc__)
    parser.add_argument("--incidents", type=int, default=10_000, help="active incidents seeded")
    parser.add_argument("--communities", type=int, default=50, help="communities they are in")
    parser.add_argument("--requests", type=int, default=1000, help="queue requests measured")
    parser.add_argument("--warmup", type=int, default=50, help="queue requests not measured")
    parser.add_argument("--pushes", type=int, default=200, help="new incidents pushed")
    args = parser.parse_args(argv)
    if args.communities < 1 or args.incidents < args.communities:
        parser.error("need at least one community and one incident per community")
    if args.requests < 1 or args.pushes < 1 or args.warmup < 0:
        parser.error("need at least one request and one push")

    load_before = os.getloadavg()[0]
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL server binaries not found; run scripts/test once")
    with (
        tempfile.TemporaryDirectory(prefix="anju-bench-queue-") as tmp,
        PostgresServer(bin_dir=bin_dir) as pg,
        MosquittoServer(Path(tmp) / "mqtt") as broker,
    ):
        apply_migrations(pg.url)
        started = time.monotonic()
        seeded = asyncio.run(_seed(pg.url, args.incidents, args.communities))
        _progress(
            f"{args.incidents:,} incidents in {args.communities} communities seeded in "
            f"{time.monotonic() - started:.1f} s; {seeded.in_queue} in the dispatcher's queue"
        )
        with cloud_process(pg.url, broker.url, Path(tmp) / "cloud.log") as cloud:
            _progress(f"anju cloud run up; {args.warmup} + {args.requests} queue requests")
            queue = asyncio.run(
                _queue(cloud.api, pg.url, seeded, args.requests, args.warmup, cloud.process.pid)
            )
            _progress(
                f"queue p99 {_ms(queue.api_ms, 0.99)} ms (SQL {_ms(queue.sql_ms, 0.99)} ms); "
                f"{args.pushes} pushes"
            )
            push = asyncio.run(_pushes(cloud.api, pg.url, seeded, args.pushes))
    queue_p99 = _percentile(queue.api_ms, 0.99)
    sql_p99 = _percentile(queue.sql_ms, 0.99)
    push_p99 = _percentile(push.push_ms, 0.99)
    notify_p99 = _percentile(push.notify_ms, 0.99)
    _progress(
        f"push p99 {push_p99:.1f} ms (NOTIFY {notify_p99:.1f} ms), lost {push.lost}, "
        f"resyncs {push.resyncs}"
    )
    return {
        "benchmark": NAME,
        "incidents": args.incidents,
        "communities": args.communities,
        "incidents_in_queue": seeded.in_queue,
        "requests": args.requests,
        "page": PAGE,
        "queue_p50_ms": _ms(queue.api_ms, 0.5),
        "queue_p90_ms": _ms(queue.api_ms, 0.9),
        "queue_p99_ms": _ms(queue.api_ms, 0.99),
        "queue_max_ms": _ms(queue.api_ms, 1.0),
        "queue_sql_p50_ms": _ms(queue.sql_ms, 0.5),
        "queue_sql_p99_ms": _ms(queue.sql_ms, 0.99),
        "queue_over_sql_p99": _ratio(queue_p99, sql_p99),
        "queue_over_sql_p50": _ratio(
            _percentile(queue.api_ms, 0.5), _percentile(queue.sql_ms, 0.5)
        ),
        "api_cpu_ms_per_request": round(queue.api_cpu_s * 1000 / args.requests, 2),
        "pushes": args.pushes,
        "push_p50_ms": _ms(push.push_ms, 0.5),
        "push_p90_ms": _ms(push.push_ms, 0.9),
        "push_p99_ms": _ms(push.push_ms, 0.99),
        "push_max_ms": _ms(push.push_ms, 1.0),
        "lost": push.lost,
        "resyncs": push.resyncs,
        "stream_incident_messages": push.messages,
        "notify_p50_ms": _ms(push.notify_ms, 0.5),
        "notify_p99_ms": _ms(push.notify_ms, 0.99),
        "notify_lost": push.notify_lost,
        "push_over_notify_p99": _ratio(push_p99, notify_p99),
        "push_over_notify_p50": _ratio(
            _percentile(push.push_ms, 0.5), _percentile(push.notify_ms, 0.5)
        ),
        "targets": {
            "queue_p99_ms_max": QUEUE_P99_MAX_MS,
            "push_p99_ms_max": PUSH_P99_MAX_MS,
            "met": queue_p99 <= QUEUE_P99_MAX_MS and push_p99 <= PUSH_P99_MAX_MS and push.lost == 0,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_1m_before": round(load_before, 2),
        },
    }
