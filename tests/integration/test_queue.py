"""The emergency queue against a real PostgreSQL: atomic claims, refused moves, the
log and outbox rows of every change, the queue's order, and the HTTP routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from psycopg import AsyncConnection

from cloud.api.app import create_app
from cloud.auth.roles import Role
from cloud.queue import transitions
from cloud.queue.errors import AlreadyClaimed, IncidentNotFound, NotClaimant, TransitionRefused
from cloud.queue.states import Outcome
from cloud.registry import register_community
from cloud.settings import CloudSettings, QueueSettings
from cloud.storage.sql import queries
from tests.api_support import api_client, bearer, make_key
from tests.integration.queue_support import Site, make_site, open_incident, rows, scalar

QUEUE = QueueSettings()


@pytest_asyncio.fixture
async def site(conn: AsyncConnection[Any]) -> Site:
    return await make_site(conn)


@pytest_asyncio.fixture
async def client(
    database_url: str, conn: AsyncConnection[Any], site: Site
) -> AsyncIterator[httpx.AsyncClient]:
    """The API as dispatcher ann of the site's street; ``as_key`` speaks as another."""
    token = await make_key(conn, role=Role.DISPATCHER, scope="xijin", name="ann")
    async with api_client(create_app(CloudSettings(database_url=database_url)), token) as http:
        yield http


async def as_key(
    conn: AsyncConnection[Any], name: str, role: Role = Role.DISPATCHER
) -> dict[str, str]:
    return bearer(await make_key(conn, role=role, scope="xijin", name=name))


async def test_racing_claims_have_exactly_one_winner(
    database_url: str, conn: AsyncConnection[Any], site: Site
) -> None:
    rounds = 60
    incidents = [await open_incident(conn, site, device=f"sos-{n}") for n in range(rounds)]
    async with (
        await AsyncConnection.connect(database_url, autocommit=True) as one,
        await AsyncConnection.connect(database_url, autocommit=True) as two,
    ):
        for incident in incidents:
            results = await asyncio.gather(
                transitions.claim(one, incident, actor="ann", settings=QUEUE),
                transitions.claim(two, incident, actor="bob", settings=QUEUE),
                return_exceptions=True,
            )
            winners = [r for r in results if isinstance(r, transitions.Transition)]
            losers = [r for r in results if isinstance(r, AlreadyClaimed)]
            assert len(winners) == 1, results
            assert len(losers) == 1, results
            assert losers[0].claimed_by == winners[0].actor

    # One claim each in the incidents, the log and the outbox (one row per subscription
    # that takes every event); the unclaimed timer gone, the unacknowledged one armed.
    claimed = rows(
        database_url,
        "SELECT i.claimed_by, count(l.id) FROM incidents i "
        "JOIN incident_log l ON l.incident_id = i.id AND l.to_status = 'claimed' "
        "GROUP BY i.id, i.claimed_by",
    )
    assert len(claimed) == rounds
    assert all(count == 1 and who in ("ann", "bob") for who, count in claimed)
    assert (
        scalar(
            database_url,
            "SELECT count(*) FROM webhook_deliveries WHERE event_type = 'incident.claimed' "
            "AND subscription_id = %s",
            site.everything,
        )
        == rounds
    )
    assert rows(database_url, "SELECT kind, count(*) FROM incident_timers GROUP BY kind") == [
        ("unacknowledged", rounds)
    ]


