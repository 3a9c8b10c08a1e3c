"""``anju cloud run`` and ``anju cloud api`` as an operator runs them, separate processes
on the real database and broker: they fail at once, in one line, when the API port is
taken, and SIGTERM stops them cleanly; the API alone serves the queue's live feed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from anju.services.ports import LOOPBACK, free_port
from cloud.auth.roles import Role
from tests.api_support import bearer, make_key, open_sos, populate

ANJU = Path(sys.executable).with_name("anju")
TIMEOUT_S = 120
"""Generous: the process is expected to end within seconds; this only bounds a hang."""


def _env(
    database_url: str, mqtt_url: str, api_port: int, unique_id: Callable[[str], str]
) -> dict[str, str]:
    return {
        **os.environ,
        "ANJU_DATABASE_URL": database_url,
        "ANJU_MQTT_URL": mqtt_url,
        "ANJU_API_PORT": str(api_port),
        "ANJU_INGEST_CLIENT_ID": unique_id("run"),
        "ANJU_INGEST_GROUP": unique_id("group"),
        # The broker forgets this test's ingest session soon after the process ends.
        "ANJU_INGEST_SESSION_EXPIRY_S": "60",
        # Log lines unwrapped, so they can be looked for.
        "COLUMNS": "1000",
    }


@pytest.mark.parametrize("command", ["run", "api"])
def test_a_taken_api_port_ends_the_process_with_one_line_naming_the_address(
    command: str, database_url: str, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(ANJU), "cloud", command],
            env=_env(database_url, mqtt_url, port, unique_id),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert (
        f"error: the API could not listen on {LOOPBACK}:{port}: Address already in use"
        in result.stderr.splitlines()
    ), output
    assert "Traceback" not in output


async def test_sigterm_stops_a_running_cloud_with_exit_code_0(
    database_url: str, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    port = free_port()
    async with _anju(_env(database_url, mqtt_url, port, unique_id), "cloud", "run") as process:
        started = await asyncio.wait_for(
            _read_until(process, [b"Uvicorn running on", b"subscribed on"]), timeout=TIMEOUT_S
        )
        rest = await _terminate(process)

    output = (started + rest).decode(errors="replace")
    assert process.returncode == 0, output
    assert "Traceback" not in output


async def test_the_api_alone_pushes_an_incident_ingest_opened_and_stops_on_sigterm(
    database_url: str, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    """No ingest and no broker in the API's process: the feed still hears the database."""
    community = f"{unique_id('street')}/{unique_id('home')}"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        ids = await populate(conn, community, unique_id("t"), wrapping_key=bytes(32))
        key = await make_key(conn, role=Role.DISPATCHER, scope=community, name=unique_id("d"))
    port = free_port()
    env = _env(database_url, mqtt_url, port, unique_id)
    del env["ANJU_MQTT_URL"]
    async with _anju(env, "cloud", "api") as process:
        started = await asyncio.wait_for(
            _read_until(process, [b"Uvicorn running on"]), timeout=TIMEOUT_S
        )
        async with (
            httpx.AsyncClient(
                base_url=f"http://{LOOPBACK}:{port}", headers=bearer(key), timeout=TIMEOUT_S
            ) as http,
            http.stream("GET", "/incidents/live") as live,
            await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn,
        ):
            assert live.status_code == 200
            lines = live.aiter_lines()
            assert await anext(lines) == "event: hello"
            # The feed hears changes once its LISTEN is up and then tells its streams to
            # resync (once): an incident opened before that is not pushed, so open
            # another.
            pushed = None
            for seq in (1, 2):
                incident_id = await open_sos(conn, ids, seq=seq)
                pushed = await asyncio.wait_for(_incident(lines, incident_id), TIMEOUT_S)
                if pushed is not None:
                    break
            listed = await http.get("/incidents")
        rest = await _terminate(process)

    output = (started + rest).decode(errors="replace")
    assert pushed is not None, "no incident pushed after the feed's resync"
    assert (pushed["status"], pushed["type"], pushed["community"]) == ("open", "fall", community)
    assert incident_id in [item["id"] for item in listed.json()["items"]]
    assert process.returncode == 0, output
    assert "Traceback" not in output


async def _incident(lines: AsyncIterator[str], incident_id: int) -> dict[str, object] | None:
    """The first ``incident`` message about ``incident_id`` on a live stream; None when
    a ``resync`` comes first."""
    event = ""
    async for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
            if event == "resync":
                return None
        elif event == "incident" and line.startswith("data: "):
            data = json.loads(line.removeprefix("data: "))
            if data["id"] == incident_id:
                return dict(data)
    raise AssertionError("the stream ended")


@asynccontextmanager
async def _anju(env: dict[str, str], *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``anju ARGS`` with its output piped; killed on the way out if still running."""
    process = await asyncio.create_subprocess_exec(
        str(ANJU), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _terminate(process: asyncio.subprocess.Process) -> bytes:
    """SIGTERM, then the rest of the output once the process has ended."""
    process.send_signal(signal.SIGTERM)
    rest, _ = await asyncio.wait_for(process.communicate(), timeout=TIMEOUT_S)
    return rest


async def _read_until(process: asyncio.subprocess.Process, markers: list[bytes]) -> bytes:
    """The output up to the line where the last of ``markers`` has been seen."""
    assert process.stdout is not None
    output = b""
    while not all(marker in output for marker in markers):
        line = await process.stdout.readline()
        assert line, f"the process ended before starting:\n{output.decode(errors='replace')}"
        output += line
    return output
