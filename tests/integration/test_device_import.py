"""``anju device import|add|list|move|remove`` as an installer runs them: a process
talking over HTTP to the real API (uvicorn, PostgreSQL), with an installer key.

The import file mixes good rows with rows bad for every reason the command line finds
on its own (an unknown profile, a Modbus detector at a BLE address, a misspelt address
parameter, an egress flag on a smoke detector, a repeated id, a value that is not a
number) and one only the cloud can find (a resident who does not exist), with a blank
line and a quoted field spanning two lines so that line numbers are the file's.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from cloud.auth.roles import Role
from cloud.registry import register_community, register_gateway
from cloud.residents import records
from cloud.residents.crypto import Keyring
from tests.api_support import make_key
from tests.installer_support import anju, api_settings, serving_api

COMMUNITY = "xijin/fenghuang"
OTHER = "hexi/binhe"
GATEWAY = "gw-fh-imp"
GOOD = ["fh-b1-smoke-01", "fh-b1-door-01", "fh-b1-band-01", "fh-b1-smoke-06"]


@dataclass(frozen=True)
class Site:
    database_url: str
    env: dict[str, str]
    resident: int

    async def devices(self) -> dict[str, tuple[Any, ...]]:
        """The devices behind the gateway: (status, building, unit, address, resident)."""
        async with await psycopg.AsyncConnection.connect(self.database_url) as conn:
            cur = await conn.execute(
                "SELECT id, status, building, unit, address, resident_id FROM devices "
                "WHERE gateway_id = %s",
                [GATEWAY],
            )
            return {row[0]: row[1:] for row in await cur.fetchall()}

    async def config_version(self, gateway: str = GATEWAY) -> int:
        async with await psycopg.AsyncConnection.connect(self.database_url) as conn:
            cur = await conn.execute("SELECT config_version FROM gateways WHERE id = %s", [gateway])
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])


@pytest_asyncio.fixture
async def site(database_url: str) -> AsyncIterator[Site]:
    """A community with a gateway and a resident, an installer key scoped to it, and the
    API serving; ``env`` is what the installer's shell holds."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        node = await register_community(conn, COMMUNITY)
        await register_community(conn, OTHER)
        await register_gateway(conn, GATEWAY, COMMUNITY)
        await register_gateway(conn, "gw-fh-imp2", COMMUNITY)
        resident = await records.register(
            conn,
            Keyring.from_keys([("k1", os.urandom(32))]),
            community_id=node.id,
            reference="ref-imp",
            building="1",
            unit="105",
        )
        key = await make_key(conn, role=Role.INSTALLER, scope=COMMUNITY, name="installer-imp")
    async with serving_api(api_settings(database_url)) as url:
        yield Site(database_url, {"ANJU_API_KEY": key, "ANJU_CLOUD_URL": url}, resident.id)


def import_file(tmp_path: Path, resident: int) -> Path:
    lines = [
        "ID,Profile,Address,Building,Unit,Resident,Egress,Poll_Interval_S",  # 1
        "fh-b1-smoke-01,anju-smoke-mb,modbus-tcp://10.0.0.5:502?unit=1,1,101,,,",  # 2 good
        "fh-b1-smoke-02,anju-smoke-mb,ble://F0:A1:00:00:00:01,1,102,,,",  # 3 BLE address
        "fh-b1-smoke-03,anju-smok-mb,modbus-tcp://10.0.0.5:502?unit=3,1,103,,,",  # 4 profile
        "",  # 5 blank
        "fh-b1-door-01,anju-door-mb,modbus-tcp://10.0.0.6:502?unit=1,1,lobby,,true,0.5",  # 6 good
        "fh-b1-smoke-04,anju-smoke-mb,modbus-tcp://10.0.0.5:502?unit=4&unti=2,1,104,,,",  # 7
        f"fh-b1-band-01,anju-wearable-ble,ble://F0:A1:00:00:00:07,1,105,{resident},,",  # 8 good
        "fh-b1-band-02,anju-wearable-ble,ble://F0:A1:00:00:00:08,1,106,999999,,",  # 9 resident
        "fh-b1-smoke-05,anju-smoke-mb,modbus-tcp://10.0.0.5:502?unit=5,1,107,,true,",  # 10
        'fh-b1-smoke-06,anju-smoke-mb,"modbus-tcp://10.0.0.5:502?unit=6",1,"108',  # 11 good,
        '",,,',  # 12 ... its unit ends on this line
        "fh-b1-smoke-01,anju-smoke-mb,modbus-tcp://10.0.0.5:502?unit=7,1,109,,,",  # 13 twice
        "fh-b1-smoke-08,anju-smoke-mb,modbus-tcp://10.0.0.5:502?unit=8,1,110,,,often",  # 14
    ]
    path = tmp_path / "devices.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


EXPECTED_BAD = {
    (3, "address"): "its address must be modbus-rtu:// or modbus-tcp://, not ble://",
    (4, "profile"): "did you mean: anju-smoke-mb",
    (7, "address"): "unti",
    (9, "resident"): "999999",
    (10, "egress"): "no fire_release action",
    (13, "id"): "appears again (first on line 2)",
    (14, "poll_interval_s"): "not a number",
}


def assert_bad_rows(bad: list[dict[str, Any]]) -> None:
    found = {(row["line"], row["column"]): row["reason"] for row in bad}
    assert set(found) == set(EXPECTED_BAD), found
    for where, words in EXPECTED_BAD.items():
        assert words in found[where], (where, found[where])


