"""ingest: readings and messages per second from gateways' MQTT messages to committed rows.

Everything is real and shares this machine's cores: a Mosquitto broker, a durable
PostgreSQL server (fsync on), ``anju cloud ingest --processes P --workers W``, and a
publisher process playing ``--gateways`` gateways, each sealing batches of ``--batch``
readings (one poll of its 200 devices x 5 metrics) as the edge does.

The gateways are not on the cloud's cores in a real deployment, so the publisher does
not run while the clock does: ingest subscribes, is paused (SIGSTOP), every message is
published and held by the broker, and the clock runs from SIGCONT until
``ingested_batches`` accounts for every reading: the rate at which ingest drains a
backlog, as after an outage.

Baselines measured in the same run. The database's own limit for these rows: one
binary COPY of all of them from one connection into the same table (same partitions,
same (device_id, metric, ts) index), in publish order (``raw_copy_rows_per_s``, which
``ratio`` divides by) and, for context, sorted as the index is
(``raw_copy_sorted_rows_per_s``). And the MQTT client library's limit for these
messages: a bare aiomqtt client (QoS 1, one process, MQTT v5 unless ``--mqtt-version``
says otherwise) paused and resumed the same way, draining the same messages from the
same broker (``client_receive_msgs_per_s``, which ``msgs_ratio`` divides by); and since
ingest reads PUBLISH packets itself rather than through aiomqtt, the same bare client
reading with ingest's reader (``client_direct_receive_msgs_per_s``, which
``direct_msgs_ratio`` divides by: the cost of ingest's own work past receiving).
Afterwards every reading is checked by (device, seq): ``missing`` should be 0 and
``duplicates`` 0. The CPU of ingest (all its processes) and of the database server's
processes is reported in cores over the clocked time, the broker's CPU per message taken
in and handed out (``broker_cpu_us_per_msg``), and the readings table's size on disk
(heap, indexes, TOAST, every partition) per stored reading.

Goals: at least 300,000 readings/s and 0.3x the raw COPY at the default 1,000 readings
per message; at ``--batch 10``, messages/s at least 0.7x the bare client's (issue 19).
"""

import argparse
import asyncio
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg

from anju.services.mosquitto import MosquittoServer
from anju.services.postgres import PostgresServer, find_postgres_bin
from benchmarks import Result
from benchmarks.processes import (
    anju_process,
    busy_cpu_seconds,
    cpu_seconds,
    process_tree,
    wait_subscribed,
)
from cloud.ingest.consumer import PahoDirect
from cloud.registry import register_community, register_device, register_gateway
from cloud.storage.migrate import apply_migrations
from schemas.broker import parse_broker_url
from schemas.topics import Channel, subscription, topic_for
from schemas.vocabulary import DeviceKind, Metric
from schemas.wire import Reading, TelemetryBatch, encode

NAME = "ingest"
COMMUNITY = "bench/ingest"
DEVICES_PER_GATEWAY = 200
METRICS = (Metric.TEMPERATURE, Metric.CO, Metric.BATTERY, Metric.HEART_RATE, Metric.STEPS)
# An hour ago: ingest stores an item dated outside its clock window (IngestSettings
# clock_past_s, clock_future_s) at its receipt time, which is not what is measured.
_START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
_STALL_S = 30.0
_POLL_S = 0.02
_IN_FLIGHT = 32
_RAW_COPY = (
    "COPY readings (ts, device_id, metric, value, gateway_id, seq) FROM STDIN (FORMAT BINARY)"
)
_RAW_TYPES = ["timestamptz", "text", "text", "float8", "text", "int8"]


def _progress(message: str) -> None:
    """Progress to stderr, so stdout carries only the result."""
    print(f"[{NAME}] {message}", file=sys.stderr, flush=True)


def _gateway(index: int) -> str:
    return f"gw-{index:03d}"


def _device(gateway: int, device: int) -> str:
    return f"gw-{gateway:03d}-dev-{device:03d}"


def _polls(gateway: int, batch: int, count: int) -> Iterator[list[Reading]]:
    """``count`` batches of ``batch`` readings from one gateway, one poll per second."""
    per_poll = DEVICES_PER_GATEWAY * len(METRICS)
    readings: list[Reading] = []
    tick = 0
    while count:
        ts = _START + timedelta(seconds=tick)
        for device in range(DEVICES_PER_GATEWAY):
            for m, metric in enumerate(METRICS):
                readings.append(
                    Reading(
                        device=_device(gateway, device),
                        ts=ts,
                        seq=tick * len(METRICS) + m,
                        metric=metric,
                        value=20.0 + (tick % 50) / 10 + m,
                    )
                )
        tick += 1
        while len(readings) >= batch and count:
            yield readings[:batch]
            del readings[:batch]
            count -= 1
        if tick * per_poll > 10**9:
            raise RuntimeError("runaway generator")


