"""Installers' device tests in the database (``queries/device_tests.sql``): asked for by
the API, sent and answered through the config pusher.

Why the request goes through the database rather than straight from the API to the
broker: the API and the pusher may be different processes (``anju cloud run`` holds
both, but ``anju cloud configs`` runs the pusher beside separate API processes), and
only the pusher holds the cloud's MQTT link to the gateways and hears their command
results. A row is the one thing both see: the API inserts it and waits for it to be
finished (``wait_for_answer``), the pusher claims it with SKIP LOCKED so one worker of
many sends it (``claim_requests``), and whichever worker hears the gateway's answer
records it (``record_answer``). The row also keeps who read which device when.

Every function raises StorageError (``StorageUnavailable`` when retrying may help)
naming the query; ``request_test`` raises DeviceTestRefused too.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from cloud.configs.device_tests import ReadAnswer, ReadRequest
from cloud.configs.errors import DeviceTestRefused
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries

POLL_S: Final = 0.1
"""How often ``wait_for_answer`` looks at the row: a tenth of a second adds little to a
read that takes tens of milliseconds on the bus and a few more on the broker."""


@dataclass(frozen=True, slots=True)
class DeviceTest:
    """One test request as it stands; ``finished_at`` is None until it is answered."""

    id: int
    device: str
    gateway: str
    requested_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None
    ok: bool | None
    detail: str | None
    data: dict[str, Any] | None


async def request_test(
    conn: AsyncConnection[Any],
    device: str,
    *,
    key_id: int,
    timeout_s: float,
    gateway: str | None = None,
) -> DeviceTest:
    """Ask for a test of ``device`` through its gateway, answered within ``timeout_s``.

    ``gateway``, when given, is the gateway the installer expects the device behind.
    Raises DeviceTestRefused when the device is removed (disabled), its gateway is
    revoked, or it is behind another gateway than ``gateway``; the caller checks
    beforehand that the device exists and is in reach.
    """
    params = {"device": device, "key_id": key_id, "timeout_s": timeout_s, "gateway": gateway}
    with storage_errors("device_tests_request"):
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(queries()["device_tests_request"], params)
        made = await cur.fetchone()
    if made is None:
        raise await _refusal(conn, device, gateway)
    return await get_test(conn, int(made["id"]))


async def _refusal(
    conn: AsyncConnection[Any], device: str, gateway: str | None
) -> DeviceTestRefused:
    with storage_errors("device_tests_refusal"):
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(queries()["device_tests_refusal"], {"device": device})
        row = await cur.fetchone()
    if row is None:
        return DeviceTestRefused(device, gateway, "no such device")
    behind = str(row["gateway"])
    if row["device_status"] != "active":
        reason = f"it is removed ({row['device_status']}); add it again to test it"
    elif row["gateway_status"] != "active":
        reason = f"its gateway {behind} is {row['gateway_status']}"
    else:
        reason = f"it is behind {behind}, not {gateway}"
    return DeviceTestRefused(device, behind, reason)


async def get_test(conn: AsyncConnection[Any], test_id: int) -> DeviceTest:
    """The request ``test_id`` as it stands now (it must exist)."""
    with storage_errors("device_tests_get"):
        cur = conn.cursor(row_factory=class_row(DeviceTest))
        await cur.execute(queries()["device_tests_get"], {"id": test_id})
        found = await cur.fetchone()
    assert found is not None, f"device test {test_id} vanished"
    return found


async def wait_for_answer(
    conn: AsyncConnection[Any], test_id: int, *, timeout_s: float, poll_s: float = POLL_S
) -> DeviceTest:
    """The request once it is answered, or as it stands after ``timeout_s`` seconds.

    Looks at the row every ``poll_s``: the answer is recorded by a pusher that may run
    in another process. A request still unfinished at the end says by ``sent_at``
    whether it left for the gateway.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        test = await get_test(conn, test_id)
        left_s = deadline - time.monotonic()
        if test.finished_at is not None or left_s <= 0:
            return test
        await asyncio.sleep(min(poll_s, left_s))


async def claim_requests(conn: AsyncConnection[Any], *, limit: int) -> list[ReadRequest]:
    """Claim up to ``limit`` requests not yet sent and not expired, stamped ``sent_at``.

    Run it in the transaction that publishes them: when publishing fails, the rollback
    leaves them unsent for the next round (until they expire).
    """
    with storage_errors("device_tests_claim"):
        cur = conn.cursor(row_factory=class_row(ReadRequest))
        await cur.execute(queries()["device_tests_claim"], {"limit": limit})
        return await cur.fetchall()


async def record_answer(conn: AsyncConnection[Any], answer: ReadAnswer) -> bool:
    """Record the gateway's answer on its request; False when the request was answered
    before (a repeat) or is not that gateway's under that community."""
    params = {
        "id": answer.request_id,
        "gateway": answer.gateway,
        "community": answer.community,
        "ok": answer.ok,
        "detail": answer.detail,
        "data": Jsonb(answer.data),
    }
    with storage_errors("device_tests_record"):
        cur = await conn.execute(queries()["device_tests_record"], params)
    return cur.rowcount > 0
