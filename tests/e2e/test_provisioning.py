"""An installer's visit end to end: ``anju provision`` and ``anju device add`` against
the real cloud, a gateway agent started from the config they wrote, and the broker
following the registry.

Everything is real: PostgreSQL, ``run_cloud`` (ingest over TLS with the cloud's own
account, the API, the config pusher), the TLS + dynamic-security Mosquitto of
``tests.brokers``, ``anju edge run`` as a separate process, and a simulated Modbus TCP
smoke detector. The commands run as processes, as on the box.

Password gateway: provisioned, its readings land; its credentials are then replaced
in the cloud behind its back, so the broker refuses it and its readings wait in the
spool; ``anju provision rotate`` on the box writes new ones, the running agent picks
them up, and every reading arrives, none lost; the old password is refused. Revoked,
it cannot connect. Certificate gateway: its key made on the box, its readings land;
revoked, nothing it publishes is taken.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import psycopg
import pytest
import yaml

from anju.services.ports import free_port
from anju.services.tls import IssuedCertificate
from cloud.app import run_cloud
from cloud.auth.roles import Role
from cloud.registry import register_community
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.smoke_detector import SmokeDetector
from tests.api_support import bearer, make_key
from tests.brokers import (
    BAD_CREDENTIALS,
    CONNECTED,
    NOT_AUTHORIZED,
    MqttProbe,
    SecureBroker,
    secure_broker,  # noqa: F401
)
from tests.e2e.support import cloud_settings, query_rows
from tests.installer_support import ANJU, anju
from tests.waiting import until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COMMUNITY = "xijin/fenghuang"
WAIT_S = 60.0


class ChangingDetector(SmokeDetector):
    """A detector whose temperature moves 1 °C at every read, past the profile's
    deadband, so every poll makes a reading (a steady one would report no change)."""

    def input_registers(self) -> dict[int, int]:
        self.set_temperature(10 + (self.temperature_c - 9) % 50)
        return super().input_registers()


@dataclass
class Visit:
    """One gateway box being installed: its config, the installer's shell, the cloud."""

    gateway: str
    config: Path
    env: dict[str, str]
    api: httpx.AsyncClient
    database_url: str
    broker: SecureBroker
    metrics_port: int
    device: str

    async def seqs(self) -> list[int]:
        """Every seq of the device stored by the cloud (readings and events), by seq."""
        rows = await query_rows(
            self.database_url,
            "SELECT seq FROM readings WHERE device_id = %s"
            " UNION SELECT seq FROM events WHERE device_id = %s ORDER BY 1",
            self.device,
            self.device,
        )
        return [int(seq) for (seq,) in rows]

    async def stored_through(self, seq: int) -> bool:
        stored = await self.seqs()
        return bool(stored) and stored[-1] >= seq

    async def metric(self, name: str) -> float:
        """One unlabelled metric of the running agent (``anju_edge_...``)."""
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics")).text
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        raise AssertionError(f"no metric {name} in:\n{text}")

    def written(self) -> dict[str, Any]:
        document: dict[str, Any] = yaml.safe_load(self.config.read_text())
        return document


