"""``anju cloud run`` as an operator runs it, a separate process on the real database and
broker: it fails at once, in one line, when its API port is taken, and SIGTERM stops it
cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from anju.services.ports import LOOPBACK, free_port

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


def test_a_taken_api_port_ends_the_run_with_one_line_naming_the_address(
    database_url: str, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(ANJU), "cloud", "run"],
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
    process = await asyncio.create_subprocess_exec(
        str(ANJU),
        "cloud",
        "run",
        env=_env(database_url, mqtt_url, port, unique_id),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        started = await asyncio.wait_for(
            _read_until(process, [b"Uvicorn running on", b"subscribed on"]), timeout=TIMEOUT_S
        )
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), timeout=TIMEOUT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    output = (started + rest).decode(errors="replace")
    assert process.returncode == 0, output
    assert "Traceback" not in output


async def _read_until(process: asyncio.subprocess.Process, markers: list[bytes]) -> bytes:
    """The output up to the line where the last of ``markers`` has been seen."""
    assert process.stdout is not None
    output = b""
    while not all(marker in output for marker in markers):
        line = await process.stdout.readline()
        assert line, f"the process ended before starting:\n{output.decode(errors='replace')}"
        output += line
    return output
