"""docs/api.md shows each user the calls they make; every `curl` in it must name a
route the API has, with query parameters the route takes, a key variable for a
role that may call it, and a body the route's schema accepts, so a copied example
never answers 404, 403 or 422 for a reason the page does not mention."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from jsonschema import Draft202012Validator

from cloud.api.app import create_app
from cloud.auth.roles import GRANTS, Role
from cloud.settings import CloudSettings
from tests.api_support import api_routes

DOC = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
APP = create_app(CloudSettings(database_url="postgresql://anju@127.0.0.1:9/anju"))
OPENAPI: dict[str, Any] = APP.openapi()
PERMISSIONS = {route.operation_id: route.permission for route in api_routes(APP)}
KEY_ROLES = {
    "$ADMIN_KEY": Role.ADMIN,
    "$STREET_KEY": Role.STREET,
    "$PM_KEY": Role.PROPERTY_MANAGER,
    "$DISPATCHER_KEY": Role.DISPATCHER,
    "$INSTALLER_KEY": Role.INSTALLER,
}


def _commands() -> list[list[str]]:
    joined = DOC.replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines() if line.strip().startswith("curl ")]
    return [shlex.split(line) for line in lines]


def _parts(words: list[str]) -> tuple[str, str, dict[str, str], str | None, str | None]:
    method, url, body, key = "GET", "", None, None
    index = 1
    while index < len(words):
        word = words[index]
        if word == "-X":
            method, index = words[index + 1], index + 2
        elif word == "-H":
            header = words[index + 1]
            if header.startswith("Authorization: Bearer "):
                key = header.removeprefix("Authorization: Bearer ")
            index += 2
        elif word == "-d":
            body, index = words[index + 1], index + 2
        else:
            url, index = word, index + 1
    split = urlsplit(url)
    return method, split.path, dict(parse_qsl(split.query)), body, key


def _operation(method: str, path: str) -> tuple[str, dict[str, Any]]:
    for template, operations in OPENAPI["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            return template, operations[method.lower()]
    raise AssertionError(f"docs/api.md calls {method} {path}, which the API does not have")


COMMANDS = _commands()


def test_the_page_has_examples_for_every_user() -> None:
    keys = {_parts(words)[4] for words in COMMANDS}
    assert set(KEY_ROLES) <= keys, keys


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(w[:4]) for w in COMMANDS])
def test_each_curl_is_a_call_the_api_accepts(words: list[str]) -> None:
    method, path, query, body, key = _parts(words)
    template, operation = _operation(method, path)
    if template in ("/", "/health"):
        return
    assert key in (*KEY_ROLES, "$KEY"), f"{method} {path} sends no key variable"
    permission = PERMISSIONS[operation["operationId"]]
    assert permission is not None, f"{method} {template} checks no permission"
    if key in KEY_ROLES:
        assert KEY_ROLES[key] in GRANTS[permission], f"{key} may not call {method} {template}"
    known = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "query"}
    assert set(query) <= known, f"{method} {template} takes no {set(query) - known}"
    if body is not None:
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        Draft202012Validator({**schema, "components": OPENAPI["components"]}).validate(
            json.loads(body)
        )
