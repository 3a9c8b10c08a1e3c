"""Doors and cameras through every layer: simulated OSDP readers and a camera analytics
box on pseudo-terminals -> the agent's OSDP and serial drivers -> Mosquitto -> cloud
ingest -> rules -> incidents.

The readers are libosdp peripherals with secure channels, paced at 9600 baud; the box
writes its checksummed records at 115200. The door controller's decisions reach the
gateway as the lock-release input (``firmware_sim.osdp_readers``), the camera's lines
are tied to the readers' doors and its zones named and armed by the gateway's
``cameras`` section. Every MQTT message the gateway publishes is kept, to show that a
card number never leaves the edge in clear.
"""

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import httpx
import psycopg
import pytest
import yaml

from cloud.registry import register_community, register_device, register_gateway
from edge.app import Agent
from edge.config import parse_config
from firmware_sim.camera_box import CameraBox
from firmware_sim.osdp_readers import ReaderLine, SimReader, wiegand26
from firmware_sim.pty_pair import PtyPair
from firmware_sim.serial_line import SerialLine
from schemas.broker import parse_broker_url
from schemas.profile import load_profiles
from schemas.vocabulary import DeviceKind
from tests.api_support import make_key
from tests.e2e.support import cloud_settings, listed_incidents, query_rows, running
from tests.waiting import until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PROFILES = load_profiles(REPO / "device_profiles")
COMMUNITY, GATEWAY = "xijin/xinghe", "gw-xinghe-01"
GATE, BIKES, CAMERA = "gate-reader-01", "bikes-reader-02", "gate-cam-01"
KEYS = {GATE: secrets.token_bytes(16), BIKES: secrets.token_bytes(16)}
CARD, OTHER_CARD = wiegand26(17, 40961), wiegand26(17, 40962)
ZONE = ZoneInfo("Asia/Shanghai")


def _hours_around(now: datetime, hours: float) -> str:
    """A local span of ``hours`` centred on ``now`` (it may cross midnight)."""
    start, end = now - timedelta(hours=hours / 2), now + timedelta(hours=hours / 2)
    return f"{start:%H:%M}-{end:%H:%M}"


def _hours_away_from(now: datetime) -> str:
    """A local span of two hours that ``now`` is far outside."""
    start = now + timedelta(hours=6)
    return f"{start:%H:%M}-{start + timedelta(hours=2):%H:%M}"


@dataclass
class Published:
    """Every payload the gateway published, as text."""

    payloads: list[bytes] = field(default_factory=list)

    def contains(self, text: str) -> bool:
        needle = text.encode()
        return any(needle in payload for payload in self.payloads)


@dataclass
class Site:
    readers: ReaderLine
    box: CameraBox
    agent: Agent
    api: httpx.AsyncClient
    database_url: str
    published: Published


@contextlib.asynccontextmanager
async def _listening(mqtt_url: str, client_id: str) -> AsyncIterator[Published]:
    broker = parse_broker_url(mqtt_url)
    published, subscribed = Published(), asyncio.Event()

    async def listen() -> None:
        async with aiomqtt.Client(broker.host, broker.port, identifier=client_id) as client:
            await client.subscribe("anju/#", qos=1)
            subscribed.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                published.payloads.append(message.payload)

    task = asyncio.create_task(listen(), name="every gateway message")
    await asyncio.wait_for(subscribed.wait(), timeout=10)
    try:
        yield published
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def _field() -> Iterator[tuple[PtyPair, PtyPair, ReaderLine, CameraBox]]:
    with (
        PtyPair() as reader_pty,
        PtyPair() as camera_pty,
        ReaderLine(
            reader_pty.a, 9600, [SimReader(1, scbk=KEYS[GATE]), SimReader(2, scbk=KEYS[BIKES])]
        ) as readers,
        CameraBox(SerialLine(camera_pty.a, 115200)) as box,
    ):
        yield reader_pty, camera_pty, readers, box


def _rules_file(path: Path, now: datetime) -> Path:
    """The packaged rules, with this community's closed hours around now: a night."""
    rules = yaml.safe_load((REPO / "cloud/rules/rules.yaml").read_text(encoding="utf-8"))
    rules["overrides"] = {COMMUNITY: {"camera_intrusion": {"hours": _hours_around(now, 4)}}}
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    return path


@pytest.fixture
async def site(
    database_url: str,
    mqtt_url: str,
    unique_id: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Site]:
    now = datetime.now(ZONE)
    monkeypatch.setenv("ANJU_RULES_FILE", str(_rules_file(tmp_path / "rules.yaml", now)))
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await register_community(conn, COMMUNITY)
        await register_gateway(conn, GATEWAY, COMMUNITY)
        for reader in (GATE, BIKES):
            await register_device(
                conn,
                reader,
                gateway_id=GATEWAY,
                kind=DeviceKind.DOOR,
                profile_id="anju-osdp-reader",
                building="1",
            )
        await register_device(
            conn,
            CAMERA,
            gateway_id=GATEWAY,
            kind=DeviceKind.CAMERA,
            profile_id="anju-camera-serial",
            building="1",
        )
        token = await make_key(conn)
        await conn.commit()
    settings = cloud_settings(database_url, mqtt_url, unique_id)
    with _field() as (reader_pty, camera_pty, readers, box):
        config = parse_config(
            {
                "gateway": GATEWAY,
                "community": COMMUNITY,
                "broker": mqtt_url,
                "telemetry_linger_s": 0.1,
                "state_dir": str(tmp_path / "state"),
                "drivers": {
                    "osdp": {
                        "card_hash_key": secrets.token_hex(32),
                        "scbk": {reader: key.hex() for reader, key in KEYS.items()},
                    }
                },
                "cameras": {
                    "devices": {
                        CAMERA: {
                            "zones": {
                                "Z1": {"name": "rooftop"},
                                "Z2": {"name": "lobby"},
                                "Z3": {"name": "bike-store", "armed": _hours_away_from(now)},
                            },
                            "lines": {"L1": {"door": GATE}, "L2": {"door": BIKES}},
                        }
                    }
                },
                "devices": [
                    {
                        "id": GATE,
                        "profile": "anju-osdp-reader",
                        "address": f"osdp://{reader_pty.b}?address=1&baud=9600",
                        "building": "1",
                    },
                    {
                        "id": BIKES,
                        "profile": "anju-osdp-reader",
                        "address": f"osdp://{reader_pty.b}?address=2&baud=9600",
                        "building": "1",
                    },
                    {
                        "id": CAMERA,
                        "profile": "anju-camera-serial",
                        "address": f"serial://{camera_pty.b}?baud=115200",
                        "building": "1",
                    },
                ],
            },
            "test",
        )
        agent = Agent(config, PROFILES)
        async with (
            _listening(mqtt_url, unique_id("listener")) as published,
            running(settings, agent, token) as api,
        ):
            yield Site(readers, box, agent, api, database_url, published)


