"""What the end-to-end tests share: the cloud tier's settings for a test, the cloud
and one gateway agent running together with an API client holding a key, and the
two looks at the outcome (database rows, the incidents the API lists)."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg

from anju.services.ports import free_port
from cloud.app import run_cloud
from cloud.settings import CloudSettings
from edge.app import Agent
from schemas.broker import parse_broker_url
from tests.api_support import bearer


def cloud_settings(
    database_url: str, mqtt_url: str, unique_id: Callable[[str], str], **more: Any
) -> CloudSettings:
    """The settings ``anju cloud run`` would read, on a free API port with its own
    ingest client id and group; ``more`` adds sections (``webhooks=...``)."""
    return CloudSettings.model_validate(
        {
            "database_url": database_url,
            "mqtt": parse_broker_url(mqtt_url),
            "api": {"port": free_port()},
            "ingest": {"client_id": unique_id("ingest"), "group": unique_id("group")},
            **more,
        }
    )


@asynccontextmanager
async def running(
    settings: CloudSettings, agent: Agent, token: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The cloud (ingest, rules, API) started, then ``agent``; yields a client of the API
    authenticated with ``token``, and stops both on the way out."""
    stop, started = asyncio.Event(), asyncio.Event()
    base_url = f"http://{settings.api.host}:{settings.api.port}"
    async with (
        asyncio.TaskGroup() as tasks,
        httpx.AsyncClient(base_url=base_url, headers=bearer(token)) as api,
    ):
        tasks.create_task(run_cloud(settings, stop=stop, started=started), name="cloud")
        await asyncio.wait_for(started.wait(), timeout=30)
        tasks.create_task(agent.run(stop), name="agent")
        try:
            yield api
        finally:
            stop.set()


async def query_rows(database_url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    """What ``query`` returns, on a connection of its own (the cloud holds the others)."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        return await (await conn.execute(query, params)).fetchall()


async def listed_incidents(api: httpx.AsyncClient) -> set[tuple[str, str, int]]:
    """Every incident the API lists, as (device, type, priority)."""
    response = await api.get("/incidents", params={"limit": 200})
    response.raise_for_status()
    return {(i["device_id"], i["type"], i["priority"]) for i in response.json()["items"]}
