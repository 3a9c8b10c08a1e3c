"""``GET /incidents/live`` served by uvicorn on a real socket, fed by PostgreSQL's
NOTIFY: what a dispatcher's stream carries, what it never carries, and how it ends.

Each test opens incidents the way ingest's rules do (``open_or_join`` in the
transaction that stores the event) and reads the stream as the console does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest_asyncio
import uvicorn
from fastapi import FastAPI

from anju.services.ports import free_port
from cloud.api.app import close_streams, create_app
from cloud.api.live import IncidentFeed
from cloud.auth.roles import Role
from cloud.queue import transitions
from cloud.settings import CloudSettings, QueueSettings
from tests.api_support import bearer, make_key, open_sos, populate

HOME, AWAY = "xijin/fenghuang", "dongcheng/heping"
WRAPPING_KEY = b"live-test-wrapping-key-32-bytes!"
WAIT_S = 10.0


@dataclass
class Site:
    database_url: str
    url: str
    app: FastAPI
    home: dict[str, str]
    away: dict[str, str]
    home_key: str
    away_key: str


@pytest_asyncio.fixture
async def site(database_url: str) -> AsyncIterator[Site]:
    """Two communities with one of everything, and the API serving on a free port."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        home = await populate(conn, HOME, "home", wrapping_key=WRAPPING_KEY)
        away = await populate(conn, AWAY, "away", wrapping_key=WRAPPING_KEY)
        keys = {
            tag: await make_key(conn, role=Role.DISPATCHER, scope=path, name=f"disp-{tag}")
            for tag, path in (("home", HOME), ("away", AWAY))
        }
    app = create_app(CloudSettings(database_url=database_url))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "the API did not start"
        await asyncio.sleep(0.02)
    feed: IncidentFeed = app.state.incident_feed
    await asyncio.wait_for(feed.listening.wait(), WAIT_S)
    try:
        yield Site(
            database_url, f"http://127.0.0.1:{port}", app, home, away, keys["home"], keys["away"]
        )
    finally:
        close_streams(app)
        server.should_exit = True
        await asyncio.wait_for(serving, WAIT_S)


class Stream:
    """The messages of one open stream, read as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self) -> tuple[str, Any]:
        """The next message's event name and data; keepalive comments are skipped."""
        event, data = "", ""
        async with asyncio.timeout(WAIT_S):
            async for line in self._lines:
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = line.removeprefix("data: ")
                elif line == "" and event:
                    return event, json.loads(data)
        return "end", None

    async def incident(self, incident_id: int) -> dict[str, Any]:
        """The next ``incident`` message about ``incident_id``, skipping others."""
        while True:
            event, data = await self.next()
            assert event != "end", "the stream ended"
            if event == "incident" and data["id"] == incident_id:
                return dict(data)


@asynccontextmanager
async def stream(site: Site, key: str, **params: Any) -> AsyncIterator[Stream]:
    async with (
        httpx.AsyncClient(base_url=site.url, headers=bearer(key), timeout=WAIT_S) as http,
        http.stream("GET", "/incidents/live", params=params) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        opened = Stream(response)
        event, data = await opened.next()
        assert event == "hello", (event, data)
        assert "server_time" in data
        yield opened


async def test_a_new_incident_and_its_changes_reach_its_community_only(site: Site) -> None:
    async with (
        stream(site, site.home_key) as home,
        stream(site, site.away_key) as away,
        await psycopg.AsyncConnection.connect(site.database_url, autocommit=True) as conn,
    ):
        away_id = await open_sos(conn, site.away, seq=10)
        home_id = await open_sos(conn, site.home, seq=10)
        opened = await home.incident(home_id)
        assert (opened["status"], opened["priority"], opened["type"]) == ("open", 1, "fall")
        assert opened["community"] == HOME

        await transitions.claim(conn, home_id, actor="disp-home", settings=QueueSettings())
        claimed = await home.incident(home_id)
        assert (claimed["status"], claimed["claimed_by"]) == ("claimed", "disp-home")
        await transitions.add_note(conn, home_id, author="disp-home", text="calling her")
        assert (await home.incident(home_id))["status"] == "claimed"

        # The away stream hears its own incident and nothing of home's, in order.
        assert (await away.incident(away_id))["community"] == AWAY
        await transitions.claim(conn, away_id, actor="disp-away", settings=QueueSettings())
        assert (await away.next())[1]["id"] == away_id


async def test_a_notification_carries_the_summary_unless_it_is_too_long(site: Site) -> None:
    """The summary rides on the notification, so the feed sends it without reading the
    incident back; one too long for NOTIFY (whose refusal would roll the alarm back)
    goes as a bare id, and the feed reads it: the stream gets it either way."""
    async with (
        stream(site, site.home_key) as home,
        await psycopg.AsyncConnection.connect(site.database_url, autocommit=True) as conn,
        await psycopg.AsyncConnection.connect(site.database_url, autocommit=True) as listener,
    ):
        await listener.execute("LISTEN anju_incidents")
        async with aclosing(listener.notifies(timeout=WAIT_S)) as heard:
            home_id = await open_sos(conn, site.home, seq=30)
            summary = json.loads((await anext(heard)).payload)
            assert (summary["id"], summary["status"]) == (home_id, "open")
            assert summary["community"] == HOME
            assert summary["community_id"] == int(site.home["node_id"])
            assert (await home.incident(home_id))["status"] == "open"

            long_name = "x" * 9000
            await conn.execute(
                "UPDATE incidents SET dispatched_to = %s WHERE id = %s", [long_name, home_id]
            )
            assert (await anext(heard)).payload == str(home_id)
        assert (await home.incident(home_id))["dispatched_to"] == long_name


async def test_the_stream_ends_after_its_lifetime_and_at_shutdown(site: Site) -> None:
    async with stream(site, site.home_key, lifetime_s=1) as short:
        assert await short.next() == ("end", None)
    async with stream(site, site.home_key) as open_one:
        close_streams(site.app)
        assert await open_one.next() == ("end", None)


async def test_a_lost_listen_connection_tells_every_stream_to_resync(site: Site) -> None:
    feed: IncidentFeed = site.app.state.incident_feed
    async with (
        stream(site, site.home_key) as home,
        await psycopg.AsyncConnection.connect(site.database_url, autocommit=True) as conn,
    ):
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query = 'LISTEN anju_incidents'"
        )
        assert await home.next() == ("resync", {})
        assert feed.listening.is_set()
        home_id = await open_sos(conn, site.home, seq=20)
        assert (await home.incident(home_id))["status"] == "open"


async def test_a_stream_needs_a_key_and_the_events_of_an_incident_stay_in_scope(
    site: Site,
) -> None:
    async with httpx.AsyncClient(base_url=site.url, timeout=WAIT_S) as http:
        assert (await http.get("/incidents/live")).status_code == 401
        incident = site.home["incident_id"]
        own = await http.get(f"/incidents/{incident}/events", headers=bearer(site.home_key))
        assert own.status_code == 200, own.text
        assert [(e["type"], e["device_id"]) for e in own.json()["items"]] == [
            ("wearable.sos", "dev-home")
        ]
        other = await http.get(f"/incidents/{incident}/events", headers=bearer(site.away_key))
        assert other.status_code == 404
