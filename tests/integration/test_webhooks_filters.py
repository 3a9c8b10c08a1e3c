"""Subscription filters against the real API and PostgreSQL: a name that would never
match (an unknown event type, incident type or priority) is refused with the valid
names, nothing is stored, and the incident types are those of the rules in use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg import AsyncConnection

from cloud.api.routes.webhooks import filter_vocabulary
from cloud.auth.roles import Role
from cloud.rules.config import RULES_FILE_VAR, load_rules
from cloud.webhooks.errors import InvalidFilter
from cloud.webhooks.outbox import WebhookEvent
from cloud.webhooks.ssrf import AddressPolicy
from cloud.webhooks.subscriptions import create_subscription, list_subscriptions
from tests.api_support import make_key
from tests.integration.webhook_support import COMMUNITY, community, webhook_api

URL = "http://127.0.0.1:9/hook"
"""Never called: these tests only subscribe."""

LIFT_RULES = """
rules:
  lift:
    trigger: door.forced_open
    kind: event
    incident: lift_stuck
    priority: 2
evacuation:
  after: lift
  incident: lift_rescue
overrides:
  xijin/fenghuang:
    lift: {incident: lift_stuck_fh}
"""


async def _manager(conn: AsyncConnection[Any]) -> str:
    """A key of the community's property manager, who subscribes in these tests."""
    await community(conn)
    return await make_key(conn, role=Role.PROPERTY_MANAGER, scope=COMMUNITY)


async def _subscribe(http: httpx.AsyncClient, **filters: Any) -> httpx.Response:
    return await http.post(
        "/webhooks/subscriptions", json={"community": COMMUNITY, "url": URL, **filters}
    )


async def test_an_unknown_incident_type_is_refused_with_the_valid_ones(
    database_url: str, conn: AsyncConnection[Any]
) -> None:
    async with webhook_api(database_url, await _manager(conn)) as http:
        refused = await _subscribe(http, incident_types=["fire", "smoke"])
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert detail.startswith("incident_types: 'smoke' is not an incident type; valid: ")
        for name in ("fire", "resident_smoke_alarm", "evacuation_assistance", "gateway_offline"):
            assert name in detail
        assert (await http.get("/webhooks/subscriptions")).json()["items"] == []


async def test_every_incident_type_of_the_packaged_rules_is_accepted(
    database_url: str, conn: AsyncConnection[Any]
) -> None:
    names = sorted(filter_vocabulary(load_rules()).incident_types)
    assert {"fire", "resident_smoke_alarm", "evacuation_assistance"} <= set(names)
    async with webhook_api(database_url, await _manager(conn)) as http:
        created = await _subscribe(http, incident_types=names, max_priority=1)
        assert created.status_code == 201, created.text
        assert created.json()["incident_types"] == names


async def test_unknown_event_types_and_priorities_are_refused_with_the_valid_ones(
    database_url: str, conn: AsyncConnection[Any]
) -> None:
    async with webhook_api(database_url, await _manager(conn)) as http:
        event = await _subscribe(http, event_types=["incident.opened", "incident.open"])
        assert event.status_code == 422, event.text
        for name in WebhookEvent:
            assert str(name) in event.text
        for priority, bound in ((0, "greater than or equal to 1"), (4, "less than or equal to 3")):
            refused = await _subscribe(http, max_priority=priority)
            assert refused.status_code == 422, refused.text
            [error] = refused.json()["errors"]
            assert error["loc"] == ["body", "max_priority"]
            assert bound in error["msg"]
        assert (await http.get("/webhooks/subscriptions")).json()["items"] == []


async def test_incident_types_are_those_of_the_rules_file_in_use(
    database_url: str, conn: AsyncConnection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(LIFT_RULES, encoding="utf-8")
    monkeypatch.setenv(RULES_FILE_VAR, str(rules))
    async with webhook_api(database_url, await _manager(conn)) as http:
        refused = await _subscribe(http, incident_types=["fire"])
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"] == (
            "incident_types: 'fire' is not an incident type; "
            "valid: lift_rescue, lift_stuck, lift_stuck_fh"
        )
        created = await _subscribe(http, incident_types=["lift_stuck_fh", "lift_rescue"])
        assert created.status_code == 201, created.text


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"incident_types": ["smoke"]}, "incident_types: 'smoke' is not an incident type"),
        ({"event_types": ["incident.open"]}, "event_types: 'incident.open' is not an event"),
        ({"max_priority": 4}, "max_priority: 4 is not a priority; valid: 1, 2, 3"),
    ],
)
async def test_callers_other_than_the_api_are_checked_too(
    conn: AsyncConnection[Any], filters: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidFilter) as refused:
        await create_subscription(
            conn,
            community_id=await community(conn),
            url=URL,
            policy=AddressPolicy(allow_private=True),
            vocabulary=filter_vocabulary(load_rules()),
            scope=None,
            **filters,
        )
    assert str(refused.value).startswith(message)
    assert await list_subscriptions(conn, scope=None) == []
