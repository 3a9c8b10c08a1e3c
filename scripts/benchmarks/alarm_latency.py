"""alarm-latency: SOS presses from a gateway to a dispatcher's screen, under telemetry load.

Everything is real and shares this machine's two cores: Mosquitto, a durable PostgreSQL,
the cloud as a site larger than one box runs it (``anju cloud ingest --workers 2`` and
``anju cloud api`` as two processes; ``--one-process`` runs ``anju cloud run`` instead),
a publisher process sending ``--background`` readings/s of telemetry from 20 gateways,
this process, which publishes ``--alarms`` SOS events (each its own event batch, from
its own wearable, as a gateway sends an alarm the moment it is read), and a watcher
process following the queue as the dispatcher console does: ``GET /incidents/live``
held open, reloading ``GET /incidents`` when told to resync. An alarm's latency runs
from the start of its publish to the arrival of its incident on that stream (the
watcher does nothing else, so its clock reads arrivals, not its own backlog). Each
incident is then claimed and resolved through the API from this process, as a
dispatcher would, so the queue stays short; the stream and the actions present a
dispatcher's API key over the community, so the key check and its scope are part of
what is timed. ``lost`` counts alarms never seen within 30 s.

The run has three phases on the same cloud, each with its own ``--alarms``:
``--background`` readings/s (20,000 by default), then ``--light-background`` (1,000),
then ``--heavy-background`` (100,000). The goal (issue 16): p99 at most 30 ms and
nothing lost at 20,000 readings/s. The light phase is the run's baseline, reported as
``baseline_*`` with ``p99_ratio_to_baseline``: the same alarms through the same
processes with little telemetry beside them, so a run on a busy or slow host shows how
much of its p99 the host itself accounts for. It comes second so that the first
phase's cold start stays where earlier runs had it. The heavy phase is reported as
``*_at_100k`` to show where the machine's two cores give out. Beside each p99,
``p99_ms_after_first_second`` leaves out the alarms published in the phase's first
second: the first alarms through a cloud that has carried none yet are often the
slowest of a run (docs/decisions.md), and this shows how much of a p99 they make.
It is reported next to ``p99_ms``, never in its place: the goal is judged on ``p99_ms``.
"""

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import psycopg

from anju.services.mosquitto import MosquittoServer
from anju.services.postgres import PostgresServer, find_postgres_bin
from benchmarks import Result
from benchmarks.processes import cloud_process, split_cloud
from cloud.auth.keys import create_key
from cloud.auth.roles import Role
from cloud.registry import register_community, register_device, register_gateway
from cloud.storage.migrate import apply_migrations
from schemas.broker import parse_broker_url
from schemas.topics import Channel, topic_for
from schemas.vocabulary import DeviceKind, EventType, Metric, Severity
from schemas.wire import Event, EventBatch, Reading, TelemetryBatch, encode

NAME = "alarm-latency"
COMMUNITY = "bench/alarms"
ALARM_GATEWAY = "gw-alarms"
BACKGROUND_GATEWAYS = 20
DEVICES_PER_GATEWAY = 200
READINGS_PER_MESSAGE = 200
SETTLE_S = 30.0
TARGET_P99_MS = 30.0


def _progress(message: str) -> None:
    print(f"[{NAME}] {message}", file=sys.stderr, flush=True)


def _wearable(index: int) -> str:
    return f"{ALARM_GATEWAY}-wear-{index:04d}"