async def _events(site: Site, event_type: str) -> list[tuple[Any, ...]]:
    return await query_rows(
        site.database_url,
        "SELECT device_id, data FROM events WHERE type = %s ORDER BY ts",
        event_type,
    )


async def _counted(site: Site, event_type: str, count: int) -> list[tuple[Any, ...]]:
    rows = await _events(site, event_type)
    return rows if len(rows) >= count else []


async def _readers_polled(site: Site) -> bool:
    """Both readers polled: libosdp polls a keyed reader once its secure channel is up."""
    (pump,) = [p for p in site.agent.pumps if p.bus.name.startswith("osdp://")]
    stats = pump.bus.stats()  # type: ignore[attr-defined]
    return stats is not None and all(
        address in stats.readers and stats.readers[address].polls for address in (1, 2)
    )


async def test_two_people_on_one_card_is_tailgating_one_is_not(site: Site) -> None:
    await until("both readers polled", 20, lambda: _readers_polled(site))
    site.readers.grant(2, OTHER_CARD, open_s=0.5)
    site.readers.grant(1, CARD, open_s=0.5)
    await until("both grants stored", 15, lambda: _counted(site, "access.granted", 2))
    site.box.cross(1, "L2", "in", 1)
    site.box.tailgating(1, "L1")
    crossings = await until(
        "both crossings stored", 15, lambda: _counted(site, "camera.line_crossing", 2)
    )
    assert {(row[1]["door"], row[1]["count"], row[1]["direction"]) for row in crossings} == {
        (GATE, 2, "in"),
        (BIKES, 1, "in"),
    }
    expected = {(CAMERA, "tailgating", 2)}
    await until("the tailgating incident", 15, lambda: _holds(site, expected))
    # The bicycle store's one crossing matched its one grant when its window was
    # judged: the gate's incident is the only one.
    assert await listed_incidents(site.api) == expected

    granted = await _events(site, "access.granted")
    hashes = {row[0]: row[1]["card_hash"] for row in granted}
    assert hashes.keys() == {GATE, BIKES}
    assert hashes[GATE] != hashes[BIKES]
    await _assert_no_card_in_clear(site)


async def test_intrusions_at_night_and_in_a_closed_zone_open_incidents_a_disarmed_zone_none(
    site: Site,
) -> None:
    # The community's closed hours are set around now (a night); the rooftop is a closed
    # zone at any hour; the bike store is armed at the gateway only hours from now.
    site.box.intrude(1, "Z3")
    site.box.intrude(1, "Z1")
    site.box.intrude(2, "Z2")
    stored = await until("intrusions stored", 15, lambda: _counted(site, "camera.intrusion", 2))
    assert sorted(row[1]["zone"] for row in stored) == ["lobby", "rooftop"]
    await until("the intrusion incident", 15, lambda: _holds(site, {(CAMERA, "intrusion", 2)}))
    assert site.agent.cameras is not None
    assert site.agent.cameras.disarmed[CAMERA] == 1
    assert len(await _events(site, "camera.intrusion")) == 2


async def test_a_forced_door_opens_an_incident_and_the_readers_report_their_state(
    site: Site,
) -> None:
    await until("both readers polled", 20, lambda: _readers_polled(site))
    site.readers.force_door(1, open_s=0.5)
    await until(
        "the forced-door incident", 15, lambda: _holds(site, {(GATE, "door_forced_open", 2)})
    )
    site.readers.deny(2, CARD)
    denied = await until("the denial stored", 15, lambda: _counted(site, "access.denied", 1))
    assert denied[0][0] == BIKES
    await until("the door closed again", 15, lambda: _counted(site, "door.closed", 1))
    await _assert_no_card_in_clear(site)


async def _holds(site: Site, expected: set[tuple[str, str, int]]) -> bool:
    return expected <= await listed_incidents(site.api)


async def _assert_no_card_in_clear(site: Site) -> None:
    """No card number, in any spelling, in a gateway message or a database row."""
    spellings = [
        text
        for card in (CARD, OTHER_CARD)
        for text in (str(card), f"{card:x}", f"{card:X}", f"{card:08x}", f"{card << 6:08x}")
    ]
    assert site.published.payloads, "the listener heard the gateway"
    for text in spellings:
        assert not site.published.contains(text), f"{text} in an MQTT payload"
    tables = await query_rows(
        site.database_url,
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    for (table,) in tables:
        rows = await query_rows(site.database_url, f'SELECT t::text FROM "{table}" t')
        dump = "\n".join(row[0] for row in rows)
        for text in spellings:
            assert text not in dump, f"{text} in table {table}"
