"""What the tests of the installer's commands share: the cloud's API served by a real
uvicorn on a loopback port, and ``anju`` run as a separate process, as on a laptop or a
gateway box, talking to it over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from anju.services.ports import LOOPBACK, free_port
from cloud.api.app import create_app
from cloud.settings import CloudSettings
from tests.waiting import until

ANJU = (sys.executable, "-m", "anju.cli")
CLI_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Run:
    """What one ``anju`` process did."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        """The one JSON object the command printed (json.loads rejects anything more)."""
        document: dict[str, Any] = json.loads(self.stdout)
        return document

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


async def anju(
    *args: str, env: Mapping[str, str], prefix: Sequence[str] = (), stdin: bytes = b""
) -> Run:
    """Run ``[prefix...] anju ARGS`` with ``env`` added to this process's environment,
    while the test's event loop keeps serving the API; stdin is a pipe, not a terminal,
    so nothing prompts."""
    process = await asyncio.create_subprocess_exec(
        *prefix,
        *ANJU,
        *args,
        env={**os.environ, "COLUMNS": "250", **env},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), CLI_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def api_settings(database_url: str, **more: Any) -> CloudSettings:
    """Settings for an API alone on a free loopback port; ``more`` adds sections."""
    return CloudSettings.model_validate(
        {"database_url": database_url, "api": {"host": LOOPBACK, "port": free_port()}, **more}
    )


@asynccontextmanager
async def serving_api(settings: CloudSettings) -> AsyncIterator[str]:
    """The API of ``settings`` served by uvicorn in this event loop; yields its URL."""
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="api")
    try:
        await until("the API serves", 30, lambda: server.started or task.done())
        assert not task.done(), "the API stopped at start-up"
        yield f"http://{settings.api.host}:{settings.api.port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