def _messages(gateways: int, batch: int, total: int) -> list[tuple[str, bytes]]:
    """Every message of the run, interleaved across gateways as they would arrive."""
    per_gateway = total // batch // gateways
    streams = [
        [
            (
                topic_for(COMMUNITY, _gateway(g), Channel.TELEMETRY),
                encode(
                    TelemetryBatch(
                        gateway=_gateway(g),
                        community=COMMUNITY,
                        spool_epoch=f"{g:016x}",
                        batch_seq=seq,
                        sent_at=_START,
                        items=items,
                    )
                ),
            )
            for seq, items in enumerate(_polls(g, batch, per_gateway), start=1)
        ]
        for g in range(gateways)
    ]
    return [stream[i] for i in range(per_gateway) for stream in streams]


def _rows(messages: list[tuple[str, bytes]]) -> list[tuple[Any, ...]]:
    from schemas.wire import decode

    rows: list[tuple[Any, ...]] = []
    for _, payload in messages:
        batch = decode(payload, TelemetryBatch)
        rows.extend(
            (r.ts, r.device, r.metric.value, r.value, batch.gateway, r.seq) for r in batch.items
        )
    return rows


def _publisher(url: str, gateways: int, batch: int, total: int, pipe: Connection) -> None:
    """Child process: build the messages, say ready, then publish all of them at each
    'go' (once for the bare client, once for ingest), reporting the time each took,
    until 'stop'."""
    messages = _messages(gateways, batch, total)
    pipe.send("ready")
    while pipe.recv() == "go":
        started = time.perf_counter()
        asyncio.run(_publish(url, messages))
        pipe.send(time.perf_counter() - started)


def _receiver(url: str, expected: int, direct: bool, pipe: Connection) -> None:
    """Child process: a bare client (QoS 1, as ingest subscribes) that counts the
    telemetry messages arriving and reports when it had ``expected``: aiomqtt's, or with
    ``direct`` the same connection read by ingest's ``PahoDirect``, acknowledging each
    message as it comes."""
    asyncio.run(_receive(url, expected, direct, pipe))


async def _receive(url: str, expected: int, direct: bool, pipe: Connection) -> None:
    broker = parse_broker_url(url)
    v5 = broker.version == "5"
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        identifier="bench-direct-client" if direct else "bench-bare-client",
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
    )
    arrived = asyncio.Event()
    paho = PahoDirect(client, v5=v5, wake=arrived.set) if direct else None
    async with client:
        await client.subscribe(subscription(Channel.TELEMETRY), qos=1)
        pipe.send("ready")
        received = 0
        if paho is None:
            async for _ in client.messages:
                received += 1
                if received == expected:
                    break
        else:
            paho.connected()
            while received < expected:
                await arrived.wait()
                arrived.clear()
                if (lost := paho.lost()) is not None:
                    raise lost
                while paho.inbox:
                    paho.ack(paho.inbox.popleft())
                    received += 1
        pipe.send(time.perf_counter())


async def _publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    broker = parse_broker_url(url)
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier="bench-gateways",
        protocol=aiomqtt.ProtocolVersion.V5,
        max_inflight_messages=_IN_FLIGHT,
    ) as client:
        client.pending_calls_threshold = _IN_FLIGHT * 2
        slots = asyncio.Semaphore(_IN_FLIGHT)

        async def one(topic: str, payload: bytes) -> None:
            try:
                await client.publish(topic, payload, qos=1, timeout=60)
            finally:
                slots.release()

        async with asyncio.TaskGroup() as group:
            for topic, payload in messages:
                await slots.acquire()
                group.create_task(one(topic, payload))


async def _register(url: str, gateways: int) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await register_community(conn, COMMUNITY)
        for g in range(gateways):
            await register_gateway(conn, _gateway(g), COMMUNITY)
            async with conn.transaction():
                for d in range(DEVICES_PER_GATEWAY):
                    await register_device(
                        conn,
                        _device(g, d),
                        gateway_id=_gateway(g),
                        kind=DeviceKind.WEARABLE,
                        profile_id="anju-wearable-ble",
                    )


