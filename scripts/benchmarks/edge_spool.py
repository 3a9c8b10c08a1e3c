"""edge-spool: durable appends to the gateway's spool, and its drain after an outage.

Three figures decide whether the spool (edge/spool.py) is fit for a gateway:

- appends: one poll's worth of readings (``--per-add``, 30) per committed transaction,
  as the agent adds them, with ``synchronous=FULL`` (survives power loss, the default)
  and ``NORMAL`` (survives kill -9 only); against a baseline of plain SQLite inserts of
  the same rows (executemany into a plain table, same WAL and synchronous setting,
  same run), so the spool's own cost shows apart from the disk's;
- the outage: ``--devices`` devices (200) polled once a second with ``--readings``
  (10) readings each, for ``--outage-s`` seconds (300) while the broker is away: the
  spool fills as the agent would fill it (one add per poll, FULL);
- the drain: a real Mosquitto comes up, the real Uplink empties the spool into it at
  QoS 1, and a subscriber checks by (device, seq) that every reading arrived
  (``lost``) and how many came twice (``duplicates``). The subscriber plays the cloud:
  it acknowledges each batch (``BatchAck``, as ingest does after its commit), since
  only that deletes a batch from the spool; the drain ends when the spool is empty.
  The goal is at least 50,000 readings/s, which needs many readings per message.
"""

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt

from anju.services.mosquitto import MosquittoServer
from benchmarks import Result
from edge.spool import Spool, Synchronous
from edge.uplink import Uplink
from schemas.broker import parse_broker_url
from schemas.topics import Channel, topic_for
from schemas.vocabulary import Metric
from schemas.wire import (
    AckedBatch,
    AckOutcome,
    BatchAck,
    Reading,
    TelemetryBatch,
    decode,
    encode,
    read_batch_header,
)

NAME = "edge-spool"
GATEWAY, COMMUNITY = "gw-bench", "bench/spool"
_METRICS = list(Metric)
_START = datetime(2026, 11, 28, tzinfo=UTC)
_DRAIN_LIMIT_S = 120.0


def _progress(message: str) -> None:
    """Progress to stderr, so stdout carries only the result."""
    print(f"[{NAME}] {message}", file=sys.stderr, flush=True)


def _poll(device: int, second: int, per_poll: int, seq: int) -> list[Reading]:
    ts = _START + timedelta(seconds=second)
    return [
        Reading(
            device=f"dev-{device:04d}",
            ts=ts,
            seq=seq + i,
            metric=_METRICS[i % len(_METRICS)],
            value=20.0 + (second % 50) / 10 + i,
        )
        for i in range(per_poll)
    ]


def _spool(path: Path, synchronous: Synchronous, linger_s: float = 0.5) -> Spool:
    return Spool(
        path,
        GATEWAY,
        COMMUNITY,
        budget_bytes=512 * 1024 * 1024,
        linger_s=linger_s,
        synchronous=synchronous,
    )


