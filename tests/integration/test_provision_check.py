"""``anju provision check`` on a simulated site: what an installer sees on the box.

The site is real throughout: the gateway is provisioned by ``anju provision gateway``
against the API (uvicorn, PostgreSQL) and the TLS + dynamic-security broker of
``tests.brokers``; its devices are registered by ``anju device import`` and reach the
box as the config the cloud keeps for it (written where the agent stores a pushed
config). Two smoke detectors are simulated Modbus TCP devices; the third is
deliberately dead (nothing listens at its port). The check then runs as a process,
once with the box's clock right and once ten minutes ahead (``faketime``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from anju.services.ports import free_port
from cloud.auth.roles import Role
from cloud.registry import register_community
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.smoke_detector import SmokeDetector
from tests.api_support import bearer, make_key
from tests.brokers import SecureBroker, secure_broker  # noqa: F401
from tests.installer_support import Run, anju, api_settings, serving_api

pytestmark = pytest.mark.slow

COMMUNITY = "xijin/fenghuang"


def provisioning(broker: SecureBroker) -> dict[str, str]:
    """The API's broker settings (``ANJU_BROKER_*``) for the test broker."""
    return {
        "admin_url": broker.admin_url,
        "admin_ca_file": str(broker.ca_file),
        "gateway_url": broker.gateway_url,
        "gateway_cert_url": broker.certificate_url,
        "server_ca_file": str(broker.ca_file),
        "client_ca_cert_file": str(broker.client_ca.cert_path),
        "client_ca_key_file": str(broker.client_ca.key_path),
    }


def rows(run: Run) -> dict[str, tuple[str, str]]:
    """The check's rows by name: (result, detail)."""
    return {row["check"]: (row["result"], row["detail"]) for row in run.json()["checks"]}


async def test_check_table_shows_a_dead_device_and_a_clock_ten_minutes_ahead(
    secure_broker: SecureBroker,  # noqa: F811
    database_url: str,
    tmp_path: Path,
    unique_id: Callable[[str], str],
) -> None:
    faketime = shutil.which("faketime")
    assert faketime, "faketime not found: run scripts/test, which installs it"
    gateway = unique_id("gw")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await register_community(conn, COMMUNITY)
        key = await make_key(conn, role=Role.INSTALLER, scope=COMMUNITY)
    settings = api_settings(database_url, provisioning=provisioning(secure_broker))
    config = tmp_path / "etc" / "gateway.yaml"
    config.parent.mkdir()
    config.write_text("spool_budget_mb: 1\ntelemetry_linger_s: 0.2\n")
    state = tmp_path / "state"
    state.mkdir()
    dead = f"modbus-tcp://127.0.0.1:{free_port()}?unit=1"
    async with (
        serving_api(settings) as url,
        ModbusSimServer({1: SmokeDetector(), 2: SmokeDetector()}) as sim,
    ):
        env = {"ANJU_API_KEY": key, "ANJU_CLOUD_URL": url}
        provisioned = await anju(
            "provision", "gateway", "--community", COMMUNITY, "--name", gateway,
            "--config", str(config), "--state-dir", str(state),
            env=env,
        )  # fmt: skip
        assert provisioned.code == 0, provisioned
        devices = tmp_path / "devices.csv"
        devices.write_text(
            "id,profile,address,building,unit\n"
            f"{gateway}-smoke-1,anju-smoke-mb,{sim.url}?unit=1,1,101\n"
            f"{gateway}-smoke-2,anju-smoke-mb,{sim.url}?unit=2,1,102\n"
            f"{gateway}-smoke-3,anju-smoke-mb,{dead},1,103\n"
        )
        imported = await anju("device", "import", str(devices), "--gateway", gateway, env=env)
        assert imported.code == 0, imported
        async with httpx.AsyncClient(base_url=url, headers=bearer(key)) as api:
            wanted = (await api.get(f"/gateways/{gateway}/config")).raise_for_status().json()
        (state / "pushed-config.json").write_text(json.dumps(wanted["document"]))

        # Only the key reaches the cloud: the box's config says where it is.
        on_box = {"ANJU_API_KEY": key}
        right = await anju("provision", "check", "--config", str(config), "--json", env=on_box)
        ahead = await anju(
            "provision", "check", "--config", str(config), "--json",
            env=on_box, prefix=[faketime, "-f", "+10m"],
        )  # fmt: skip
        table = await anju(
            "provision", "check", "--config", str(config),
            env=on_box, prefix=[faketime, "-f", "+10m"],
        )  # fmt: skip

    assert (right.code, right.json()["ok"]) == (1, False), right
    found = rows(right)
    assert list(found) == [
        "config",
        "broker",
        "clock",
        f"device {gateway}-smoke-1",
        f"device {gateway}-smoke-2",
        f"device {gateway}-smoke-3",
        "spool",
        "config version",
    ], right
    results = {check: result for check, (result, _) in found.items()}
    assert results == {
        "config": "pass",
        "broker": "pass",
        "clock": "pass",
        f"device {gateway}-smoke-1": "pass",
        f"device {gateway}-smoke-2": "pass",
        f"device {gateway}-smoke-3": "fail",
        "spool": "pass",
        "config version": "pass",
    }, right
    assert "over TLS with the password" in found["broker"][1]
    assert dead.split("?")[0].removeprefix("modbus-tcp://") in found[f"device {gateway}-smoke-3"][1]
    assert found["config version"][1] == "runs version 1, the cloud's latest"

    shifted = rows(ahead)
    assert shifted["clock"][0] == "fail", ahead
    offset = float(shifted["clock"][1].split(" s ")[0])
    assert 590 < offset < 610, shifted["clock"]
    assert "ahead of the cloud's" in shifted["clock"][1]
    assert {check: result for check, (result, _) in shifted.items()} == {
        **results,
        "clock": "fail",
    }, ahead

    assert table.code == 1, table
    lines = table.stdout.splitlines()
    clock = next(line for line in lines if "│ clock" in line)
    assert "fail" in clock, table
    assert "ahead of the cloud's" in clock, table
    assert "timedatectl set-ntp true" in clock, table
    dead_row = next(line for line in lines if f"{gateway}-smoke-3" in line)
    assert "fail" in dead_row, table
    assert "2 check(s) failed" in table.stdout, table
