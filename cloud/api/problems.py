"""Error bodies as RFC 9457 problem details, for every error the API answers.

Whatever fails (an unknown path, a refused key, a malformed parameter, the database
down), the caller gets ``application/problem+json`` with ``title`` (the status's
phrase), ``status`` and a ``detail`` that says what to change. Validation failures
add ``errors``: where each problem is (``loc``) and what it is (``msg``); the input
itself is never echoed, as it may hold a key or a resident's details.

``document_problems`` writes the same shape into the OpenAPI document for every
status a route can answer, so a generated client knows each one.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from cloud.errors import StorageError, StorageUnavailable

log = logging.getLogger(__name__)

MEDIA_TYPE: Final = "application/problem+json"
_REF: Final = {"$ref": "#/components/schemas/Problem"}


class FieldProblem(BaseModel):
    loc: list[str | int]
    """Where: ``["query", "limit"]``, ``["body", "url"]``, ``["path", "incident_id"]``."""
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    """The request path that failed."""
    errors: list[FieldProblem] | None = None
    """For 422: each field that was refused and why."""


def problem(
    status: int,
    detail: str | None,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[FieldProblem] | None = None,
) -> JSONResponse:
    body = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=instance,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        headers=headers,
        media_type=MEDIA_TYPE,
    )


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem document."""
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StorageError, _storage_error)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem(
        exc.status_code,
        detail,
        instance=request.url.path,
        headers=dict(exc.headers) if exc.headers else None,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldProblem(
            loc=[part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
            msg=str(error.get("msg", "invalid")),
            type=str(error.get("type", "value_error")),
        )
        for error in exc.errors()
    ]
    where = ", ".join(".".join(str(part) for part in error.loc) for error in errors)
    return problem(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        f"invalid request: {where}" if where else "invalid request",
        instance=request.url.path,
        errors=errors,
    )


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s failed: %s", request.method, request.url.path, exc)
    if isinstance(exc, StorageUnavailable):
        return problem(
            HTTPStatus.SERVICE_UNAVAILABLE,
            "the database is unavailable; try again shortly",
            instance=request.url.path,
            headers={"Retry-After": "5"},
        )
    query = exc.query if isinstance(exc, StorageError) else None
    return problem(
        HTTPStatus.INTERNAL_SERVER_ERROR,
        f"database error in {query}" if query else "database error",
        instance=request.url.path,
    )


def problem_response(description: str) -> dict[str, Any]:
    """An entry of a route's ``responses``: ``description``, answered as a problem."""
    return {"description": description, "content": {MEDIA_TYPE: {"schema": _REF}}}


_AUTH: Final = {
    "401": "No key, or a key that is malformed, unknown, revoked or expired",
    "403": "The key's role may not do this",
    "429": "Too many failed authentications from this address; see Retry-After",
}
_ALWAYS: Final = {"503": "The database is unavailable; try again (see Retry-After)"}


def document_problems(app: FastAPI) -> None:
    """Make ``app.openapi()`` declare, on every operation, the problem answers it can
    give besides its own: 401/403/429 where a key is needed, 422 where anything is
    validated (in place of FastAPI's own validation schema), 400 where a body that is
    not JSON can be sent, 503 everywhere."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            definition = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(definition.pop("$defs", {}))
            components["Problem"] = definition
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    _document(operation)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    extra = dict(_ALWAYS)
    if operation.get("security"):
        extra.update(_AUTH)
    if operation.get("parameters") or operation.get("requestBody") or "422" in responses:
        extra["422"] = "A parameter or the body is malformed; `errors` says which and why"
    if operation.get("requestBody"):
        extra["400"] = "The body is not JSON"
    for code, description in extra.items():
        responses.setdefault(code, {"description": description})
    for code, response in responses.items():
        if code[0] in "45":
            responses[code] = problem_response(response.get("description", code))
