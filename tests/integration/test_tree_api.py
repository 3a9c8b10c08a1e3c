"""``/communities`` against the real PostgreSQL: nodes made, renamed and retired by
admin and street keys, each key reaching only its own subtree, and the registry
refusing gateways under a retired community."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from psycopg import AsyncConnection

from cloud import tree
from cloud.api.app import create_app
from cloud.auth.roles import Role
from cloud.errors import RegistryError
from cloud.registry import register_community, register_gateway
from cloud.settings import CloudSettings
from cloud.tree import find_node
from tests.api_support import api_client, bearer, make_key

COMMUNITIES = ("xijin/fenghuang", "xijin/taoyuan", "xijin/qinglong", "hexi/binhe", "hexi/yuxi")
"""Two streets of the city ``ningguo``: five communities, eight nodes."""


@pytest_asyncio.fixture
async def conn(database_url: str) -> AsyncIterator[AsyncConnection[Any]]:
    async with await AsyncConnection.connect(database_url, autocommit=True) as connection:
        for path in COMMUNITIES:
            await register_community(connection, path)
        yield connection


@pytest_asyncio.fixture
async def api(database_url: str, conn: AsyncConnection[Any]) -> AsyncIterator[httpx.AsyncClient]:
    """The API with no key of its own: each request presents one."""
    async with api_client(create_app(CloudSettings(database_url=database_url))) as http:
        yield http


@pytest_asyncio.fixture
async def admin(conn: AsyncConnection[Any]) -> dict[str, str]:
    return bearer(await make_key(conn))


@pytest_asyncio.fixture
async def street(conn: AsyncConnection[Any]) -> dict[str, str]:
    """The street office of ``xijin``."""
    return bearer(await make_key(conn, role=Role.STREET, scope="xijin"))


async def _id(conn: AsyncConnection[Any], path: str, tier: str | None = None) -> int:
    return (await find_node(conn, path, tier)).id


async def _create(api: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await api.post("/communities", json=body, headers=headers)


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    return problem


async def test_an_admin_grows_the_tree_and_tiers_follow_from_parents(
    api: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    city = await _create(api, admin, parent=None, name="xuancheng", display_name="宣城市")
    assert city.status_code == 201, city.text
    assert city.json() | {"id": 0, "created_at": ""} == {
        "id": 0,
        "parent_id": None,
        "tier": "city",
        "name": "xuancheng",
        "path": "xuancheng",
        "display_name": "宣城市",
        "status": "active",
        "created_at": "",
        "retired_at": None,
    }
    street = await _create(api, admin, parent="xuancheng", name="aoxi")
    assert street.status_code == 201, street.text
    assert street.json()["tier"] == "street"
    assert street.json()["parent_id"] == city.json()["id"]
    assert street.json()["path"] == "aoxi"
    community = await _create(api, admin, parent="aoxi", name="nanhu", display_name="南湖")
    assert community.status_code == 201, community.text
    assert community.json()["tier"] == "community"
    assert community.json()["path"] == "aoxi/nanhu"

    fetched = await api.get(f"/communities/{community.json()['id']}", headers=admin)
    assert fetched.status_code == 200
    assert fetched.json() == community.json()

    below = _problem(await _create(api, admin, parent="aoxi/nanhu", name="block-1"), 422)
    assert "lowest tier" in below["detail"]


async def test_a_city_and_a_street_of_one_name_are_told_apart_by_tier(
    api: httpx.AsyncClient, admin: dict[str, str], conn: AsyncConnection[Any]
) -> None:
    assert (await _create(api, admin, parent=None, name="xijin")).status_code == 201
    ambiguous = _problem(await _create(api, admin, parent="xijin", name="hongxing"), 422)
    assert "give the tier" in ambiguous["detail"]

    made = await _create(api, admin, parent="xijin", parent_tier="street", name="hongxing")
    assert made.status_code == 201, made.text
    assert made.json()["parent_id"] == await _id(conn, "xijin", "street")
    assert made.json()["path"] == "xijin/hongxing"


async def test_a_path_taken_in_the_same_tier_is_a_conflict(
    api: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    taken = _problem(await _create(api, admin, parent="xijin", name="fenghuang"), 409)
    assert "exists already" in taken["detail"]
    assert (await _create(api, admin, parent=None, name="ningguo")).status_code == 409
    # A street may take a city's name: paths are unique per tier.
    assert (await _create(api, admin, parent="ningguo", name="ningguo")).status_code == 201


async def test_a_street_key_works_in_its_own_street_only(
    api: httpx.AsyncClient, street: dict[str, str], conn: AsyncConnection[Any]
) -> None:
    made = await _create(api, street, parent="xijin", name="jinhua")
    assert made.status_code == 201, made.text
    assert made.json()["path"] == "xijin/jinhua"

    city = _problem(await _create(api, street, parent=None, name="xuancheng"), 403)
    assert "whole tree" in city["detail"]
    missing = _problem(await _create(api, street, parent="hexi", name="jinhua"), 404)
    unknown = _problem(await _create(api, street, parent="nowhere", name="jinhua"), 404)
    assert missing["detail"].replace("hexi", "X") == unknown["detail"].replace("nowhere", "X")

    hexi, binhe = await _id(conn, "hexi"), await _id(conn, "hexi/binhe")
    for node in (hexi, binhe, await _id(conn, "ningguo")):
        assert (await api.get(f"/communities/{node}", headers=street)).status_code == 404
        renamed = await api.patch(
            f"/communities/{node}", json={"display_name": "x"}, headers=street
        )
        assert renamed.status_code == 404
        retired = await api.post(f"/communities/{node}/retire", headers=street)
        assert retired.status_code == 404
    gone = await api.get("/communities/999999", headers=street)
    assert _problem(gone, 404)["detail"] == "node '999999': no such node in the community tree"
    assert (await api.get("/communities?community=hexi", headers=street)).status_code == 404

    listed = await api.get("/communities", headers=street)
    assert listed.status_code == 200
    assert {node["path"] for node in listed.json()["items"]} == {
        "xijin",
        "xijin/fenghuang",
        "xijin/taoyuan",
        "xijin/qinglong",
        "xijin/jinhua",
    }


async def test_roles_without_tree_manage_are_refused_and_no_key_is_unauthorised(
    api: httpx.AsyncClient, conn: AsyncConnection[Any]
) -> None:
    manager = bearer(await make_key(conn, role=Role.PROPERTY_MANAGER, scope="xijin/fenghuang"))
    node = await _id(conn, "xijin/fenghuang")
    _problem(await _create(api, manager, parent="xijin", name="jinhua"), 403)
    _problem(await api.post(f"/communities/{node}/retire", headers=manager), 403)
    _problem(
        await api.patch(f"/communities/{node}", json={"display_name": "x"}, headers=manager), 403
    )
    assert (await api.get(f"/communities/{node}", headers=manager)).status_code == 200
    _problem(await api.get("/communities"), 401)
    _problem(await api.post("/communities", json={"parent": None, "name": "x"}), 401)


async def test_renaming_changes_the_display_name_and_never_the_path(
    api: httpx.AsyncClient, street: dict[str, str], conn: AsyncConnection[Any]
) -> None:
    node = await _id(conn, "xijin/fenghuang")
    renamed = await api.patch(
        f"/communities/{node}", json={"display_name": "  凤凰社区 "}, headers=street
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["display_name"] == "凤凰社区"
    assert renamed.json()["path"] == "xijin/fenghuang"
    assert (await find_node(conn, "xijin/fenghuang")).display_name == "凤凰社区"

    cleared = await api.patch(f"/communities/{node}", json={"display_name": None}, headers=street)
    assert cleared.json()["display_name"] is None

    for body in (
        {"display_name": "a\x00b"},
        {"display_name": "   "},
        {"display_name": "x" * 101},
        {"display_name": "x", "path": "xijin/other"},
        {"name": "other"},
    ):
        _problem(await api.patch(f"/communities/{node}", json=body, headers=street), 422)
    assert (await find_node(conn, "xijin/fenghuang")).name == "fenghuang"


@pytest.mark.parametrize(
    "body",
    [
        {"parent": "xijin", "name": "Upper"},
        {"parent": "xijin", "name": "-dash"},
        {"parent": "xijin", "name": "x" * 33},
        {"parent": "xijin", "name": "a/b"},
        {"parent": "xijin", "name": "ok", "display_name": "\x00"},
        {"parent": "xijin", "name": "ok", "tier": "community"},
        {"parent": "xi jin", "name": "ok"},
        {"name": "ok"},
    ],
)
async def test_malformed_nodes_are_refused_at_the_edge(
    api: httpx.AsyncClient, admin: dict[str, str], body: dict[str, Any]
) -> None:
    problem = _problem(await api.post("/communities", json=body, headers=admin), 422)
    assert problem["errors"]


async def test_retiring_is_refused_while_anything_below_is_active(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    street: dict[str, str],
    conn: AsyncConnection[Any],
) -> None:
    await register_gateway(conn, "gw-fh-1", "xijin/fenghuang")
    await register_gateway(conn, "gw-fh-2", "xijin/fenghuang")
    fenghuang, xijin = await _id(conn, "xijin/fenghuang"), await _id(conn, "xijin")

    busy = _problem(await api.post(f"/communities/{fenghuang}/retire", headers=street), 409)
    assert "0 active node(s) below it and 2 active gateway(s)" in busy["detail"]
    street_busy = _problem(await api.post(f"/communities/{xijin}/retire", headers=admin), 409)
    assert "3 active node(s) below it and 2 active gateway(s)" in street_busy["detail"]
    own_root = _problem(await api.post(f"/communities/{xijin}/retire", headers=street), 409)
    assert "root of this key's scope" in own_root["detail"]

    await conn.execute("UPDATE gateways SET status = 'revoked' WHERE id LIKE 'gw-fh-%'")
    retired = await api.post(f"/communities/{fenghuang}/retire", headers=street)
    assert retired.status_code == 200, retired.text
    assert retired.json()["status"] == "retired"
    assert retired.json()["retired_at"] is not None
    again = await api.post(f"/communities/{fenghuang}/retire", headers=street)
    assert again.json() == retired.json()

    lowest = _problem(await _create(api, admin, parent="xijin/fenghuang", name="x"), 422)
    assert "lowest tier" in lowest["detail"]
    with pytest.raises(RegistryError, match="retired"):
        await register_gateway(conn, "gw-fh-3", "xijin/fenghuang")
    with pytest.raises(RegistryError, match="retired"):
        await register_gateway(conn, "gw-fh-1", "xijin/fenghuang")

    for path in ("xijin/taoyuan", "xijin/qinglong"):
        node = await _id(conn, path)
        assert (await api.post(f"/communities/{node}/retire", headers=street)).status_code == 200
    emptied = await api.post(f"/communities/{xijin}/retire", headers=admin)
    assert emptied.status_code == 200, emptied.text
    refused = _problem(await _create(api, admin, parent="xijin", name="jinhua"), 409)
    assert "retired" in refused["detail"]
    with pytest.raises(RegistryError, match="retired"):
        await register_community(conn, "xijin/jinhua")


async def test_lists_page_by_id_without_gaps_or_repeats_and_filter(
    api: httpx.AsyncClient, admin: dict[str, str], conn: AsyncConnection[Any]
) -> None:
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"tier": "community", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = await api.get("/communities", params=params, headers=admin)
        assert response.status_code == 200, response.text
        pages.append(response.json()["items"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert [len(items) for items in pages] == [2, 2, 1]
    ids = [node["id"] for items in pages for node in items]
    assert ids == sorted(ids)
    assert sorted(node["path"] for items in pages for node in items) == sorted(COMMUNITIES)

    await conn.execute("UPDATE gateways SET status = 'revoked'")
    yuxi = await _id(conn, "hexi/yuxi")
    assert (await api.post(f"/communities/{yuxi}/retire", headers=admin)).status_code == 200

    async def paths(**params: str) -> set[str]:
        response = await api.get("/communities", params=params, headers=admin)
        assert response.status_code == 200, response.text
        return {node["path"] for node in response.json()["items"]}

    assert await paths(community="hexi") == {"hexi", "hexi/binhe", "hexi/yuxi"}
    assert await paths(community="hexi", status="active") == {"hexi", "hexi/binhe"}
    assert await paths(status="retired") == {"hexi/yuxi"}
    assert await paths(tier="street") == {"xijin", "hexi"}
    assert await paths(tier="city") == {"ningguo"}
    assert await paths(community="xijin/taoyuan") == {"xijin/taoyuan"}


@pytest.mark.parametrize(
    "url",
    [
        "/communities/0",
        "/communities/9223372036854775808",
        "/communities/x",
        "/communities?cursor=bm90LWEtY3Vyc29y",
        "/communities?cursor=%00",
        "/communities?community=%00",
        "/communities?tier=block",
        "/communities?status=gone",
        "/communities?limit=501",
    ],
)
async def test_malformed_ids_and_parameters_get_problems_not_errors(
    api: httpx.AsyncClient, admin: dict[str, str], url: str
) -> None:
    _problem(await api.get(url, headers=admin), 422)


async def test_a_gateway_registered_during_a_retirement_is_never_lost(
    conn: AsyncConnection[Any], database_url: str
) -> None:
    """Registering locks the community against retiring it, and the reverse: whichever
    commits first, the other waits and then sees it."""
    fenghuang, taoyuan = await _id(conn, "xijin/fenghuang"), await _id(conn, "xijin/taoyuan")
    async with await AsyncConnection.connect(database_url, autocommit=True) as other:
        async with conn.transaction():
            await register_gateway(conn, "gw-fh-1", "xijin/fenghuang")
            retiring = asyncio.create_task(tree.retire_node(other, fenghuang, scope=None))
            await asyncio.sleep(0.3)
            assert not retiring.done()
        with pytest.raises(tree.NodeConflict, match="1 active gateway"):
            await retiring

        async with other.transaction():
            await tree.retire_node(other, taoyuan, scope=None)
            registering = asyncio.create_task(register_gateway(conn, "gw-ty-1", "xijin/taoyuan"))
            await asyncio.sleep(0.3)
            assert not registering.done()
        with pytest.raises(RegistryError, match="retired"):
            await registering
