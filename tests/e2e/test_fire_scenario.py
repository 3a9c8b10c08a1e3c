"""The fire scenario, through every layer, each of them real.

Building 3 of Fenghuang has a smoke detector in its stairwell and four registered
residents nearby: two elderly people in building 3 who need help to leave, one in
building 3 who does not, and one in building 1 who does. Two property managers
subscribe to the community's fire incidents; a third subscribes to another
community. A simulated SD-MB100 in building 3 goes into alarm; the gateway agent
polls it and publishes through Mosquitto; ``run_cloud`` ingests, runs the rules,
queues the incidents and delivers webhooks to a real HTTP receiver.

Expected: one fire incident, two evacuation-assistance incidents on the queue (the
two residents of building 3 who need help), and one signed webhook per subscribed
property manager of Fenghuang, carrying no resident data.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from standardwebhooks import Webhook

from cloud.auth.roles import Role
from cloud.registry import register_community, register_device, register_gateway
from cloud.residents import records
from cloud.residents.crypto import Keyring
from cloud.webhooks.outbox import WebhookEvent
from cloud.webhooks.signing import generate_secret
from edge.app import Agent
from edge.config import parse_config
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.smoke_detector import SmokeDetector
from schemas.profile import load_profiles
from schemas.vocabulary import DeviceKind
from tests.api_support import make_key
from tests.e2e.support import cloud_settings, running
from tests.integration.webhook_support import Receiver, fast_settings, running_receiver

pytestmark = pytest.mark.e2e

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")
COMMUNITY, OTHER = "xijin/fenghuang", "xijin/qinghe"
GATEWAY, DETECTOR = "gw-fh-fire-01", "fh-b3-stair-smoke"
RESIDENTS = {
    "care-0301": ("3", "301", True),
    "care-0502": ("3", "502", True),
    "care-0203": ("3", "203", False),
    "care-1101": ("1", "101", True),
}
WAIT_S = 20.0


@dataclass
class Scene:
    detector: SmokeDetector
    api: httpx.AsyncClient
    receiver: Receiver
    secrets: dict[str, str]
    """Each property manager's secret, by the last part of their webhook path."""


async def _setup(database_url: str, receiver: Receiver) -> tuple[dict[str, str], str]:
    """Each manager's webhook secret, and a dispatcher's API key for the queue."""
    secrets: dict[str, str] = {}
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        fenghuang = (await register_community(conn, COMMUNITY)).id
        other = await register_community(conn, OTHER)
        await register_gateway(conn, GATEWAY, COMMUNITY)
        await register_device(
            conn,
            DETECTOR,
            gateway_id=GATEWAY,
            kind=DeviceKind.SMOKE,
            profile_id="anju-smoke-mb",
            building="3",
        )
        for reference, (building, unit, needs_help) in RESIDENTS.items():
            await records.register(
                conn,
                Keyring(),
                community_id=fenghuang,
                reference=reference,
                building=building,
                unit=unit,
                needs_evacuation_help=needs_help,
            )
        for manager, community_id in (("pm-a", fenghuang), ("pm-b", fenghuang), ("pm-c", other.id)):
            secret = generate_secret()
            await conn.execute(
                "INSERT INTO webhook_subscriptions"
                " (community_id, url, event_types, incident_types, secrets)"
                " VALUES (%s, %s, %s, %s, %s)",
                [
                    community_id,
                    f"{receiver.url}/{manager}",
                    [str(WebhookEvent.OPENED)],
                    ["fire"],
                    [secret],
                ],
            )
            secrets[manager] = secret
        token = await make_key(conn, role=Role.DISPATCHER, scope=COMMUNITY)
    return secrets, token


@pytest.fixture
async def scene(
    database_url: str, mqtt_url: str, unique_id: Any, tmp_path: Path
) -> AsyncIterator[Scene]:
    async with running_receiver() as receiver:
        secrets, token = await _setup(database_url, receiver)
        settings = cloud_settings(database_url, mqtt_url, unique_id, webhooks=fast_settings())
        detector = SmokeDetector(serial_number=20261128)
        async with ModbusSimServer({1: detector}) as sim:
            config = parse_config(
                {
                    "gateway": GATEWAY,
                    "community": COMMUNITY,
                    "broker": mqtt_url,
                    "telemetry_linger_s": 0.1,
                    "state_dir": str(tmp_path / "state"),
                    "devices": [
                        {
                            "id": DETECTOR,
                            "profile": "anju-smoke-mb",
                            "address": sim.url_for(1),
                            "building": "3",
                        }
                    ],
                },
                "test",
            )
            async with running(settings, Agent(config, PROFILES), token) as api:
                yield Scene(detector, api, receiver, secrets)


async def _queue_settles(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    """The queue once it holds the fire and two other incidents (or the deadline passes)."""
    deadline = time.monotonic() + WAIT_S
    queue: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        response = await api.get("/incidents")
        response.raise_for_status()
        queue = response.json()["items"]
        if len(queue) >= 3:
            # Anything else the alarm would wrongly open commits in the same transaction.
            return queue
        await asyncio.sleep(0.05)
    return queue


async def test_a_fire_in_building_3_queues_help_for_its_two_residents_and_tells_each_manager(
    scene: Scene,
) -> None:
    scene.detector.trigger_alarm()
    queue = await _queue_settles(scene.api)

    kinds = sorted((i["type"], i["priority"], i["building"], i["unit"]) for i in queue)
    assert kinds == [
        ("evacuation_assistance", 1, "3", "301"),
        ("evacuation_assistance", 1, "3", "502"),
        ("fire", 1, "3", None),
    ]
    fire = next(i for i in queue if i["type"] == "fire")
    assert fire["device_id"] == DETECTOR

    deadline = time.monotonic() + WAIT_S
    while len(scene.receiver.requests) < 2:
        assert time.monotonic() < deadline, "the managers' webhooks did not arrive"
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # room for a wrong third delivery to show up
    requests = scene.receiver.requests
    managers = sorted(r.path.rsplit("/", 1)[-1] for r in requests)
    assert managers == ["pm-a", "pm-b"]
    for request in requests:
        Webhook(scene.secrets[request.path.rsplit("/", 1)[-1]]).verify(
            request.body, request.headers
        )
        payload = json.loads(request.body)
        assert payload["type"] == "incident.opened"
        assert payload["data"]["incident_id"] == fire["id"]
        assert payload["data"]["incident_type"] == "fire"
        assert payload["data"]["location"] == {
            "community": COMMUNITY,
            "building": "3",
            "unit": None,
        }
        text = request.body.decode()
        assert not any(reference in text for reference in RESIDENTS)
