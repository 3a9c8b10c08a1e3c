"""``GET /``: where to go from the API's root, so opening the bare address is not a 404.

Names the interactive docs and lists every documented route as ``METHOD /path``, read
from the app's own OpenAPI schema so the list never goes stale. Left out of that
schema itself: it points at the API rather than being part of it.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel

router = APIRouter(tags=["index"])

DOCS_PATHS: Final = ("/docs", "/redoc")


class Index(BaseModel):
    name: str
    version: str
    docs: list[str]
    """The interactive documentation pages the app serves (Swagger UI, ReDoc)."""
    openapi: str | None
    routes: list[str]
    """``METHOD /path`` of every documented route, by path."""


@router.get("/", response_model=Index, include_in_schema=False)
async def index(request: Request) -> Index:
    """The API's name and version, its docs and its routes."""
    app: FastAPI = request.app
    served = {getattr(route, "path", None) for route in app.routes}
    paths = app.openapi().get("paths", {})
    return Index(
        name=app.title,
        version=app.version,
        docs=[path for path in DOCS_PATHS if path in served],
        openapi=app.openapi_url,
        routes=[f"{method.upper()} {path}" for path in sorted(paths) for method in paths[path]],
    )