async def test_the_whole_path_logs_every_step_and_announces_it(
    database_url: str, conn: AsyncConnection[Any], site: Site
) -> None:
    incident = await open_incident(conn, site, device="sos-1")
    assert rows(database_url, "SELECT kind FROM incident_timers") == [("unclaimed",)]
    await transitions.claim(conn, incident, actor="ann", settings=QUEUE)
    assert rows(database_url, "SELECT kind FROM incident_timers") == [("unacknowledged",)]
    await transitions.acknowledge(conn, incident, actor="ann", note="resident answered")
    assert rows(database_url, "SELECT kind FROM incident_timers") == []
    await transitions.dispatch(conn, incident, actor="ann", dispatched_to="care team 2")
    note = await transitions.add_note(conn, incident, author="ann", text="door code 4411")
    done = await transitions.resolve(
        conn, incident, actor="ann", outcome=Outcome.HOSPITAL, notes="taken to hospital"
    )
    assert (done.from_status, done.to_status) == ("dispatched", "resolved")
    assert note.text == "door code 4411"

    log = rows(
        database_url,
        "SELECT from_status, to_status, actor, note FROM incident_log ORDER BY id",
    )
    assert log == [
        (None, "open", "system", "sos.pressed from device sos-1"),
        ("open", "claimed", "ann", ""),
        ("claimed", "acknowledged", "ann", "resident answered"),
        ("acknowledged", "dispatched", "ann", "sent care team 2"),
        ("dispatched", "resolved", "ann", "outcome hospital; taken to hospital"),
    ]
    incident_row = rows(
        database_url,
        "SELECT status, outcome, claimed_by, dispatched_to, claimed_at <= acknowledged_at, "
        "acknowledged_at <= dispatched_at, dispatched_at <= closed_at FROM incidents",
    )
    assert incident_row == [("resolved", "hospital", "ann", "care team 2", True, True, True)]
    assert rows(
        database_url,
        "SELECT event_type FROM webhook_deliveries WHERE subscription_id = %s ORDER BY id",
        site.everything,
    ) == [
        ("incident.opened",),
        ("incident.claimed",),
        ("incident.acknowledged",),
        ("incident.dispatched",),
        ("incident.resolved",),
    ]
    assert rows(database_url, "SELECT author, text FROM incident_notes ORDER BY id") == [
        ("ann", "door code 4411"),
        ("ann", "taken to hospital"),
    ]
    # A closed incident no longer holds its device: the next alarm opens a new one.
    again = await open_incident(conn, site, device="sos-1")
    assert again != incident


async def test_refused_moves_change_nothing(
    database_url: str, conn: AsyncConnection[Any], site: Site
) -> None:
    incident = await open_incident(conn, site, device="sos-1")
    before = rows(database_url, "SELECT * FROM incidents")
    log_before = scalar(database_url, "SELECT count(*) FROM incident_log")
    outbox_before = scalar(database_url, "SELECT count(*) FROM webhook_deliveries")

    with pytest.raises(TransitionRefused, match="is open; acknowledge needs it to be claimed"):
        await transitions.acknowledge(conn, incident, actor="ann")
    with pytest.raises(TransitionRefused, match="is open"):
        await transitions.resolve(conn, incident, actor="ann", outcome=Outcome.FALSE_ALARM)
    await transitions.claim(conn, incident, actor="ann", settings=QUEUE)
    with pytest.raises(NotClaimant, match="claimed by ann; bob may not acknowledge"):
        await transitions.acknowledge(conn, incident, actor="bob")
    with pytest.raises(TransitionRefused, match="acknowledge it before resolving"):
        await transitions.resolve(conn, incident, actor="ann", outcome=Outcome.HANDLED)
    with pytest.raises(IncidentNotFound, match="no incident 999999"):
        await transitions.claim(conn, 999999, actor="ann", settings=QUEUE)
    with pytest.raises(IncidentNotFound):
        await transitions.add_note(conn, 999999, author="ann", text="x")

    # Only the claim went through; its log row and deliveries, nothing more.
    assert rows(database_url, "SELECT status FROM incidents") == [("claimed",)]
    assert scalar(database_url, "SELECT count(*) FROM incident_log") == log_before + 1
    assert scalar(database_url, "SELECT count(*) FROM webhook_deliveries") == outbox_before + 1
    assert len(before) == 1

    await transitions.resolve(conn, incident, actor="ann", outcome=Outcome.FALSE_ALARM)
    assert rows(database_url, "SELECT status, outcome FROM incidents") == [
        ("false_alarm", "false_alarm")
    ]
    with pytest.raises(TransitionRefused, match="is false_alarm"):
        await transitions.claim(conn, incident, actor="bob", settings=QUEUE)
    assert rows(database_url, "SELECT count(*) FROM incident_timers") == [(0,)]


async def test_the_database_refuses_an_outcome_that_contradicts_the_status(
    database_url: str, conn: AsyncConnection[Any], site: Site
) -> None:
    incident = await open_incident(conn, site, device="sos-1")
    with psycopg.connect(database_url) as sync, pytest.raises(psycopg.errors.CheckViolation):
        sync.execute(
            "UPDATE incidents SET status = 'resolved', outcome = 'false_alarm', "
            "claimed_by = 'ann', claimed_at = now() WHERE id = %s",
            [incident],
        )


