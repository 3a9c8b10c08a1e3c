"""``anju cloud residents``: the keys that seal residents' personal data.

``keygen`` makes a key-encryption key for ANJU_RESIDENT_KEYS; ``rekey`` moves every
record onto the current key, so an old one can then be removed (docs/residents.md).
"""

import asyncio
import base64
import os
from datetime import UTC, datetime
from typing import Annotated

import typer
from psycopg import AsyncConnection

from anju.commands.common import fail
from cloud.errors import CloudError
from cloud.residents import records
from cloud.residents.crypto import KEY_BYTES, KEY_ID_FORM, Keyring
from cloud.settings import load_settings
from cloud.storage.database import storage_errors

app = typer.Typer(
    help="Keys that seal residents' personal data (ANJU_RESIDENT_KEYS): make one, and "
    "move every record onto the current one. docs/residents.md.",
    no_args_is_help=True,
)

KeyId = Annotated[
    str | None,
    typer.Option(
        "--id",
        metavar="ID",
        help=f"The key's id ({KEY_ID_FORM}). Default: k and today's UTC date, as k20261203.",
        show_default=False,
    ),
]
BatchSize = Annotated[
    int,
    typer.Option(
        "--batch-size",
        min=1,
        help="Records per transaction. Each batch locks only its own rows and skips rows "
        "a live writer holds, so rekey runs beside the API.",
    ),
]


@app.command(
    epilog="Example: anju cloud residents keygen --id k20261203   (prints k20261203:BASE64)"
)
def keygen(key_id: KeyId = None) -> None:
    """Print a new key entry, ID:BASE64, for ANJU_RESIDENT_KEYS.

    The entry is a secret: whoever holds it and a copy of the database can read every
    resident's personal data. Put it first in ANJU_RESIDENT_KEYS (the first key seals
    new records), keep the older keys after it, restart the cloud, then run `anju cloud
    residents rekey`; only then remove the old keys.
    """
    key_id = key_id if key_id is not None else f"k{datetime.now(UTC):%Y%m%d}"
    secret = os.urandom(KEY_BYTES)
    try:
        Keyring.from_keys([(key_id, secret)])
    except CloudError as exc:
        fail(str(exc))
    typer.echo(f"{key_id}:{base64.b64encode(secret).decode('ascii')}")


@app.command(
    epilog="Example: ANJU_DATABASE_URL=postgresql://anju@db:5432/anju "
    "ANJU_RESIDENT_KEYS=k20261203:...,k20250601:... anju cloud residents rekey\n\n"
    "Environment: ANJU_DATABASE_URL (postgresql://user[:password]@host[:port]/dbname), "
    "ANJU_RESIDENT_KEYS (ID:BASE64 entries, comma-separated, the current key first)."
)
def rekey(batch_size: BatchSize = 500) -> None:
    """Rewrap every record sealed under an older key with the current (first) key.

    Only each record's data key is rewrapped; no personal data is decrypted. Prints
    progress per batch, then how many records moved. Exits 1 if records are left under
    older keys (a writer held them: run it again); once it exits 0 the older keys may
    be removed from ANJU_RESIDENT_KEYS.
    """
    try:
        settings = load_settings(require_mqtt=False)
        keyring = Keyring.from_keys(
            (key.id, key.secret.get_secret_value()) for key in settings.residents.keys
        )
        done, left = asyncio.run(_rekey(settings.database_url, keyring, batch_size))
    except CloudError as exc:
        fail(str(exc))
    typer.echo(f"rewrapped {done} records under key {keyring.current}")
    if left:
        fail(f"{left} records are still under older keys (a writer held them); run rekey again")


async def _rekey(database_url: str, keyring: Keyring, batch_size: int) -> tuple[int, int]:
    """Rekey on one autocommit connection; returns (rewrapped, left under older keys)."""

    def progress(done: int) -> None:
        if done >= batch_size:
            typer.echo(f"... {done} records rewrapped", err=True)

    with storage_errors("connect"):
        conn = await AsyncConnection.connect(database_url, autocommit=True)
    async with conn:
        done = await records.rekey(conn, keyring, batch_size=batch_size, progress=progress)
        return done, await records.stale_count(conn, keyring)
