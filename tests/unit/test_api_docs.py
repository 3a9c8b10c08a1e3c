"""The API's documentation pages work without internet access: everything ``/docs`` and
``/redoc`` load (scripts, styles, icon, the OpenAPI document) is served by the app
itself, at paths on its own host, and answers 200.

No database is needed: building the app connects to nothing, and these pages do not
use its pool.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import pytest_asyncio

from cloud.api.app import create_app
from cloud.settings import CloudSettings

BASE = "http://anju.test"


class _References(HTMLParser):
    """Every URL an HTML page makes the browser load: src, href and ReDoc's spec-url."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend(
            value for name, value in attrs if name in ("src", "href", "spec-url") and value
        )


def _references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    # Swagger UI is told where the OpenAPI document is in its inline script.
    return parser.urls + re.findall(r"\burl: '([^']+)'", html)


@pytest_asyncio.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(CloudSettings(database_url="postgresql://anju@127.0.0.1:9/anju"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        yield http


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/docs", {"text/css", "text/javascript", "image/png", "application/json"}),
        ("/redoc", {"text/javascript", "image/png", "application/json"}),
    ],
)
async def test_every_asset_of_the_page_is_served_by_the_app(
    api: httpx.AsyncClient, page: str, expected: set[str]
) -> None:
    html = await api.get(page)
    assert html.status_code == 200
    assert not re.search(r"(https?:)?//", html.text), "the page names another host"
    urls = _references(html.text)
    assert "/openapi.json" in urls
    kinds = set()
    for url in urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("", ""), url
        answer = await api.get(urljoin(BASE + page, url))
        assert answer.status_code == 200, url
        assert answer.content, url
        kinds.add(answer.headers["content-type"].split(";")[0])
    assert kinds == expected


async def test_the_openapi_document_describes_the_api(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    assert "/webhooks/subscriptions" in document["paths"]