@asynccontextmanager
async def visit(
    broker: SecureBroker,
    database_url: str,
    tmp_path: Path,
    unique_id: Callable[[str], str],
) -> AsyncIterator[Visit]:
    """The cloud running, an installer key for the community, and a box whose config
    already holds settings of its own (kept by provisioning) and its one device."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await register_community(conn, COMMUNITY)
        key = await make_key(conn, role=Role.INSTALLER, scope=COMMUNITY)
    settings = cloud_settings(
        database_url,
        broker.service_url,
        unique_id,
        provisioning={
            "admin_url": broker.admin_url,
            "admin_ca_file": str(broker.ca_file),
            "gateway_url": broker.gateway_url,
            "gateway_cert_url": broker.certificate_url,
            "server_ca_file": str(broker.ca_file),
            "client_ca_cert_file": str(broker.client_ca.cert_path),
            "client_ca_key_file": str(broker.client_ca.key_path),
        },
        mqtt_tls={"ca_file": str(broker.ca_file)},
    )
    gateway = unique_id("gw")
    metrics_port = free_port()
    stop, started = asyncio.Event(), asyncio.Event()
    url = f"http://{settings.api.host}:{settings.api.port}"
    async with (
        ModbusSimServer({1: ChangingDetector()}) as sim,
        asyncio.TaskGroup() as tasks,
        httpx.AsyncClient(base_url=url, headers=bearer(key)) as api,
    ):
        tasks.create_task(run_cloud(settings, stop=stop, started=started), name="cloud")
        await asyncio.wait_for(started.wait(), timeout=WAIT_S)
        device = f"{gateway}-smoke"
        config = tmp_path / "etc" / "gateway.yaml"
        config.parent.mkdir()
        config.write_text(
            yaml.safe_dump(
                {
                    "telemetry_linger_s": 0.2,
                    "metrics_port": metrics_port,
                    "devices": [
                        {
                            "id": device,
                            "profile": "anju-smoke-mb",
                            "address": f"{sim.url}?unit=1",
                            "building": "1",
                            "unit": "101",
                        }
                    ],
                }
            )
        )
        (tmp_path / "state").mkdir()
        try:
            yield Visit(
                gateway=gateway,
                config=config,
                env={"ANJU_API_KEY": key, "ANJU_CLOUD_URL": url},
                api=api,
                database_url=database_url,
                broker=broker,
                metrics_port=metrics_port,
                device=device,
            )
        finally:
            stop.set()


@asynccontextmanager
async def agent(config: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``anju edge run --config`` as the service runs it, stopped with SIGTERM after;
    its log is printed then (pytest shows it for a failed test)."""
    process = await asyncio.create_subprocess_exec(
        *ANJU, "edge", "run", "--config", str(config),
        env={**os.environ, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        if process.stdout is not None:
            # Shown by pytest when the test fails: what the agent logged.
            print((await process.stdout.read()).decode(errors="replace"))


async def provision(box: Visit, tmp_path: Path, *more: str) -> None:
    """``anju provision gateway`` and ``anju device add`` for the box's device."""
    done = await anju(
        "provision", "gateway", "--community", COMMUNITY, "--name", box.gateway,
        "--config", str(box.config), "--state-dir", str(tmp_path / "state"), *more,
        env=box.env,
    )  # fmt: skip
    assert done.code == 0, done
    assert "next: add its devices" in done.stdout, done
    assert box.config.stat().st_mode & 0o777 == 0o600
    written = box.written()
    assert written["metrics_port"] == box.metrics_port, "provisioning keeps the other keys"
    assert [device["id"] for device in written["devices"]] == [box.device]
    device = written["devices"][0]
    added = await anju(
        "device", "add", "--gateway", box.gateway, "--id", box.device,
        "--profile", device["profile"], "--address", device["address"],
        "--location", "1/101",
        env=box.env,
    )  # fmt: skip
    assert added.code == 0, added


async def test_password_gateway_rotated_with_nothing_lost_then_revoked(
    secure_broker: SecureBroker,  # noqa: F811
    database_url: str,
    tmp_path: Path,
    unique_id: Callable[[str], str],
) -> None:
    async with visit(secure_broker, database_url, tmp_path, unique_id) as box:
        await provision(box, tmp_path)
        again = await anju(
            "provision", "gateway", "--community", COMMUNITY, "--name", box.gateway,
            "--config", str(box.config), "--json",
            env=box.env,
        )  # fmt: skip
        assert (again.code, again.json()["created"]) == (0, False), again
        assert box.written()["state_dir"] == str(tmp_path / "state"), "re-running keeps it"

        async with agent(box.config) as process:
            await until("readings land", WAIT_S, lambda: box.stored_through(3))

            # The gateway's credentials are replaced in the cloud, never reaching the box:
            # the broker drops and refuses it, and its readings wait in the spool.
            elsewhere = await box.api.post(
                f"/gateways/{box.gateway}/credentials", json={"auth": "password"}
            )
            assert elsewhere.status_code == 200, elsewhere.text
            failures = "anju_edge_uplink_connection_failures_total"
            await until("the broker refuses the box", WAIT_S, _at_least(box, failures, 1))
            waiting = "anju_edge_spool_oldest_unsent_age_seconds"
            await until("readings wait in the spool", WAIT_S, _at_least(box, waiting, 2.0))
            stale = box.written()["broker"]

            rotated = await anju("provision", "rotate", "--config", str(box.config), env=box.env)
            assert rotated.code == 0, rotated
            assert "no restart needed" in rotated.stdout, rotated
            after = max(await box.seqs())
            assert box.written()["broker"] != stale

            # Every reading, those that waited in the spool included, arrives once.
            await until(
                f"every seq through {after + 10} stored, none missing",
                WAIT_S,
                lambda: _unbroken_through(box, after + 10),
            )
            stored = await box.seqs()
            assert stored == list(range(1, stored[-1] + 1)), "a reading was lost"
            assert process.returncode is None, "the agent kept running through the rotation"

        stale_password = _password(stale)
        async with MqttProbe(secure_broker, username=box.gateway, password=stale_password) as old:
            assert await old.connect() in (BAD_CREDENTIALS, NOT_AUTHORIZED)
        current = _password(box.written()["broker"])
        async with MqttProbe(secure_broker, username=box.gateway, password=current) as new:
            assert await new.connect() == CONNECTED

        revoked = await anju("provision", "revoke", "--gateway", box.gateway, "--yes", env=box.env)
        assert revoked.code == 0, revoked
        async with MqttProbe(secure_broker, username=box.gateway, password=current) as cut:
            assert await cut.connect() in (BAD_CREDENTIALS, NOT_AUTHORIZED)
        reused = await anju(
            "provision", "gateway", "--community", COMMUNITY, "--name", box.gateway,
            "--config", str(box.config),
            env=box.env,
        )  # fmt: skip
        assert (reused.code, "(POST /gateways: 409)" in reused.stderr) == (1, True), reused


async def test_certificate_gateway_publishes_then_is_cut_off(
    secure_broker: SecureBroker,  # noqa: F811
    database_url: str,
    tmp_path: Path,
    unique_id: Callable[[str], str],
) -> None:
    async with visit(secure_broker, database_url, tmp_path, unique_id) as box:
        await provision(box, tmp_path, "--auth", "certificate")
        written = box.written()
        key_file, cert_file = Path(written["tls_key_file"]), Path(written["tls_cert_file"])
        assert os.stat(key_file).st_mode & 0o777 == 0o600
        assert "@" not in written["broker"], "a certificate gateway has no password"
        assert f":{secure_broker.certificate_port}" in written["broker"]
        async with agent(box.config):
            await until("readings land", WAIT_S, lambda: box.stored_through(3))

        revoked = await anju("provision", "revoke", "--config", str(box.config), "--yes",
                             env=box.env)  # fmt: skip
        assert revoked.code == 0, revoked
        certificate = IssuedCertificate(cert_path=cert_file, key_path=key_file)
        async with MqttProbe(secure_broker, certificate=certificate) as cut:
            await cut.connect()
            topic = f"anju/v1/{COMMUNITY}/{box.gateway}/telemetry"
            assert await cut.publish(topic) == NOT_AUTHORIZED


def _at_least(box: Visit, name: str, value: float) -> Callable[[], Any]:
    async def check() -> bool:
        return await box.metric(name) >= value

    return check


async def _unbroken_through(box: Visit, seq: int) -> bool:
    """Whether every seq from 1 through ``seq`` or past is stored (batches may commit
    out of order for a moment)."""
    stored = await box.seqs()
    return bool(stored) and stored[-1] >= seq and stored == list(range(1, stored[-1] + 1))


def _password(url: str) -> str:
    return unquote(urlsplit(url).password or "")