def _appends(work: Path, synchronous: Synchronous, per_add: int, seconds: float) -> dict[str, Any]:
    """Readings per second through ``Spool.add_readings`` and through plain inserts."""
    polls = [_poll(d % 200, d // 200, per_add, 1 + (d // 200) * per_add) for d in range(2_000)]
    with _spool(work / f"append-{synchronous}.db", synchronous, linger_s=3600) as spool:
        adds, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            spool.add_readings(polls[adds % len(polls)])
            adds += 1
    spool_rate = adds * per_add / elapsed
    rows = [
        [(r.device, r.ts.isoformat(), r.seq, str(r.metric), r.value) for r in poll]
        for poll in polls
    ]
    db = sqlite3.connect(work / f"baseline-{synchronous}.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE readings (device TEXT, ts TEXT, seq INTEGER, metric TEXT, value REAL)")
    inserts, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        db.execute("BEGIN")
        db.executemany("INSERT INTO readings VALUES (?, ?, ?, ?, ?)", rows[inserts % len(rows)])
        db.execute("COMMIT")
        inserts += 1
    db.close()
    baseline_rate = inserts * per_add / elapsed
    _progress(
        f"synchronous={synchronous}: spool {spool_rate:,.0f} readings/s "
        f"({adds / (adds * per_add / spool_rate):,.0f} tx/s), plain inserts {baseline_rate:,.0f}"
    )
    return {
        "append_per_s": round(spool_rate),
        "append_transactions_per_s": round(spool_rate / per_add),
        "baseline_sqlite_insert_per_s": round(baseline_rate),
        "spool_vs_baseline": round(spool_rate / baseline_rate, 3),
    }


def _fill(path: Path, devices: int, per_poll: int, outage_s: int) -> tuple[Spool, int, float]:
    spool = _spool(path, "FULL")
    started = time.perf_counter()
    for second in range(outage_s):
        for device in range(devices):
            spool.add_readings(_poll(device, second, per_poll, 1 + second * per_poll))
    spool.flush()
    return spool, devices * per_poll * outage_s, time.perf_counter() - started


async def _drain(spool: Spool, broker: MosquittoServer, expected: int) -> dict[str, Any]:
    address = parse_broker_url(broker.url)
    payloads: list[bytes] = []
    ready = asyncio.Event()
    batches = spool.depth[Channel.TELEMETRY]
    ack_topic = topic_for(COMMUNITY, GATEWAY, Channel.ACK)

    async def subscribe() -> None:
        async with aiomqtt.Client(
            address.host,
            address.port,
            identifier="bench-spool-sub",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client:
            await client.subscribe(topic_for(COMMUNITY, GATEWAY, Channel.TELEMETRY), qos=1)
            ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                payloads.append(message.payload)
                header = read_batch_header(message.payload)
                assert header is not None
                acked = AckedBatch(
                    spool_epoch=header.spool_epoch,
                    batch_seq=header.batch_seq,
                    outcome=AckOutcome.STORED,
                )
                ack = BatchAck(gateway=GATEWAY, batches=[acked], acked_at=datetime.now(UTC))
                await client.publish(ack_topic, encode(ack), qos=1)
                if len(payloads) >= batches:
                    return

    listener = asyncio.create_task(subscribe(), name="bench-subscriber")
    await asyncio.wait_for(ready.wait(), timeout=10)
    uplink = Uplink(address, spool, agent_version="bench")
    stop = asyncio.Event()
    started = time.perf_counter()
    sending = asyncio.create_task(uplink.run(stop), name="bench-uplink")
    while not spool.empty:
        if time.perf_counter() - started > _DRAIN_LIMIT_S:
            raise TimeoutError(f"spool not drained within {_DRAIN_LIMIT_S} s: {spool.depth}")
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    stop.set()
    await asyncio.wait_for(sending, timeout=30)
    try:
        await asyncio.wait_for(listener, timeout=30)
    except TimeoutError:
        _progress(f"subscriber got {len(payloads)} of {batches} batches")
    seen: Counter[tuple[str, int]] = Counter()
    for payload in payloads:
        seen.update((r.device, r.seq) for r in decode(payload, TelemetryBatch).items)
    return {
        "drain_s": round(elapsed, 3),
        "drain_readings_per_s": round(uplink.published_items / elapsed),
        "drain_batches_per_s": round(uplink.published_batches / elapsed, 1),
        "batches": uplink.published_batches,
        "received_readings": sum(seen.values()),
        "lost": expected - len(seen),
        "duplicates": sum(seen.values()) - len(seen),
    }


def _options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"bench.py {NAME}", description=__doc__.splitlines()[0])
    parser.add_argument("--per-add", type=int, default=30, help="readings per add (one poll)")
    parser.add_argument("--append-s", type=float, default=3.0, help="seconds per append run")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--readings", type=int, default=10, help="readings per device poll")
    parser.add_argument("--outage-s", type=int, default=300, help="simulated outage, 1 poll/s")
    return parser.parse_args(argv)


def run(argv: list[str]) -> Result:
    """Measure appends (both fsync policies), fill an outage, drain it into Mosquitto."""
    args = _options(argv)
    with tempfile.TemporaryDirectory(prefix="anju-bench-spool-") as tmp:
        work = Path(tmp)
        policies = {
            policy: _appends(work, policy, args.per_add, args.append_s)
            for policy in ("FULL", "NORMAL")
        }
        _progress(
            f"filling a {args.outage_s} s outage of {args.devices} devices "
            f"x {args.readings} readings/s"
        )
        path = work / "outage.db"
        spool, expected, fill_s = _fill(path, args.devices, args.readings, args.outage_s)
        files = sum(p.stat().st_size for p in work.glob("outage.db*"))
        _progress(f"{expected:,} readings spooled in {fill_s:.1f} s, {files / 2**20:.1f} MiB")
        try:
            with MosquittoServer(work / "mosquitto") as broker:
                drain = asyncio.run(_drain(spool, broker, expected))
        finally:
            spool.close()
        _progress(f"drained at {drain['drain_readings_per_s']:,} readings/s, lost {drain['lost']}")
    return {
        "benchmark": NAME,
        "synchronous": "FULL",
        "append_per_s": policies["FULL"]["append_per_s"],
        "baseline_sqlite_insert_per_s": policies["FULL"]["baseline_sqlite_insert_per_s"],
        "drain_readings_per_s": drain["drain_readings_per_s"],
        "drain_batches_per_s": drain["drain_batches_per_s"],
        "lost": drain["lost"],
        "duplicates": drain["duplicates"],
        "readings_per_add": args.per_add,
        "fsync": policies,
        "outage": {
            "devices": args.devices,
            "readings_per_poll": args.readings,
            "seconds": args.outage_s,
            "readings": expected,
            "fill_s": round(fill_s, 2),
            "fill_readings_per_s": round(expected / fill_s),
            "spool_file_bytes": files,
        },
        "drain": drain,
    }
