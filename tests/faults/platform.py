"""A gateway with many simulated detectors, the cloud tier, and a broker the test owns.

The fault tests stop, block and kill parts of this and then check, in the database,
that every reading and event the gateway spooled arrived exactly once: readings and
events of a device share one sequence, so after the dust settles each device's
stored sequence numbers must run 1..N with no repeat, and any hole must be one the
gateway reported as a telemetry gap.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from anju.services.mosquitto import MosquittoServer
from anju.services.ports import free_port
from cloud.app import run_cloud
from cloud.registry import register_community, register_device, register_gateway
from cloud.settings import CloudSettings
from edge.app import Agent
from edge.uplink import UplinkState
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.smoke_detector import SmokeDetector
from schemas.broker import parse_broker_url
from schemas.vocabulary import DeviceKind

COMMUNITY = "xijin/fenghuang"


def device_id(unit: int) -> str:
    return f"fh-smoke-{unit:03d}"


@dataclass
class Site:
    gateway: str
    detectors: dict[int, SmokeDetector]
    sim: ModbusSimServer

    def gateway_config(self, broker_url: str, state_dir: Path, **extra: Any) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "community": COMMUNITY,
            "broker": broker_url,
            "state_dir": str(state_dir),
            "telemetry_linger_s": 0.2,
            "devices": [
                {
                    "id": device_id(unit),
                    "profile": "anju-smoke-mb",
                    "address": self.sim.url_for(unit),
                    "building": str(1 + unit % 5),
                    "poll_interval_s": 0.5,
                }
                for unit in self.detectors
            ],
            **extra,
        }

    def tick(self) -> None:
        for detector in self.detectors.values():
            detector.tick()


async def register(database_url: str, gateway: str, units: list[int]) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await register_community(conn, COMMUNITY)
        await register_gateway(conn, gateway, COMMUNITY)
        for unit in units:
            await register_device(
                conn,
                device_id(unit),
                gateway_id=gateway,
                kind=DeviceKind.SMOKE,
                profile_id="anju-smoke-mb",
                building=str(1 + unit % 5),
            )
        await conn.commit()


@asynccontextmanager
async def site(gateway: str, devices: int, *, first: int = 1) -> AsyncIterator[Site]:
    """``devices`` detectors whose temperatures wander, so they keep reporting; their units
    (and so their device ids) start at ``first``, so several sites' ids do not collide."""
    detectors = {
        unit: SmokeDetector(
            serial_number=20260000 + unit, temperature_noise_c=2.0, seed=unit, temperature_c=20
        )
        for unit in range(first, first + devices)
    }
    async with ModbusSimServer(detectors) as sim:
        stop = asyncio.Event()
        current = Site(gateway, detectors, sim)

        async def wander() -> None:
            while not stop.is_set():
                current.tick()
                await asyncio.sleep(0.25)

        task = asyncio.create_task(wander(), name="detectors wander")
        try:
            yield current
        finally:
            stop.set()
            await task


@asynccontextmanager
async def durable_broker(work_dir: Path) -> AsyncIterator[MosquittoServer]:
    """A broker that keeps sessions and queued messages across stop and start, as a
    production broker must: otherwise a restart silently drops the ingest session."""
    broker = MosquittoServer(work_dir, port=free_port(), persistence=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@asynccontextmanager
async def cloud(database_url: str, broker_url: str, client_id: str) -> AsyncIterator[None]:
    settings = CloudSettings.model_validate(
        {
            "database_url": database_url,
            "mqtt": parse_broker_url(broker_url),
            "api": {"port": free_port()},
            "ingest": {"client_id": client_id, "group": f"{client_id}-group"},
        }
    )
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_cloud(settings, stop=stop, started=started), name="cloud")
    await asyncio.wait_for(started.wait(), timeout=30)
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


def caught_up(agent: Agent) -> bool:
    """Whether ``agent``'s spool has caught up with what it read: online (an offline
    uplink seals nothing, so its spool looks empty), two sealed batches or fewer, and
    none the broker took still waiting for the cloud's acknowledgement (one a broker
    or a dead worker swallowed waits for its resend). The stop that follows sends the
    rest and waits for their acknowledgements."""
    return (
        agent.uplink.state is UplinkState.ONLINE
        and sum(agent.spool.depth.values()) <= 2
        and not any(agent.spool.sent_unacked.values())
    )


@dataclass(frozen=True)
class Stored:
    """What the database holds, per device."""

    seqs: dict[str, list[int]]
    gaps: dict[str, int]
    event_types: dict[str, list[str]]