@pytest.mark.slow
async def test_import_reports_every_bad_row_and_imports_only_when_asked(
    site: Site, tmp_path: Path
) -> None:
    path = import_file(tmp_path, site.resident)
    args = ("device", "import", str(path), "--gateway", GATEWAY)

    dry = await anju(*args, "--dry-run", env=site.env)
    assert dry.code == 1, dry
    for line, column in EXPECTED_BAD:
        assert f"line {line}, column {column}: " in dry.stderr, dry
    assert "dry run: 11 row(s), 7 bad, 4 good; nothing imported" in dry.stdout, dry
    dry_json = await anju(*args, "--dry-run", "--json", env=site.env)
    assert (dry_json.code, dry_json.json()["imported"]) == (1, 0), dry_json
    assert_bad_rows(dry_json.json()["bad"])
    assert await site.devices() == {}

    plain = await anju(*args, "--json", env=site.env)
    assert (plain.code, plain.json()["ok"], plain.json()["imported"]) == (1, False, 0), plain
    assert_bad_rows(plain.json()["bad"])
    assert await site.devices() == {}
    assert await site.config_version() == 0

    skipping = await anju(*args, "--skip-bad", env=site.env)
    assert skipping.code == 0, skipping
    assert "imported 4 device(s) behind gw-fh-imp; skipped 7 bad row(s)" in skipping.stdout
    devices = await site.devices()
    assert sorted(devices) == sorted(GOOD)
    assert devices["fh-b1-smoke-06"][1:4] == ("1", "108", "modbus-tcp://10.0.0.5:502?unit=6")
    assert devices["fh-b1-band-01"][4] == site.resident
    assert await site.config_version() == 1


async def test_add_is_checked_here_before_any_request(tmp_path: Path) -> None:
    # Nothing listens at this URL: the local check must refuse before any request.
    env = {"ANJU_API_KEY": "anju_x_y", "ANJU_CLOUD_URL": "http://127.0.0.1:9"}
    refused = await anju(
        "device", "add", "--gateway", GATEWAY, "--id", "fh-b1-smoke-09",
        "--profile", "anju-smoke-mb", "--address", "ble://F0:A1:00:00:00:09",
        "--location", "1/101", "--config", str(tmp_path / "none.yaml"),
        env=env,
    )  # fmt: skip
    assert refused.code == 1, refused
    assert (
        "error: --address: fh-b1-smoke-09 is a modbus-rtu device (anju-smoke-mb): its address "
        "must be modbus-rtu:// or modbus-tcp://, not ble://" in refused.stderr
    ), refused
    assert "cannot reach" not in refused.stderr


@pytest.mark.slow
async def test_add_list_move_remove(site: Site, tmp_path: Path) -> None:
    added = await anju(
        "device", "add", "--gateway", GATEWAY, "--id", "fh-b1-smoke-01",
        "--profile", "anju-smoke-mb", "--address", "modbus-tcp://10.0.0.5:502?unit=1",
        "--location", "1/101", "--json",
        env=site.env,
    )  # fmt: skip
    assert added.code == 0, added
    assert added.json()["device"]["address"] == "modbus-tcp://10.0.0.5:502?unit=1"
    again = await anju(
        "device", "add", "--gateway", GATEWAY, "--id", "fh-b1-smoke-01",
        "--profile", "anju-smoke-mb", "--address", "modbus-tcp://10.0.0.5:502?unit=1",
        "--location", "1/101",
        env=site.env,
    )  # fmt: skip
    assert again.code == 0, again
    assert await site.config_version() == 1, "adding the same device again changes nothing"

    listed = await anju("device", "list", "--gateway", GATEWAY, env=site.env)
    assert listed.code == 0, listed
    assert "fh-b1-smoke-01" in listed.stdout
    assert "building 1 unit 101" in listed.stdout

    moved = await anju(
        "device", "move", "fh-b1-smoke-01", "--location", "2/201",
        "--address", "modbus-tcp://10.0.0.7:502?unit=3",
        env=site.env,
    )  # fmt: skip
    assert moved.code == 0, moved
    assert (await site.devices())["fh-b1-smoke-01"][1:4] == (
        "2",
        "201",
        "modbus-tcp://10.0.0.7:502?unit=3",
    )
    wrong = await anju(
        "device", "move", "fh-b1-smoke-01", "--address", "ble://F0:A1:00:00:00:01",
        env=site.env,
    )  # fmt: skip
    assert (wrong.code, "not ble://" in wrong.stderr) == (1, True), wrong
    nothing = await anju("device", "move", "fh-b1-smoke-01", env=site.env)
    assert (nothing.code, "nothing to change" in nothing.stderr) == (2, True), nothing

    removed = await anju("device", "remove", "fh-b1-smoke-01", "--json", env=site.env)
    assert removed.code == 0, removed
    assert removed.json()["device"]["status"] == "disabled"
    assert await site.config_version() == 3

    outside = await anju(
        "device", "add", "--gateway", "gw-elsewhere", "--id", "fh-b1-smoke-02",
        "--profile", "anju-smoke-mb", "--address", "modbus-tcp://10.0.0.5:502?unit=2",
        "--location", "1/102",
        env=site.env,
    )  # fmt: skip
    assert (outside.code, "(POST /devices: 404)" in outside.stderr) == (1, True), outside
    no_key = await anju(
        "device", "list", env={**site.env, "ANJU_API_KEY": ""},
    )  # fmt: skip
    assert (no_key.code, "no API key: set ANJU_API_KEY" in no_key.stderr) == (2, True), no_key
