"""``anju cloud key``: API keys made, listed and revoked by an operator with database
access. The first admin key of a fresh cloud is made here."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import psycopg
import typer
from psycopg import AsyncConnection

from anju.commands.common import JsonOption, fail
from cloud.auth import keys
from cloud.auth.errors import AuthError
from cloud.auth.roles import Role
from cloud.errors import CloudError
from cloud.settings import load_database_url
from cloud.storage.database import storage_errors
from cloud.tree import find_node

T = TypeVar("T")

app = typer.Typer(
    help="API keys: make one (shown once), list them, revoke one. Works on the database "
    "directly (ANJU_DATABASE_URL), so it is how the first admin key is made.",
    no_args_is_help=True,
)

_ROLES = ", ".join(role.value for role in Role)


@app.command(
    epilog="Examples:\n\n"
    "  anju cloud key create --name ops --role admin                 (the whole tree)\n\n"
    "  anju cloud key create --name wang.li --role dispatcher --scope xijin\n\n"
    "  anju cloud key create --name pm-fenghuang --role property_manager "
    "--scope xijin/fenghuang --expires-in-days 365"
)
def create(
    name: Annotated[
        str, typer.Option(help="Who holds the key (the queue records it as the actor).")
    ],
    role: Annotated[Role, typer.Option(help=f"One of: {_ROLES}.")],
    scope: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            help="The subtree the key reaches: a city (ningguo), a street (xijin) or a "
            "community (xijin/fenghuang). Omit only for an admin key over the whole tree.",
        ),
    ] = None,
    tier: Annotated[
        str | None,
        typer.Option(help="city, street or community; only when a city and a street share a name."),
    ] = None,
    expires_in_days: Annotated[
        int | None, typer.Option(min=1, max=3650, help="Expire after this many days.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Make an API key and print it once: it is stored only as a hash, so copy it now."""
    expires = None if expires_in_days is None else datetime.now(UTC) + timedelta(expires_in_days)

    async def make(conn: AsyncConnection[Any]) -> keys.CreatedKey:
        scope_id = None if scope is None else (await find_node(conn, scope, tier)).id
        return await keys.create_key(
            conn, name=name, role=role, scope_id=scope_id, expires_at=expires
        )

    created = _run(make)
    if as_json:
        typer.echo(json.dumps({**_key_json(created.key), "key": created.token}))
        return
    typer.echo(created.token)
    where = created.key.scope_path or "the whole tree"
    typer.echo(
        f"key {created.key.id} ({created.key.prefix}) for {created.key.name}: {role} over "
        f"{where}. Shown once: it is stored only as a hash.",
        err=True,
    )


@app.command("list")
def list_keys(
    show_all: Annotated[
        bool, typer.Option("--all", help="Include revoked and expired keys.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List keys, newest first, without their secrets.

    Shows each key's id, prefix, holder, role, scope, expiry or revocation, and when it
    was last used (to the minute).
    """
    found = _run(
        lambda conn: keys.list_keys(
            conn, scope=None, roles=frozenset(Role), active=None if show_all else True, limit=10_000
        )
    )
    if as_json:
        typer.echo(json.dumps({"keys": [_key_json(key) for key in found]}))
        return
    if not found:
        typer.echo("no keys" if show_all else "no active keys (--all lists revoked ones)")
    for key in found:
        state = "revoked" if key.revoked_at else f"expires {_when(key.expires_at)}"
        scope = key.scope_path or "(whole tree)"
        typer.echo(
            f"{key.id:>5}  {key.prefix}  {key.name:<24} {key.role:<16} {scope:<24} "
            f"{state:<28} last used {_when(key.last_used_at)}"
        )


@app.command()
def revoke(
    key_id: Annotated[int, typer.Argument(min=1, help="The key's id (see `list`).")],
) -> None:
    """Revoke a key at once: its next request is refused with 401."""
    key = _run(
        lambda conn: keys.revoke_key(conn, key_id, scope=None, roles=frozenset(Role), by=None)
    )
    typer.echo(f"revoked key {key.id} ({key.prefix}) of {key.name}")


def count_usable_admin_keys(database_url: str) -> int:
    """How many admin keys can be used now; ``migrate`` says how to make the first."""
    return _run(keys.usable_admin_keys, database_url)


def _run(
    action: Callable[[AsyncConnection[Any]], Awaitable[T]], database_url: str | None = None
) -> T:
    async def main() -> T:
        with storage_errors("connect"):
            conn = await AsyncConnection.connect(
                database_url or load_database_url(), autocommit=True
            )
        async with conn:
            return await action(conn)

    try:
        return asyncio.run(main())
    except (AuthError, CloudError, psycopg.Error) as exc:
        fail(str(exc))


def _when(instant: datetime | None) -> str:
    return "never" if instant is None else instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _key_json(key: keys.ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "prefix": key.prefix,
        "name": key.name,
        "role": key.role,
        "scope": key.scope_path,
        "created_at": key.created_at.isoformat(),
        "expires_at": None if key.expires_at is None else key.expires_at.isoformat(),
        "revoked_at": None if key.revoked_at is None else key.revoked_at.isoformat(),
        "last_used_at": None if key.last_used_at is None else key.last_used_at.isoformat(),
    }