def _raw_copy(url: str, rows: list[tuple[Any, ...]]) -> float:
    """Rows/s of one binary COPY of ``rows`` into the empty readings table."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings")
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur, cur.copy(_RAW_COPY) as copy:
            copy.set_types(_RAW_TYPES)
            for row in rows:
                copy.write_row(row)
        elapsed = time.perf_counter() - started
        conn.execute("TRUNCATE readings")
        conn.execute("CHECKPOINT")
    return len(rows) / elapsed


def _ingested(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(sum(item_count), 0) FROM ingested_batches").fetchone()
    return int(row[0]) if row else 0


def _client_receive_rate(
    context: Any, url: str, expected: int, publisher: Connection, *, direct: bool
) -> tuple[float, float]:
    """Messages/s a bare client (``_receiver``) drained of one round of the publisher's
    messages queued for it while it was paused, and how long the publisher took."""
    ours, theirs = context.Pipe()
    receiver = context.Process(target=_receiver, args=(url, expected, direct, theirs))
    receiver.start()
    try:
        if ours.recv() != "ready":
            raise RuntimeError("bare client failed to start")
        assert receiver.pid is not None
        publish_s = _publish_paused(publisher, [receiver.pid])
        started = time.perf_counter()
        _signal([receiver.pid], signal.SIGCONT)
        if not ours.poll(_STALL_S):
            raise RuntimeError(f"the bare client did not receive all {expected:,} messages")
        finished = float(ours.recv())
    finally:
        receiver.join(timeout=30)
        if receiver.is_alive():
            receiver.terminate()
    return expected / (finished - started), publish_s


def _publish_paused(publisher: Connection, consumers: list[int]) -> float:
    """Pause ``consumers`` (SIGSTOP), have the publisher send one round, and return its
    time; the broker holds the messages (``max_queued_messages``) until SIGCONT."""
    _signal(consumers, signal.SIGSTOP)
    publisher.send("go")
    return float(publisher.recv())


def _signal(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        os.kill(pid, signum)


def run(argv: list[str]) -> Result:
    parser = argparse.ArgumentParser(prog=f"bench.py {NAME}", description=__doc__)
    parser.add_argument("--readings", type=int, default=2_000_000, help="readings published")
    parser.add_argument("--gateways", type=int, default=40, help="gateways publishing")
    parser.add_argument("--batch", type=int, default=1000, help="readings per message")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="ingest processes (anju cloud ingest --processes N)",
    )
    parser.add_argument("--workers", type=int, default=2, help="ingest workers in each process")
    parser.add_argument(
        "--mqtt-version",
        choices=["5", "3.1.1"],
        default="5",
        help="what the bare client and ingest speak to the broker (3.1.1 has no shared "
        "subscription in ingest: use it with --workers 1 --processes 1)",
    )
    args = parser.parse_args(argv)
    per_message = args.batch * args.gateways
    total = args.readings // per_message * per_message
    if total == 0:
        parser.error("--readings must be at least --batch x --gateways")
    messages_total = total // args.batch

    if find_postgres_bin() is None:
        raise SystemExit("PostgreSQL server binaries not found; run scripts/test once")
    with (
        tempfile.TemporaryDirectory(prefix="anju-bench-ingest-") as tmp,
        PostgresServer(bin_dir=find_postgres_bin()) as pg,
        MosquittoServer(Path(tmp) / "mqtt") as broker,
    ):
        apply_migrations(pg.url)
        asyncio.run(_register(pg.url, args.gateways))
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("SELECT readings_ensure_partitions(%s, 2)", (_START,))
        _progress(f"{args.gateways} gateways x {DEVICES_PER_GATEWAY} devices registered")

        messages = _messages(args.gateways, args.batch, total)
        rows = _rows(messages)
        del messages
        raw = _raw_copy(pg.url, rows)
        rows.sort(key=lambda r: (r[1], r[2], r[0]))
        raw_sorted = _raw_copy(pg.url, rows)
        del rows
        _progress(f"raw binary COPY: {raw:,.0f} rows/s (sorted as the index: {raw_sorted:,.0f})")

        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        publisher = context.Process(
            target=_publisher, args=(broker.url, args.gateways, args.batch, total, theirs)
        )
        publisher.start()
        log_path = Path(tmp) / "ingest.log"
        mqtt_url = f"{broker.url}?version={args.mqtt_version}"
        env = {
            **os.environ,
            "ANJU_DATABASE_URL": pg.url,
            "ANJU_MQTT_URL": mqtt_url,
            "COLUMNS": "1000",  # log lines unwrapped: readiness is read from them
        }
        try:
            if ours.recv() != "ready":
                raise RuntimeError("publisher failed to start")
            client_rate, client_publish_s = _client_receive_rate(
                context, mqtt_url, messages_total, ours, direct=False
            )
            _progress(
                f"bare client: {client_rate:,.0f} messages/s received "
                f"(publisher done after {client_publish_s:.2f} s)"
            )
            direct_rate, _ = _client_receive_rate(
                context, mqtt_url, messages_total, ours, direct=True
            )
            _progress(f"bare client with ingest's reader: {direct_rate:,.0f} messages/s received")
            command = ["cloud", "ingest", "--workers", str(args.workers)]
            if args.processes > 1:
                command += ["--processes", str(args.processes)]
            stored = 0
            # Its stop outlasts a group's 30 s write timeout.
            with anju_process(command, env, log_path, stop_timeout_s=40) as ingest:
                wait_subscribed(ingest, log_path, args.workers * args.processes)
                consumers = process_tree(ingest.pid)
                assert broker.pid is not None
                broker_before = cpu_seconds(broker.pid)
                publish_s = _publish_paused(ours, consumers)
                _progress(
                    f"{total:,} readings in {messages_total:,} messages queued in "
                    f"{publish_s:.2f} s; resuming ingest"
                )
                with psycopg.connect(pg.url, autocommit=True) as conn:
                    busy_before = busy_cpu_seconds()
                    ingest_before = sum(map(cpu_seconds, consumers))
                    assert pg.pid is not None
                    database = process_tree(pg.pid)
                    database_before = sum(map(cpu_seconds, database))
                    started = time.perf_counter()
                    _signal(consumers, signal.SIGCONT)
                    stored, progressed = 0, started
                    while (now := time.perf_counter()) - progressed < _STALL_S:
                        if (count := _ingested(conn)) > stored:
                            stored, progressed = count, now
                        if stored >= total:
                            break
                        time.sleep(_POLL_S)
                    elapsed = time.perf_counter() - started
                    busy = busy_cpu_seconds() - busy_before
                    ingest_cpu = sum(map(cpu_seconds, consumers)) - ingest_before
                    database_cpu = sum(map(cpu_seconds, database)) - database_before
                    broker_cpu = cpu_seconds(broker.pid) - broker_before
                    row = conn.execute(
                        "SELECT count(*), count(DISTINCT (device_id, seq)) FROM readings"
                    ).fetchone()
                    count, distinct = (int(row[0]), int(row[1])) if row else (0, 0)
                    size = conn.execute(
                        "SELECT sum(pg_total_relation_size(relid)) "
                        "FROM pg_partition_tree('readings')"
                    ).fetchone()
                    stored_bytes = int(size[0]) if size and size[0] is not None else 0
            if stored < total:
                tail = log_path.read_text().splitlines()[-40:]
                _progress(f"stalled at {stored:,} of {total:,} readings; ingest's log ends:")
                print("\n".join(tail), file=sys.stderr)
        finally:
            ours.send("stop")
            publisher.join(timeout=30)
    rate = total / elapsed
    msgs_rate = messages_total / elapsed
    _progress(
        f"end to end: {rate:,.0f} readings/s ({rate / raw:.2f}x raw COPY), "
        f"{msgs_rate:,.0f} messages/s ({msgs_rate / client_rate:.2f}x the bare client, "
        f"{msgs_rate / direct_rate:.2f}x with ingest's reader)"
    )
    return {
        "benchmark": NAME,
        "readings": total,
        "messages": messages_total,
        "readings_per_message": args.batch,
        "gateways": args.gateways,
        "devices": args.gateways * DEVICES_PER_GATEWAY,
        "mqtt_version": args.mqtt_version,
        "processes": args.processes,
        "workers": args.workers,
        "elapsed_s": round(elapsed, 3),
        "publish_s": round(publish_s, 3),
        "readings_per_s": round(rate),
        "msgs_per_s": round(msgs_rate),
        "client_receive_msgs_per_s": round(client_rate),
        "client_publish_s": round(client_publish_s, 3),
        "msgs_ratio": round(msgs_rate / client_rate, 3),
        "client_direct_receive_msgs_per_s": round(direct_rate),
        "direct_msgs_ratio": round(msgs_rate / direct_rate, 3),
        "machine_busy_cores": round(busy / elapsed, 2),
        "ingest_process_cores": round(ingest_cpu / elapsed, 2),
        "database_cores": round(database_cpu / elapsed, 2),
        "broker_cpu_us_per_msg": round(broker_cpu / messages_total * 1e6, 1),
        "bytes_per_reading": round(stored_bytes / count, 1) if count else None,
        "raw_copy_rows_per_s": round(raw),
        "raw_copy_sorted_rows_per_s": round(raw_sorted),
        "ratio": round(rate / raw, 3),
        "duplicates": count - distinct,
        "missing": total - distinct,
        "target_readings_per_s": 300_000,
        "target_ratio": 0.3,
        "target_msgs_ratio": 0.7,
        "met": rate >= 300_000 and rate / raw >= 0.3 and count == distinct == total,
    }
