"""The installer's changes lock a gateway before any of its devices (registry.sql).

An add locks the gateway, then the device; a removal or a move that locked the device
first and then waited for the gateway would deadlock against it, and PostgreSQL would
abort one of them (a 503 to an installer who did nothing wrong). Each test holds the
gateway's row from a third connection, starts the change, and checks that while the
change waits the device's row is still free: the change has not locked it yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg import AsyncConnection

from anju.commands.common import profile_root
from cloud import registry
from cloud.registry import DeviceSpec, register_community, register_gateway
from schemas.profile import DeviceProfile, load_profiles

COMMUNITY = "xijin/fenghuang"
HOME, OTHER = "gw-lock-a", "gw-lock-b"
DEVICE = "fh-lock-smoke-01"
WAITING_S = 0.5
"""Long enough for a change to reach the lock it waits on; its later locks come after."""

Change = Callable[[AsyncConnection[Any], dict[str, DeviceProfile]], Coroutine[Any, Any, object]]


@pytest_asyncio.fixture
async def placed(database_url: str) -> AsyncIterator[dict[str, DeviceProfile]]:
    """Two gateways of one community and a smoke detector behind the first."""
    profiles = load_profiles(profile_root())
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await register_community(conn, COMMUNITY)
        for gateway in (HOME, OTHER):
            await register_gateway(conn, gateway, COMMUNITY)
        spec = DeviceSpec(DEVICE, "anju-smoke-mb", "modbus-tcp://10.0.0.5:502?unit=1", "1", "101")
        await registry.add_device(conn, spec, gateway_id=HOME, profiles=profiles)
    yield profiles


async def _remove(conn: AsyncConnection[Any], profiles: dict[str, DeviceProfile]) -> object:
    return await registry.remove_device(conn, DEVICE, profiles=profiles)


async def _move_away(conn: AsyncConnection[Any], profiles: dict[str, DeviceProfile]) -> object:
    return await registry.move_device(conn, DEVICE, profiles=profiles, gateway_id=OTHER)


async def _readdress(conn: AsyncConnection[Any], profiles: dict[str, DeviceProfile]) -> object:
    return await registry.move_device(
        conn, DEVICE, profiles=profiles, address="modbus-tcp://10.0.0.5:502?unit=2"
    )


@pytest.mark.parametrize("change", [_remove, _move_away, _readdress], ids=lambda c: c.__name__)
async def test_a_change_waits_for_the_gateway_before_it_locks_the_device(
    database_url: str, placed: dict[str, DeviceProfile], change: Change
) -> None:
    connect = psycopg.AsyncConnection.connect
    async with (
        await connect(database_url) as holder,
        await connect(database_url, autocommit=True) as changer,
        await connect(database_url) as prober,
    ):
        await holder.execute("SELECT 1 FROM gateways WHERE id = %s FOR UPDATE", [HOME])
        task = asyncio.create_task(change(changer, placed))
        try:
            await asyncio.sleep(WAITING_S)
            assert not task.done(), "the change did not wait for the gateway's row"
            cur = await prober.execute(
                "SELECT id FROM devices WHERE id = %s FOR UPDATE NOWAIT", [DEVICE]
            )
            assert await cur.fetchall() == [(DEVICE,)]
            await prober.rollback()
        finally:
            await holder.rollback()
            await asyncio.wait_for(task, timeout=10)
    async with await connect(database_url) as conn:
        cur = await conn.execute("SELECT config_version FROM gateways WHERE id = %s", [HOME])
        assert await cur.fetchone() == (2,), "the change made no new config version"


async def test_an_add_and_a_removal_of_one_device_both_finish(
    database_url: str, placed: dict[str, DeviceProfile]
) -> None:
    """Many rounds of the race the lock order prevents: none is aborted as a deadlock."""
    spec = DeviceSpec(DEVICE, "anju-smoke-mb", "modbus-tcp://10.0.0.5:502?unit=3", "1", "101")
    connect = psycopg.AsyncConnection.connect
    async with (
        await connect(database_url, autocommit=True) as adder,
        await connect(database_url, autocommit=True) as remover,
    ):
        for _ in range(50):
            await asyncio.gather(
                registry.add_device(adder, spec, gateway_id=HOME, profiles=placed),
                _remove(remover, placed),
            )
