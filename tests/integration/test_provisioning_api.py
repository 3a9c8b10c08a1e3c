"""The installer's API against the real PostgreSQL and a TLS + dynamic-security
Mosquitto (tests/brokers.py): gateways get their own broker credentials (password or
certificate) that work at once and stop at once when replaced or revoked; devices are
checked against their profiles, and every change to a gateway's devices makes its next
config version, whose document is what the gateway will be sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from fastapi import FastAPI
from psycopg import AsyncConnection

from anju.services.tls import IssuedCertificate, certificate_request, new_key
from cloud.api.app import create_app
from cloud.auth.roles import Role
from cloud.registry import register_community
from cloud.settings import BrokerSettings, CloudSettings
from schemas.profile import DeviceProfile
from schemas.topics import Channel, topic_for
from schemas.wire import GatewayConfigDocument, decode
from tests.api_support import api_client, make_key
from tests.brokers import SERVICE_USER, MqttProbe, SecureBroker, secure_broker  # noqa: F401
from tests.waiting import until

HOME = "xijin/fenghuang"
AWAY = "dongcheng/heping"
ACCEPTED = (0, 16)
"""PUBACK: delivered, or delivered to no subscriber."""
REFUSED = (134, 135)
"""CONNACK: bad user name or password, not authorized."""

SMOKE: dict[str, Any] = {
    "profile": "anju-smoke-mb",
    "address": "modbus-tcp://10.0.0.5:502?unit=3",
    "building": "3",
    "unit": "1",
}


@dataclass
class Api:
    app: FastAPI
    installer: str
    """An installer key scoped to HOME."""
    away: str
    """An installer key scoped to AWAY."""


def _settings(broker: SecureBroker | None) -> dict[str, str]:
    if broker is None:
        return {}
    return {
        "ANJU_BROKER_ADMIN_URL": broker.admin_url,
        "ANJU_BROKER_ADMIN_CA_FILE": str(broker.ca_file),
        "ANJU_BROKER_GATEWAY_URL": broker.gateway_url,
        "ANJU_BROKER_GATEWAY_CERT_URL": broker.certificate_url,
        "ANJU_BROKER_SERVER_CA_FILE": str(broker.ca_file),
        "ANJU_BROKER_CLIENT_CA_CERT_FILE": str(broker.client_ca.cert_path),
        "ANJU_BROKER_CLIENT_CA_KEY_FILE": str(broker.client_ca.key_path),
    }


async def _api(conn: AsyncConnection[Any], database_url: str, broker: SecureBroker | None) -> Api:
    for path in (HOME, AWAY):
        await register_community(conn, path)
    settings = CloudSettings(
        database_url=database_url,
        provisioning=BrokerSettings.from_environ(_settings(broker)),
    )
    return Api(
        create_app(settings),
        await make_key(conn, role=Role.INSTALLER, scope=HOME, name="installer-home"),
        await make_key(conn, role=Role.INSTALLER, scope=AWAY, name="installer-away"),
    )


@pytest_asyncio.fixture
async def api(
    conn: AsyncConnection[Any],
    database_url: str,
    secure_broker: SecureBroker,  # noqa: F811
) -> Api:
    return await _api(conn, database_url, secure_broker)


@pytest_asyncio.fixture
async def http(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(api.app, api.installer) as client:
        yield client


def _probe(broker: SecureBroker, credentials: dict[str, Any]) -> MqttProbe:
    return MqttProbe(broker, username=credentials["username"], password=credentials["password"])


async def _publishes(broker: SecureBroker, credentials: dict[str, Any], topic: str) -> int:
    async with _probe(broker, credentials) as probe:
        assert await probe.connect() == 0
        return await probe.publish(topic)


async def _connack(broker: SecureBroker, credentials: dict[str, Any]) -> int:
    async with _probe(broker, credentials) as probe:
        return await probe.connect()


async def test_a_provisioned_gateway_publishes_and_a_rerun_replaces_its_password(
    http: httpx.AsyncClient,
    secure_broker: SecureBroker,  # noqa: F811
    unique_id: Callable[[str], str],
) -> None:
    gateway = unique_id("gw")
    telemetry = topic_for(HOME, gateway, Channel.TELEMETRY)

    first = await http.post("/gateways", json={"id": gateway, "community": HOME})
    assert first.status_code == 201, first.text
    body = first.json()
    old = body["credentials"]
    assert old["username"] == gateway
    assert len(old["password"]) >= 43
    assert (old["broker_url"], old["certificate"]) == (secure_broker.gateway_url, None)
    assert old["ca_certificate"] == secure_broker.ca_file.read_text()
    assert body["gateway"]["auth"] == "password"
    assert body["gateway"]["credentials_issued_at"] is not None
    assert body["config_version"] == 0
    assert await _publishes(secure_broker, old, telemetry) in ACCEPTED
    assert (
        await _publishes(secure_broker, old, topic_for(HOME, "gw-other", Channel.TELEMETRY)) == 135
    )

    again = await http.post("/gateways", json={"id": gateway, "community": HOME})
    assert again.status_code == 200, again.text
    new = again.json()["credentials"]
    assert new["password"] != old["password"]
    assert await _connack(secure_broker, old) in REFUSED
    assert await _publishes(secure_broker, new, telemetry) in ACCEPTED

    rotated = await http.post(f"/gateways/{gateway}/credentials", json={"auth": "password"})
    assert rotated.status_code == 200, rotated.text
    assert await _connack(secure_broker, new) in REFUSED
    assert await _publishes(secure_broker, rotated.json()["credentials"], telemetry) in ACCEPTED


async def test_a_certificate_gateway_gets_its_csr_signed_and_publishes_with_it(
    http: httpx.AsyncClient,
    secure_broker: SecureBroker,  # noqa: F811
    unique_id: Callable[[str], str],
    tmp_path: Path,
) -> None:
    gateway = unique_id("gw")
    key = new_key(tmp_path / "gateway.key")

    wrong = await http.post(
        "/gateways",
        json={
            "id": gateway,
            "community": HOME,
            "auth": "certificate",
            "csr": certificate_request(key, "gw-someone-else"),
        },
    )
    assert wrong.status_code == 422, wrong.text
    assert "common name" in wrong.json()["detail"]
    missing = await http.post(
        "/gateways", json={"id": gateway, "community": HOME, "auth": "certificate"}
    )
    assert missing.status_code == 422, missing.text

    answer = await http.post(
        "/gateways",
        json={
            "id": gateway,
            "community": HOME,
            "auth": "certificate",
            "csr": certificate_request(key, gateway),
        },
    )
    assert answer.status_code == 201, answer.text
    credentials = answer.json()["credentials"]
    assert credentials["password"] is None
    assert credentials["broker_url"] == secure_broker.certificate_url
    assert answer.json()["gateway"]["auth"] == "certificate"
    cert = tmp_path / "gateway.crt"
    cert.write_text(credentials["certificate"])
    async with MqttProbe(secure_broker, certificate=IssuedCertificate(cert, key)) as probe:
        assert await probe.connect() == 0
        assert await probe.publish(topic_for(HOME, gateway, Channel.EVENTS)) in ACCEPTED
        assert await probe.publish(topic_for(AWAY, gateway, Channel.EVENTS)) == 135


async def test_a_revoked_gateway_is_cut_off_and_its_id_never_reused(
    api: Api,
    http: httpx.AsyncClient,
    secure_broker: SecureBroker,  # noqa: F811
    unique_id: Callable[[str], str],
) -> None:
    gateway = unique_id("gw")
    credentials = (await http.post("/gateways", json={"id": gateway, "community": HOME})).json()[
        "credentials"
    ]
    probe = _probe(secure_broker, credentials)
    async with probe:
        assert await probe.connect() == 0

        revoked = await http.post(f"/gateways/{gateway}/revoke")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["status"] == "revoked"
        await until("the live session ended by the revocation", 10, lambda: probe.dropped)
    assert await _connack(secure_broker, credentials) in REFUSED
    assert (await http.post(f"/gateways/{gateway}/revoke")).status_code == 200

    again = await http.post("/gateways", json={"id": gateway, "community": HOME})
    assert again.status_code == 409, again.text
    assert "revoked ids are not reused" in again.json()["detail"]
    rotate = await http.post(f"/gateways/{gateway}/credentials", json={"auth": "password"})
    assert rotate.status_code == 409, rotate.text

    async with api_client(api.app, api.away) as away:
        # Another community's installer: registered elsewhere, or out of reach.
        elsewhere = await away.post("/gateways", json={"id": gateway, "community": AWAY})
        assert elsewhere.status_code == 409, elsewhere.text
        assert "another community" in elsewhere.json()["detail"]
        hidden = await away.post(f"/gateways/{gateway}/revoke")
        assert hidden.status_code == 404, hidden.text


async def test_a_gateway_id_naming_the_cloud_account_is_refused_and_not_registered(
    api: Api,
    http: httpx.AsyncClient,
    secure_broker: SecureBroker,  # noqa: F811
) -> None:
    """An installer cannot take over the cloud workers' broker account by registering
    a gateway of its name: 409, nothing registered, the account untouched."""
    refused = await http.post("/gateways", json={"id": SERVICE_USER, "community": HOME})
    assert refused.status_code == 409, refused.text
    assert "is not a gateway's" in refused.json()["detail"]
    assert (await http.get(f"/gateways/{SERVICE_USER}")).status_code == 404
    cloud = MqttProbe(secure_broker, username=SERVICE_USER, password=secure_broker.service_password)
    async with cloud:
        assert await cloud.connect() == 0


async def test_without_broker_settings_credentials_are_refused_naming_the_variables(
    conn: AsyncConnection[Any], database_url: str
) -> None:
    api = await _api(conn, database_url, None)
    async with api_client(api.app, api.installer) as http:
        answer = await http.post("/gateways", json={"id": "gw-nobroker", "community": HOME})
        assert answer.status_code == 503, answer.text
        assert "ANJU_BROKER_ADMIN_URL" in answer.json()["detail"]
        assert "ANJU_BROKER_GATEWAY_URL" in answer.json()["detail"]
        assert (await http.get("/gateways/gw-nobroker")).status_code == 404, "nothing written"

    settings = CloudSettings(
        database_url=database_url,
        provisioning=BrokerSettings.from_environ(
            {
                "ANJU_BROKER_ADMIN_URL": "mqtts://admin:pw@127.0.0.1:9",
                "ANJU_BROKER_GATEWAY_URL": "mqtts://127.0.0.1:9",
            }
        ),
    )
    async with api_client(create_app(settings), api.installer) as http:
        answer = await http.post(
            "/gateways",
            json={"id": "gw-nobroker", "community": HOME, "auth": "certificate", "csr": "x"},
        )
        assert answer.status_code == 503, answer.text
        assert "ANJU_BROKER_CLIENT_CA_CERT_FILE" in answer.json()["detail"]
        unreachable = await http.post("/gateways", json={"id": "gw-nobroker", "community": HOME})
        assert unreachable.status_code in (502, 503), unreachable.text


async def _config(http: httpx.AsyncClient, gateway: str) -> dict[str, Any]:
    answer = await http.get(f"/gateways/{gateway}/config")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def _gateways(conn: AsyncConnection[Any], *ids: str) -> None:
    """Registered without the broker: devices need a gateway only."""
    community = await conn.execute("SELECT id FROM communities WHERE path = %s", [HOME])
    (community_id,) = await community.fetchone() or (0,)
    for gateway in ids:
        await conn.execute(
            "INSERT INTO gateways (id, community_id) VALUES (%s, %s)", [gateway, community_id]
        )


async def test_devices_are_checked_against_their_profiles_and_each_change_is_a_config(
    conn: AsyncConnection[Any], database_url: str
) -> None:
    api = await _api(conn, database_url, None)
    await _gateways(conn, "gw-a", "gw-b")
    async with api_client(api.app, api.installer) as http:
        assert (await _config(http, "gw-a"))["version"] == 0
        assert (await _config(http, "gw-a"))["document"] is None

        added = await http.post(
            "/devices", json={"id": "fh-b3-smoke-01", "gateway": "gw-a", **SMOKE}
        )
        assert added.status_code == 201, added.text
        assert added.json()["address"] == SMOKE["address"]
        assert added.json()["kind"] == "smoke"
        config = await _config(http, "gw-a")
        assert (config["version"], config["applied_version"]) == (1, 0)
        document = decode(json.dumps(config["document"]).encode(), GatewayConfigDocument)
        assert (document.gateway, document.version) == ("gw-a", 1)
        assert [d.id for d in document.devices] == ["fh-b3-smoke-01"]
        assert DeviceProfile.model_validate(document.profiles["anju-smoke-mb"]).kind == "smoke"

        same = await http.post(
            "/devices", json={"id": "fh-b3-smoke-01", "gateway": "gw-a", **SMOKE}
        )
        assert same.status_code == 200, same.text
        assert (await _config(http, "gw-a"))["version"] == 1, "an identical device is no change"

        refusals: dict[str, tuple[dict[str, Any], str]] = {
            "address": (
                {**SMOKE, "address": "ble://AA:BB:CC:DD:EE:FF"},
                "fh-b3-smoke-02 is a "
                "modbus-rtu device (anju-smoke-mb): its address must be modbus-rtu:// or "
                "modbus-tcp://, not ble://",
            ),
            "profile": ({**SMOKE, "profile": "anju-smok-mb"}, "closest: anju-smoke-mb"),
            "egress": ({**SMOKE, "egress": True}, "fire_release"),
            "resident": ({**SMOKE, "resident_id": 987654}, "no resident 987654"),
        }
        for what, (body, reason) in refusals.items():
            refused = await http.post(
                "/devices", json={"id": "fh-b3-smoke-02", "gateway": "gw-a", **body}
            )
            assert refused.status_code == 422, (what, refused.text)
            assert reason in refused.json()["detail"], (what, refused.text)
        assert (await _config(http, "gw-a"))["version"] == 1

        moved = await http.patch("/devices/fh-b3-smoke-01", json={"gateway": "gw-b", "unit": "2"})
        assert moved.status_code == 200, moved.text
        assert (moved.json()["gateway_id"], moved.json()["unit"]) == ("gw-b", "2")
        left, joined = await _config(http, "gw-a"), await _config(http, "gw-b")
        assert (left["version"], left["document"]["devices"]) == (2, [])
        assert joined["version"] == 1
        assert joined["document"]["devices"][0]["unit"] == "2"

        removed = await http.delete("/devices/fh-b3-smoke-01")
        assert (removed.status_code, removed.json()["status"]) == (200, "disabled")
        gone = await _config(http, "gw-b")
        assert (gone["version"], gone["document"]["devices"]) == (2, [])
        assert (await http.delete("/devices/fh-b3-smoke-01")).status_code == 200
        assert (await _config(http, "gw-b"))["version"] == 2, "removing twice is no change"

        async with api_client(api.app, api.away) as away:
            hidden = await away.post("/devices", json={"id": "x-1", "gateway": "gw-a", **SMOKE})
            assert hidden.status_code == 404, hidden.text


async def test_an_import_reports_every_bad_row_and_writes_only_when_asked(
    conn: AsyncConnection[Any], database_url: str
) -> None:
    api = await _api(conn, database_url, None)
    await _gateways(conn, "gw-a")
    rows = [
        {"id": "d-1", **SMOKE},
        {"id": "d-2", **SMOKE, "address": "ble://AA:BB:CC:DD:EE:FF"},
        {"id": "d-3", **SMOKE, "building": ""},
        {"id": "d-4", **SMOKE, "profile": "anju-door-mb", "egress": True},
        {"id": "D 5", **SMOKE},
        {"id": "d-1", **SMOKE},
    ]
    async with api_client(api.app, api.installer) as http:
        url = "/gateways/gw-a/devices/import"
        refused = await http.post(url, json={"devices": rows})
        assert refused.status_code == 200, refused.text
        report = refused.json()
        assert [(b["index"], b["field"]) for b in report["bad"]] == [
            (1, "address"),
            (2, "building"),
            (4, "id"),
            (5, "id"),
        ]
        assert (report["imported"], report["config_version"]) == (0, 0)

        dry = (
            await http.post(url, json={"devices": rows, "dry_run": True, "skip_bad": True})
        ).json()
        assert (dry["imported"], dry["dry_run"], len(dry["bad"])) == (2, True, 4)
        assert (await http.get("/devices", params={"gateway_id": "gw-a"})).json()["items"] == []

        done = (await http.post(url, json={"devices": rows, "skip_bad": True})).json()
        assert (done["imported"], done["config_version"]) == (2, 1)
        listed = (await http.get("/devices", params={"gateway_id": "gw-a"})).json()["items"]
        assert [(d["id"], d["egress"]) for d in listed] == [("d-1", False), ("d-4", True)]
        config = await _config(http, "gw-a")
        assert set(config["document"]["profiles"]) == {"anju-smoke-mb", "anju-door-mb"}


async def test_health_tells_the_server_clock(conn: AsyncConnection[Any], database_url: str) -> None:
    api = await _api(conn, database_url, None)
    async with api_client(api.app) as http:
        health = (await http.get("/health")).json()
    assert health["status"] == "ok"
    time = datetime.fromisoformat(health["time"])
    assert time.utcoffset() == UTC.utcoffset(None)
    assert time.microsecond % 1000 == 0, "milliseconds, as the wire's timestamps"
