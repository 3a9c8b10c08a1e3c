"""``GET /`` answers with the way in: the docs pages and every route, not a 404.

No database is needed: building the app connects to nothing, and the index does not
use its pool.
"""

from __future__ import annotations

import httpx

from cloud.api.app import create_app
from cloud.settings import CloudSettings


async def test_the_root_names_the_docs_and_the_routes() -> None:
    app = create_app(CloudSettings(database_url="postgresql://anju@127.0.0.1:9/anju"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://anju.test") as http:
        answer = await http.get("/")
        assert answer.status_code == 200
        index = answer.json()
        assert index["name"] == "Anju cloud"
        assert "/docs" in index["docs"]
        assert index["openapi"] == "/openapi.json"
        assert {"GET /health", "GET /incidents", "POST /webhooks/subscriptions"} <= set(
            index["routes"]
        )
        for page in index["docs"]:
            assert (await http.get(page)).status_code == 200, page
        assert "/" not in (await http.get("/openapi.json")).json()["paths"]
