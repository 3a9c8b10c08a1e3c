"""Schemathesis against the live API: `anju cloud run` on its own database and broker,
fuzzed from the OpenAPI document it serves, with a whole-tree admin key.

Every operation gets examples, boundary values (the coverage phase: out-of-range
ids, NUL bytes, empty and overlong strings, extreme dates) and random inputs; each
answer must be no server error, a documented status code and content type, and a body
matching its documented schema.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from anju.services.ports import free_port
from cloud.auth.keys import create_key
from cloud.auth.roles import Role
from tests.api_support import bearer, populate
from tests.brokers import SecureBroker, secure_broker  # noqa: F401

BIN = Path(sys.executable).parent
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
WRAPPING_KEY = b"fuzz-test-key-of-thirty-two-byte"
pytestmark = pytest.mark.slow


@pytest.fixture
def admin_key(database_url: str) -> str:
    """A whole-tree admin key, in a database holding one of everything in two
    communities, so ids 1 and 2 of each kind exist and the fuzzer reaches past 404."""

    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            for path, tag in (("xijin/fenghuang", "one"), ("dongcheng/heping", "two")):
                await populate(conn, path, tag, wrapping_key=WRAPPING_KEY)
            return (await create_key(conn, name="fuzzer", role=Role.ADMIN, scope_id=None)).token

    return asyncio.run(make())


@pytest.fixture
def live_api(
    database_url: str,
    mqtt_url: str,
    unique_id: Callable[[str], str],
    tmp_path: Path,
    secure_broker: SecureBroker,  # noqa: F811
) -> Iterator[str]:
    """`anju cloud run` serving the API on a free port; its log is kept for failures.
    The installer's credential routes drive a TLS + dynamic-security broker of their
    own, so they answer as in production rather than 503 for missing settings."""
    port = free_port()
    env = {
        **os.environ,
        "ANJU_DATABASE_URL": database_url,
        "ANJU_MQTT_URL": mqtt_url,
        "ANJU_API_PORT": str(port),
        "ANJU_API_AUTH_FAILURE_LIMIT": "1000000",
        "ANJU_INGEST_CLIENT_ID": unique_id("fuzz"),
        "ANJU_INGEST_GROUP": unique_id("fuzz"),
        "ANJU_RESIDENT_KEYS": "k1:"
        + base64.b64encode(b"fuzz-test-key-of-thirty-two-byte").decode(),
        "ANJU_BROKER_ADMIN_URL": secure_broker.admin_url,
        "ANJU_BROKER_ADMIN_CA_FILE": str(secure_broker.ca_file),
        "ANJU_BROKER_GATEWAY_URL": secure_broker.gateway_url,
        "ANJU_BROKER_GATEWAY_CERT_URL": secure_broker.certificate_url,
        "ANJU_BROKER_SERVER_CA_FILE": str(secure_broker.ca_file),
        "ANJU_BROKER_CLIENT_CA_CERT_FILE": str(secure_broker.client_ca.cert_path),
        "ANJU_BROKER_CLIENT_CA_KEY_FILE": str(secure_broker.client_ca.key_path),
    }
    log = (tmp_path / "cloud.log").open("w")
    process = subprocess.Popen([str(BIN / "anju"), "cloud", "run"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail((tmp_path / "cloud.log").read_text())
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_the_live_api_answers_every_fuzzed_request_as_documented(
    live_api: str, admin_key: str, tmp_path: Path
) -> None:
    assert httpx.get(f"{live_api}/me", headers=bearer(admin_key)).status_code == 200
    result = subprocess.run(
        [
            str(BIN / "st"),
            "run",
            f"{live_api}/openapi.json",
            "--header",
            f"Authorization: Bearer {admin_key}",
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            os.environ.get("ANJU_FUZZ_EXAMPLES", "25"),
            "--seed",
            os.environ.get("ANJU_FUZZ_SEED", "20261203"),
            "--generation-allow-x00",
            "true",
            "--generation-database",
            "none",
            "--workers",
            "2",
            "--no-color",
            "--request-timeout",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=tmp_path,
    )
    summary: dict[str, Any] = {"exit": result.returncode}
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:] + str(summary)