async def stored(database_url: str) -> Stored:
    seqs: dict[str, list[int]] = defaultdict(list)
    gaps: dict[str, int] = defaultdict(int)
    types: dict[str, list[str]] = defaultdict(list)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        for device, seq in await (
            await conn.execute("SELECT device_id, seq FROM readings")
        ).fetchall():
            seqs[device].append(seq)
        rows = await (
            await conn.execute(
                "SELECT device_id, seq, type, (data->>'count')::int FROM events ORDER BY id"
            )
        ).fetchall()
        for device, seq, event_type, count in rows:
            seqs[device].append(seq)
            types[device].append(event_type)
            if event_type == "telemetry.gap":
                gaps[device] += count or 0
    return Stored(dict(seqs), dict(gaps), dict(types))


def check_exactly_once(found: Stored, last_seqs: dict[str, int]) -> None:
    """Every device's stored sequence is 1..last with no repeat and no unreported hole."""
    missing = sorted(set(last_seqs) - set(found.seqs))
    stored_items = sum(len(seqs) for seqs in found.seqs.values())
    assert not missing, f"{len(missing)} devices have nothing stored ({stored_items} items are)"
    for device, last in last_seqs.items():
        seqs = found.seqs[device]
        repeats = len(seqs) - len(set(seqs))
        assert repeats == 0, f"{device}: {repeats} items stored twice"
        assert max(seqs) == last, f"{device}: stored up to {max(seqs)}, spooled up to {last}"
        holes = last - len(set(seqs))
        assert holes == found.gaps.get(device, 0), (
            f"{device}: {holes} items missing, {found.gaps.get(device, 0)} reported as gaps"
        )


async def settle(
    database_url: str, last_seqs: Callable[[], dict[str, int]], timeout_s: float
) -> Stored:
    """Wait until the database holds everything up to the gateway's last sequences."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await stored(database_url)
        wanted = last_seqs()
        done = all(max(found.seqs.get(d, [0])) >= last for d, last in wanted.items())
        if done or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.25)


class LinkProxy:
    """A TCP hop between the gateway and its broker that a test can cut or blackhole.

    ``cut()`` resets every connection and refuses new ones, like a broker host gone
    away; ``blackhole()`` keeps connections open but lets no byte through, like a
    severed fibre behind a switch, which the gateway only notices by its own
    timeouts; ``restore()`` brings the link back.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._mode = "open"
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def __aenter__(self) -> "LinkProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._reset_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self._mode = "cut"
        self._reset_all()

    def blackhole(self) -> None:
        self._mode = "blackhole"

    def restore(self) -> None:
        self._mode = "open"

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "cut":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.upstream_port), timeout=5
            )
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )
        for end in (writer, up_writer):
            self._writers.discard(end)
            end.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self._mode == "open":
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


class IngestProcess:
    """``anju cloud ingest --shared`` (and ``options``) in its own process, as an operator
    would run it."""

    def __init__(self, log: Path, env: dict[str, str], options: Sequence[str] = ()) -> None:
        self.log = log
        self._env = env
        self._options = list(options)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        anju = Path(sys.executable).with_name("anju")
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(anju), "cloud", "ingest", "--shared", *self._options],
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_subscribed(self, times: int) -> None:
        """Wait until the log says ``times`` sessions subscribed (two per worker)."""
        deadline = time.monotonic() + 30
        while self.log.read_text(errors="replace").count("subscribed on") < times:
            assert self.process is not None
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"not subscribed: {self.log.read_text()}"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def ingest_processes(
    tmp_path: Path,
    database_url: str,
    mqtt_url: str,
    group: str,
    client_ids: list[str],
    options: Sequence[str] = (),
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[list[IngestProcess]]:
    """One ingest process per client id, with ``env`` added to the environment, yielded
    once each has its ``workers`` workers subscribed, two sessions each (its alarm and
    telemetry lanes; ``workers`` must match any ``--workers`` in ``options``)."""
    processes = [
        IngestProcess(
            tmp_path / f"{client_id}.log",
            {
                **os.environ,
                "ANJU_DATABASE_URL": database_url,
                "ANJU_MQTT_URL": mqtt_url,
                "ANJU_INGEST_GROUP": group,
                "ANJU_INGEST_CLIENT_ID": client_id,
                **(env or {}),
            },
            options,
        )
        for client_id in client_ids
    ]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.wait_subscribed(2 * workers)
        yield processes
    finally:
        for process in processes:
            process.stop()