async def test_unacknowledged_timer_counts_from_the_opening_with_grace_for_a_late_claim(
    database_url: str, conn: AsyncConnection[Any], site: Site
) -> None:
    queue = QueueSettings(p1_unclaimed_s=60, p1_unacknowledged_s=180, repeat_s=60)
    early = await open_incident(conn, site, device="sos-1", queue=queue)
    late = await open_incident(conn, site, device="sos-2", queue=queue)
    assert scalar(
        database_url,
        "SELECT extract(epoch FROM t.due_at - i.opened_at) FROM incident_timers t "
        "JOIN incidents i ON i.id = t.incident_id WHERE i.id = %s",
        early,
    ) == pytest.approx(60)
    # The late one waited 170 s before its claim: it still gets repeat_s to make contact.
    await conn.execute(
        "UPDATE incidents SET opened_at = now() - interval '170 seconds' WHERE id = %s", [late]
    )
    await transitions.claim(conn, early, actor="ann", settings=queue)
    await transitions.claim(conn, late, actor="bob", settings=queue)
    due = dict(
        rows(
            database_url,
            "SELECT t.incident_id, extract(epoch FROM t.due_at - i.opened_at) "
            "FROM incident_timers t JOIN incidents i ON i.id = t.incident_id "
            "WHERE kind = 'unacknowledged'",
        )
    )
    assert float(due[early]) == pytest.approx(180)
    assert float(due[late]) == pytest.approx(170 + 60, abs=2)