async def _register(url: str, alarms: int) -> str:
    """Register the community and its devices; return a dispatcher's key over it."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        community = await register_community(conn, COMMUNITY)
        await register_gateway(conn, ALARM_GATEWAY, COMMUNITY)
        async with conn.transaction():
            for index in range(alarms):
                await register_device(
                    conn,
                    _wearable(index),
                    gateway_id=ALARM_GATEWAY,
                    kind=DeviceKind.WEARABLE,
                    profile_id="anju-wearable-ble",
                    building=str(1 + index % 8),
                    unit=f"{100 + index % 30}",
                )
        for g in range(BACKGROUND_GATEWAYS):
            await register_gateway(conn, f"gw-bg-{g:02d}", COMMUNITY)
            async with conn.transaction():
                for d in range(DEVICES_PER_GATEWAY):
                    await register_device(
                        conn,
                        f"gw-bg-{g:02d}-dev-{d:03d}",
                        gateway_id=f"gw-bg-{g:02d}",
                        kind=DeviceKind.SMOKE,
                        profile_id="anju-smoke-mb",
                    )
        key = await create_key(
            conn, name="bench-dispatcher", role=Role.DISPATCHER, scope_id=community.id
        )
    return key.token


def _background(url: str, rate: int, pipe: Connection) -> None:
    """Child process: publish ``rate`` readings/s until told to stop; report the count."""
    asyncio.run(_publish_background(url, rate, pipe))


async def _publish_background(url: str, rate: int, pipe: Connection) -> None:
    broker = parse_broker_url(url)
    per_second = max(1, rate // READINGS_PER_MESSAGE)
    seqs = [0] * BACKGROUND_GATEWAYS
    sent = 0
    async with aiomqtt.Client(
        broker.host, broker.port, identifier="bench-background", protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        client.pending_calls_threshold = 1000
        pipe.send("ready")
        started = time.monotonic()
        tick = 0
        while not pipe.poll():
            now = datetime.now(UTC)
            for m in range(per_second):
                g = (tick * per_second + m) % BACKGROUND_GATEWAYS
                seqs[g] += 1
                batch = TelemetryBatch(
                    gateway=f"gw-bg-{g:02d}",
                    community=COMMUNITY,
                    spool_epoch=f"{g:016x}",
                    batch_seq=seqs[g],
                    sent_at=now,
                    items=[
                        Reading(
                            device=f"gw-bg-{g:02d}-dev-{i % DEVICES_PER_GATEWAY:03d}",
                            ts=now + timedelta(microseconds=i),
                            seq=seqs[g] * READINGS_PER_MESSAGE + i,
                            metric=Metric.SMOKE_OBSCURATION,
                            value=0.1,
                        )
                        for i in range(READINGS_PER_MESSAGE)
                    ],
                )
                topic = topic_for(COMMUNITY, batch.gateway, Channel.TELEMETRY)
                await client.publish(topic, encode(batch), qos=1, timeout=30)
                sent += READINGS_PER_MESSAGE
                # Spread the second's messages evenly instead of in one burst.
                target = started + tick + (m + 1) / per_second
                await asyncio.sleep(max(0.0, target - time.monotonic()))
            tick += 1
        elapsed = time.monotonic() - started
    pipe.send((sent, elapsed))


def _watch(api: str, key: str, devices: list[str], pipe: Connection) -> None:
    """Child process: follow the live feed as the console does, and send ``(device,
    incident id, time seen)`` for the first incident of each of ``devices``.

    A process of its own, doing nothing else, so the time an incident is seen is when
    it arrived, not when a busy loop got round to it: in the publishing process, whose
    loop also sends the dispatcher's claims and resolves, that lag was 3.5 ms at p99.
    """
    asyncio.run(_follow(api, key, set(devices), pipe))


async def _follow(api: str, key: str, devices: set[str], pipe: Connection) -> None:
    seen: set[str] = set()

    def note(incident: dict[str, Any], now: float) -> None:
        device = incident.get("device_id")
        if device in devices and device not in seen:
            seen.add(device)
            pipe.send((device, incident["id"], now))

    async with (
        httpx.AsyncClient(
            base_url=api, timeout=10, headers={"Authorization": f"Bearer {key}"}
        ) as http,
        http.stream("GET", "/incidents/live", timeout=None) as response,
    ):
        response.raise_for_status()
        event = ""
        listening = False
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
                if not listening:
                    listening = True
                    pipe.send("listening")
            if not line.startswith("data: "):
                continue
            if event == "incident":
                note(json.loads(line.removeprefix("data: ")), time.time())
            elif event == "resync":  # changes may have been missed: reload, as the console
                queue = await http.get("/incidents", params={"limit": 500})
                queue.raise_for_status()
                now = time.time()
                for incident in queue.json()["items"]:
                    note(incident, now)
            if len(seen) == len(devices):
                return


def _start_watcher(api: str, key: str, devices: list[str]) -> tuple[BaseProcess, Connection]:
    """Start the live feed's watcher (``_watch``) for ``devices``; return it and its pipe
    once its stream is open.

    Called before the background telemetry settles: the watcher's start-up (a Python
    process importing its client stack) takes a whole core for about half a second
    (sampled from /proc), which was the half second before the first alarm when the
    watcher started with the alarms.
    """
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    watcher = context.Process(target=_watch, args=(api, key, devices, theirs), daemon=True)
    watcher.start()
    theirs.close()  # the watcher's end is its own: its exit then reads as the end here
    try:
        first_word = ours.recv() if ours.poll(20) else None
    except EOFError:
        first_word = None
    if first_word != "listening":
        watcher.join(timeout=5)
        watcher.kill()
        raise RuntimeError(
            f"the live feed watcher opened no stream within 20 s (exit status "
            f"{watcher.exitcode}; its error, if any, is above)"
        )
    return watcher, ours


async def _alarms(
    mqtt_url: str,
    api: str,
    key: str,
    devices: list[str],
    first: int,
    per_s: float,
    watcher: tuple[BaseProcess, Connection],
) -> tuple[list[float], list[float], int]:
    """Publish an SOS alarm from each of ``devices`` (wearables ``first`` on); return
    their latencies (ms), those of the alarms published after the first second, and how
    many were lost. The ``watcher`` (``_start_watcher``) tells when each incident
    reaches the live feed; this process then claims and resolves it."""
    broker = parse_broker_url(mqtt_url)
    process, ours = watcher
    count = len(devices)
    published: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = asyncio.Event()
    handling: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async with (
        httpx.AsyncClient(
            base_url=api, timeout=10, headers={"Authorization": f"Bearer {key}"}
        ) as http,
        aiomqtt.Client(
            broker.host, broker.port, identifier=ALARM_GATEWAY, protocol=aiomqtt.ProtocolVersion.V5
        ) as client,
    ):

        def arrived() -> None:
            try:
                while ours.poll():
                    device, incident_id, at = ours.recv()
                    seen[device] = at
                    task = asyncio.create_task(_handle(http, incident_id))
                    handling.add(task)
                    task.add_done_callback(handling.discard)
                    if len(seen) == count:
                        done.set()
            except EOFError:  # the watcher ended early: its exit status says why, below
                loop.remove_reader(ours.fileno())
                done.set()

        loop.add_reader(ours.fileno(), arrived)
        try:
            started = time.monotonic()
            for index, device in enumerate(devices):
                now = datetime.now(UTC)
                batch = EventBatch(
                    gateway=ALARM_GATEWAY,
                    community=COMMUNITY,
                    spool_epoch="a1a1a1a1a1a1a1a1",
                    batch_seq=first + index + 1,
                    sent_at=now,
                    items=[
                        Event(
                            device=device,
                            ts=now,
                            seq=1,
                            type=EventType.WEARABLE_SOS,
                            severity=Severity.CRITICAL,
                        )
                    ],
                )
                payload = encode(batch)
                published[device] = time.time()
                await client.publish(
                    topic_for(COMMUNITY, ALARM_GATEWAY, Channel.EVENTS), payload, qos=1, timeout=30
                )
                await asyncio.sleep(max(0.0, started + (index + 1) / per_s - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=SETTLE_S)
            if len(seen) < count:
                process.join(timeout=1)
                if process.exitcode:  # the stream failed: say so, not count alarms lost
                    raise RuntimeError(f"the live feed watcher exited with {process.exitcode}")
        finally:
            loop.remove_reader(ours.fileno())
        await asyncio.gather(*handling)
    latencies = {d: (seen[d] - published[d]) * 1000 for d in seen}
    settled = min(published.values()) + 1.0
    later = [latency for d, latency in latencies.items() if published[d] >= settled]
    return list(latencies.values()), later, count - len(seen)


async def _handle(http: httpx.AsyncClient, incident_id: int) -> None:
    """Claim and close a seen incident, as a dispatcher would, keeping the queue short.

    A refused action fails the run: a queue left to grow would skew the latencies.
    """
    claimed = await http.post(f"/incidents/{incident_id}/claim")
    claimed.raise_for_status()
    resolved = await http.post(
        f"/incidents/{incident_id}/resolve",
        json={"outcome": "false_alarm", "notes": "benchmark"},
    )
    resolved.raise_for_status()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _phase(
    mqtt_url: str, api: str, key: str, first: int, args: argparse.Namespace, background: int
) -> dict[str, Any]:
    """Alarms under ``background`` readings/s from a publisher process; the phase's figures.

    The watcher and the publisher start first, and the telemetry flows for two seconds
    before the first alarm: what is timed is the alarms beside a steady flow, not the
    start-up of the processes that stand for gateways and a dispatcher's screen.
    """
    devices = [_wearable(index) for index in range(first, first + args.alarms)]
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    publisher = context.Process(target=_background, args=(mqtt_url, background, theirs))
    watcher = _start_watcher(api, key, devices)
    try:
        publisher.start()
        if ours.recv() != "ready":
            raise RuntimeError("background publisher failed to start")
        time.sleep(2.0)  # let the background flow settle before the first alarm
        _progress(f"{background:,} readings/s flowing; publishing {args.alarms} alarms")
        latencies, later, lost = asyncio.run(
            _alarms(mqtt_url, api, key, devices, first, args.rate, watcher)
        )
        ours.send("stop")
        sent, elapsed = ours.recv()
    finally:
        watcher[0].kill()
        watcher[0].join(timeout=10)
        publisher.join(timeout=30)
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = _percentile(latencies, 0.99) if latencies else float("nan")
    _progress(f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, lost {lost}; {sent / elapsed:,.0f} readings/s")
    return {
        "background_readings_per_s": round(sent / elapsed),
        "p50_ms": round(p50, 1),
        "p90_ms": round(_percentile(latencies, 0.9), 1) if latencies else None,
        "p99_ms": round(p99, 1),
        "max_ms": round(max(latencies), 1) if latencies else None,
        "lost": lost,
        "p99_ms_after_first_second": round(_percentile(later, 0.99), 1) if later else None,
    }


def run(argv: list[str]) -> Result:
    parser = argparse.ArgumentParser(prog=f"bench.py {NAME}", description=__doc__)
    parser.add_argument(
        "--alarms", type=int, default=1000, help="SOS alarms published in each phase"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="alarms per second")
    parser.add_argument(
        "--background", type=int, default=20_000, help="telemetry readings per second"
    )
    parser.add_argument(
        "--light-background",
        type=int,
        default=1_000,
        help="telemetry readings per second of the baseline phase (0 skips it)",
    )
    parser.add_argument(
        "--heavy-background",
        type=int,
        default=100_000,
        help="telemetry readings per second of the second phase (0 skips it)",
    )
    parser.add_argument("--workers", type=int, default=2, help="ingest workers")
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="run the cloud as `anju cloud run` (ingest and API in one process) instead "
        "of `anju cloud ingest` and `anju cloud api` side by side",
    )
    args = parser.parse_args(argv)

    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL server binaries not found; run scripts/test once")
    with (
        tempfile.TemporaryDirectory(prefix="anju-bench-alarms-") as tmp,
        PostgresServer(bin_dir=bin_dir) as pg,
        MosquittoServer(Path(tmp) / "mqtt") as broker,
    ):
        apply_migrations(pg.url)
        phases = {"normal": args.background}
        if args.light_background:
            phases["baseline"] = args.light_background
        if args.heavy_background:
            phases["heavy"] = args.heavy_background
        key = asyncio.run(_register(pg.url, args.alarms * len(phases)))
        _progress(f"{args.alarms} wearables and {BACKGROUND_GATEWAYS} background gateways")
        cloud_processes = (
            cloud_process(pg.url, broker.url, Path(tmp) / "cloud.log", workers=args.workers)
            if args.one_process
            else split_cloud(pg.url, broker.url, Path(tmp), workers=args.workers)
        )
        with cloud_processes as cloud:
            figures = {
                name: _phase(broker.url, cloud.api, key, n * args.alarms, args, background)
                for n, (name, background) in enumerate(phases.items())
            }
            with psycopg.connect(pg.url) as conn:
                row = conn.execute("SELECT count(*) FROM readings").fetchone()
                stored = int(row[0]) if row else 0
    normal = figures["normal"]
    result: Result = {
        "benchmark": NAME,
        "alarms": args.alarms,
        "alarms_per_s": args.rate,
        **normal,
        "background_readings_stored": stored,
        "cloud": "anju cloud run" if args.one_process else "anju cloud ingest + anju cloud api",
        "target_p99_ms": TARGET_P99_MS,
        "met": normal["lost"] == 0 and normal["p99_ms"] <= TARGET_P99_MS,
    }
    if "baseline" in figures:
        baseline = figures["baseline"]
        result |= {f"baseline_{name}": value for name, value in baseline.items()}
        result["p99_ratio_to_baseline"] = round(normal["p99_ms"] / baseline["p99_ms"], 2)
    if "heavy" in figures:
        result |= {f"{name}_at_100k": value for name, value in figures["heavy"].items()}
    return result