async def test_queue_lists_active_incidents_by_priority_then_waiting_time(
    database_url: str, conn: AsyncConnection[Any], site: Site, client: httpx.AsyncClient
) -> None:
    # (device, priority, opened seconds ago)
    plan = [("p3-old", 3, 900), ("p1-new", 1, 5), ("p2-old", 2, 600), ("p1-old", 1, 50)]
    plan += [("p2-new", 2, 10), ("done", 1, 1000)]
    ids = {}
    for device, priority, ago in plan:
        ids[device] = await open_incident(conn, site, device=device, priority=priority)
        await conn.execute(
            "UPDATE incidents SET opened_at = now() - make_interval(secs => %s) WHERE id = %s",
            [ago, ids[device]],
        )
    await transitions.claim(conn, ids["done"], actor="ann", settings=QUEUE)
    await transitions.resolve(conn, ids["done"], actor="ann", outcome=Outcome.FALSE_ALARM)
    await transitions.claim(conn, ids["p2-old"], actor="bob", settings=QUEUE)

    response = await client.get("/incidents")
    assert response.status_code == 200
    items = response.json()["items"]
    assert [i["device_id"] for i in items] == ["p1-old", "p1-new", "p2-old", "p2-new", "p3-old"]
    assert response.json()["next_cursor"] is None
    claimed = items[2]
    assert (claimed["status"], claimed["claimed_by"]) == ("claimed", "bob")

    closed = await client.get("/incidents", params={"status": "false_alarm"})
    assert [(i["device_id"], i["outcome"]) for i in closed.json()["items"]] == [
        ("done", "false_alarm")
    ]
    only_claimed = await client.get("/incidents", params={"status": "claimed"})
    assert [i["device_id"] for i in only_claimed.json()["items"]] == ["p2-old"]
    p2 = await client.get("/incidents", params={"priority": 2})
    assert [i["device_id"] for i in p2.json()["items"]] == ["p2-old", "p2-new"]

    # Pages of two walk the queue in order, each incident once.
    walked, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/incidents", params=params)).json()
        walked += [i["device_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == ["p1-old", "p1-new", "p2-old", "p2-new", "p3-old"]
    forged = await client.get("/incidents", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert forged.status_code == 422
    assert forged.headers["content-type"] == "application/problem+json"

    # The listing can walk the partial index incidents_queue in its order.
    no_filter = dict.fromkeys(
        ["scope", "priority", "type", "device", "claimed_by", "opened_from", "opened_to"]
    )
    no_filter.update(after_priority=None, after_opened=None, after_id=None, limit=100)
    with psycopg.connect(database_url) as sync:
        sync.execute("SET enable_seqscan = off")
        plan_rows = sync.execute("EXPLAIN " + queries()["list_queue"], no_filter).fetchall()
    assert "incidents_queue" in "\n".join(str(r[0]) for r in plan_rows)


async def test_api_routes_answer_200_404_and_409(
    conn: AsyncConnection[Any], site: Site, client: httpx.AsyncClient
) -> None:
    incident = await open_incident(conn, site, device="sos-1")
    base = f"/incidents/{incident}"

    bob = await as_key(conn, "bob")
    cho = await as_key(conn, "cho")
    claimed = await client.post(f"{base}/claim")
    assert claimed.status_code == 200, claimed.text
    assert (claimed.json()["status"], claimed.json()["claimed_by"]) == ("claimed", "ann")
    lost = await client.post(f"{base}/claim", headers=bob)
    assert lost.status_code == 409
    assert lost.headers["content-type"] == "application/problem+json"
    assert lost.json()["detail"] == f"incident {incident} is already claimed by ann (now claimed)"

    wrong = await client.post(f"{base}/acknowledge", headers=bob, json={})
    assert wrong.status_code == 409
    assert "bob may not acknowledge" in wrong.json()["detail"]
    early = await client.post(f"{base}/dispatch", json={"dispatched_to": "team"})
    assert early.status_code == 409
    assert "dispatch needs it to be acknowledged" in early.json()["detail"]

    ok = await client.post(f"{base}/acknowledge", json={"note": "on the phone"})
    assert ok.status_code == 200
    assert ok.json()["acknowledged_at"] is not None
    sent = await client.post(f"{base}/dispatch", json={"dispatched_to": "team 2"})
    assert (sent.status_code, sent.json()["dispatched_to"]) == (200, "team 2")
    noted = await client.post(f"{base}/notes", headers=cho, json={"text": "family informed"})
    assert noted.status_code == 200
    assert [(n["author"], n["text"]) for n in noted.json()["notes"]] == [("cho", "family informed")]
    done = await client.post(f"{base}/resolve", json={"outcome": "handled", "notes": "all well"})
    assert done.status_code == 200
    body = done.json()
    assert (body["status"], body["outcome"]) == ("resolved", "handled")
    assert [entry["to_status"] for entry in body["log"]] == [
        "open",
        "claimed",
        "acknowledged",
        "dispatched",
        "resolved",
    ]
    assert {entry["actor"] for entry in body["log"][1:]} == {"ann"}
    again = await client.post(f"{base}/resolve", json={"outcome": "handled"})
    assert again.status_code == 409
    # Notes may still be added to a closed incident.
    late_note = await client.post(f"{base}/notes", json={"text": "follow-up"})
    assert late_note.status_code == 200

    for path, payload in [
        ("claim", None),
        ("acknowledge", {}),
        ("dispatch", {"dispatched_to": "x"}),
        ("resolve", {"outcome": "handled"}),
        ("notes", {"text": "x"}),
    ]:
        missing = await client.post(f"/incidents/999999/{path}", json=payload)
        assert missing.status_code == 404, path
        assert missing.json()["detail"] == "no incident 999999"

    # The actor is the key's holder: a body naming one is refused, not believed.
    for path, bad in [
        ("acknowledge", {"actor": "mallory"}),
        ("dispatch", {"dispatched_to": "   "}),
        ("notes", {"text": "\u0000"}),
        ("notes", {"text": "x", "actor": "mallory"}),
    ]:
        refused = await client.post(f"{base}/{path}", json=bad)
        assert refused.status_code == 422, (path, bad)
        assert refused.json()["errors"], refused.json()
    bad_outcome = await client.post(f"{base}/resolve", json={"outcome": "fine"})
    assert bad_outcome.status_code == 422


async def test_queue_actions_need_a_dispatcher_key_over_the_incident(
    conn: AsyncConnection[Any], site: Site, client: httpx.AsyncClient
) -> None:
    incident = await open_incident(conn, site, device="sos-2")
    base = f"/incidents/{incident}"
    await register_community(conn, "dongcheng/heping")
    elsewhere = bearer(await make_key(conn, role=Role.DISPATCHER, scope="dongcheng", name="dan"))
    manager = await as_key(conn, "pm", Role.PROPERTY_MANAGER)

    assert (await client.post(f"{base}/claim", headers={"Authorization": ""})).status_code == 401
    assert (await client.post(f"{base}/claim", headers=manager)).status_code == 403
    hidden = await client.post(f"{base}/claim", headers=elsewhere)
    assert (hidden.status_code, hidden.json()["detail"]) == (404, f"no incident {incident}")
    assert (await client.get(base, headers=elsewhere)).status_code == 404
    assert (await client.get("/incidents", headers=elsewhere)).json()["items"] == []
    # Nothing was changed by the refused calls.
    assert (await client.get(base)).json()["status"] == "open"
