"""Residents and their personal data: stored sealed, shown only through a logged read.

A resident row holds in clear only what the rule engine needs (community, building,
unit, whether they need help to leave in a fire) and the care provider's opaque
reference. Name, phone, emergency contacts and medical notes are one ``PersonalData``
value, serialised as JSON and sealed (``cloud.residents.crypto``) with associated data
naming the row, so sealed data copied onto another resident does not open.

``reveal`` is the only way to the plaintext, and it writes an access-log row in the
transaction that decrypts; ``get`` and ``list_page`` never decrypt. Every function
takes an autocommit connection (the pool's kind); those running several statements run
them in one transaction of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Final

from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg.rows import class_row
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from cloud.residents.crypto import Keyring, Sealed, rewrap, seal, unseal
from cloud.residents.errors import (
    InvalidResident,
    PersonalDataCorrupt,
    ResidentErased,
    ResidentExists,
    ResidentNotFound,
)
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries

_NO_NUL: Final = r"^[^\x00]*$"
_TEXT_LIMIT: Final = 64
ERASED_PREFIX: Final = "erased-"
"""Erasure replaces a resident's reference by ``erased-{id}``; live references may not
start so, which keeps the replacement unique."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=_NO_NUL)]
Phone = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[0-9 +()-]+$")]


class EmergencyContact(BaseModel):
    """Someone to call for the resident: their name, phone and relation to the resident."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    name: Name
    phone: Phone
    relation: Annotated[str, StringConstraints(min_length=1, max_length=50, pattern=_NO_NUL)]


class PersonalData(BaseModel):
    """What a dispatcher needs to help the person, and what PIPL wants sealed.

    No text may hold NUL: PostgreSQL's text and jsonb refuse it, so data that ever
    leaves the sealed JSON (an export, a report) could not be stored, and C-based
    tools would cut it short.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    name: Name
    phone: Phone
    emergency_contacts: list[EmergencyContact] = Field(default_factory=list, max_length=5)
    medical_notes: Annotated[str, StringConstraints(max_length=4000, pattern=_NO_NUL)] = ""


class Keep(Enum):
    """``update``'s default for ``personal``: the sealed data stays as it is."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP


@dataclass(frozen=True, slots=True)
class ResidentRecord:
    """A resident as listed: never personal data, only whether some is stored."""

    id: int
    community_id: int
    reference: str
    building: str
    unit: str
    needs_evacuation_help: bool
    status: str
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None
    has_personal_data: bool


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who reveals personal data: recorded in the access log with every decryption.

    ``api_key_id`` is the API key used (None for a tool run by an operator), ``actor``
    the person or tool it belongs to, ``role`` the role it acted in.
    """

    api_key_id: int | None
    actor: str
    role: str


@dataclass(frozen=True, slots=True)
class AccessLogEntry:
    """One decryption: who, when, in which role, under which incident, and why."""

    id: int
    at: datetime
    resident_id: int
    incident_id: int | None
    api_key_id: int | None
    actor: str
    role: str
    purpose: str


async def register(
    conn: AsyncConnection[Any],
    keyring: Keyring,
    *,
    community_id: int,
    reference: str,
    building: str,
    unit: str,
    needs_evacuation_help: bool = False,
    personal: PersonalData | None = None,
) -> ResidentRecord:
    """Register a new resident of community node ``community_id``, with personal data
    sealed when given.

    The row is inserted, then sealed under associated data naming its new id, in one
    transaction: nobody sees it half made. Raises ResidentExists for a reference
    registered already, InvalidResident for an empty or overlong field, a reference
    starting ``erased-`` or a community id that is not a community, NoResidentKeys
    when ``personal`` is given and the keyring is empty.
    """
    _check_text("reference", reference)
    if reference.startswith(ERASED_PREFIX):
        raise InvalidResident("reference", f"may not start with {ERASED_PREFIX!r}")
    _check_text("building", building)
    _check_text("unit", unit)
    sql = queries()
    async with conn.transaction():
        with storage_errors("resident_community_tier"):
            cur = await conn.execute(sql["resident_community_tier"], {"id": community_id})
            tier = await cur.fetchone()
        if tier is None or tier[0] != "community":
            raise InvalidResident("community_id", f"{community_id} is not a community")
        params = {
            "community_id": community_id,
            "reference": reference,
            "building": building,
            "unit": unit,
            "needs_help": needs_evacuation_help,
        }
        record = await _fetch_record(conn, "resident_insert", params)
        if record is None:
            raise ResidentExists(reference)
        if personal is not None:
            record = await _update(conn, keyring, record.id, personal=personal)
    return record


async def update(
    conn: AsyncConnection[Any],
    keyring: Keyring,
    resident_id: int,
    *,
    building: str | None = None,
    unit: str | None = None,
    needs_evacuation_help: bool | None = None,
    personal: PersonalData | Keep | None = KEEP,
) -> ResidentRecord:
    """Change what is given and keep the rest; None (the default) keeps building, unit
    or the evacuation flag.

    ``personal`` replaces the personal data as a whole, sealed under a fresh data key,
    or with None removes it; ``KEEP`` (the default) leaves it. Raises ResidentNotFound,
    ResidentErased (an erased resident takes no new data), InvalidResident,
    NoResidentKeys when new personal data is given and the keyring is empty.
    """
    for label, text in (("building", building), ("unit", unit)):
        if text is not None:
            _check_text(label, text)
    return await _update(
        conn,
        keyring,
        resident_id,
        building=building,
        unit=unit,
        needs_evacuation_help=needs_evacuation_help,
        personal=personal,
    )


async def erase(conn: AsyncConnection[Any], resident_id: int) -> None:
    """Honour the resident's deletion right (PIPL): their personal data is gone for good.

    The sealed data and wrapped key are deleted, the reference becomes
    ``erased-{id}``, the evacuation flag is cleared and the status is ``erased``.
    Incidents and access-log rows about the resident stay: they hold no personal data,
    and the log answers who saw it while it existed. Erasing again changes nothing.
    Raises ResidentNotFound.
    """
    with storage_errors("resident_erase"):
        cur = await conn.execute(queries()["resident_erase"], {"id": resident_id})
        row = await cur.fetchone()
    if row is None:
        raise ResidentNotFound(resident_id)


async def get(conn: AsyncConnection[Any], resident_id: int) -> ResidentRecord | None:
    """The resident without personal data, or None."""
    return await _fetch_record(conn, "resident_get", {"id": resident_id})


async def list_page(
    conn: AsyncConnection[Any],
    *,
    community_ids: Sequence[int] | None,
    after_id: int | None,
    limit: int,
    status: str | None = None,
) -> list[ResidentRecord]:
    """Up to ``limit`` residents with ids above ``after_id``, by id, of ``status`` or
    (None) of every status.

    ``community_ids`` None means every community (an admin's view); otherwise only
    residents of those community nodes. Raises ValueError for a ``limit`` below 1.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    params = {
        "community_ids": None if community_ids is None else list(community_ids),
        "status": status,
        "after_id": after_id,
        "limit": limit,
    }
    with storage_errors("resident_page"):
        cur = conn.cursor(row_factory=class_row(ResidentRecord))
        await cur.execute(queries()["resident_page"], params)
        return await cur.fetchall()


async def reveal(
    conn: AsyncConnection[Any],
    keyring: Keyring,
    resident_id: int,
    *,
    viewer: Viewer,
    incident_id: int | None,
    purpose: str,
) -> PersonalData | None:
    """Decrypt the resident's personal data for ``viewer`` and log that it was shown.

    The access-log row is written in the transaction that decrypts, and the data is
    returned only after that transaction committed, so no decryption goes unlogged.
    Hence ``conn`` must not be inside a transaction (an outer rollback would drop the
    row after the data was out). Whether ``viewer`` may see it is the caller's
    decision (``holds_open_incident`` gives a dispatcher's grounds).

    Returns None, and logs nothing, when the resident has no personal data (never
    stored, removed or erased): the log records disclosures, and nothing was
    disclosed. Raises ResidentNotFound, NoResidentKeys, UnknownWrappingKey,
    PersonalDataCorrupt, or ValueError for an empty purpose or actor, or a connection
    inside a transaction.
    """
    if not purpose.strip() or not viewer.actor.strip() or not viewer.role.strip():
        raise ValueError("revealing personal data needs a purpose, an actor and a role")
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("reveal commits its own transaction: pass a connection outside one")
    sql = queries()
    async with conn.transaction():
        with storage_errors("resident_sealed"):
            cur = await conn.execute(sql["resident_sealed"], {"id": resident_id})
            row = await cur.fetchone()
        if row is None:
            raise ResidentNotFound(resident_id)
        key_id, wrapped_key, ciphertext = row
        if key_id is None:
            return None
        plaintext = unseal(keyring, Sealed(key_id, wrapped_key, ciphertext), aad=_aad(resident_id))
        try:
            personal = PersonalData.model_validate_json(plaintext)
        except ValidationError:
            raise PersonalDataCorrupt(
                "decrypted, but not personal data as Anju stores it"
            ) from None
        with storage_errors("resident_log_access"):
            await conn.execute(
                sql["resident_log_access"],
                {
                    "resident_id": resident_id,
                    "incident_id": incident_id,
                    "api_key_id": viewer.api_key_id,
                    "actor": viewer.actor,
                    "role": viewer.role,
                    "purpose": purpose,
                },
            )
    return personal


async def access_log(
    conn: AsyncConnection[Any], resident_id: int, *, limit: int, before_id: int | None = None
) -> list[AccessLogEntry]:
    """The latest ``limit`` decryptions of the resident's data, newest first; with
    ``before_id``, the latest of those logged before that row (the next page).

    Raises ValueError for a ``limit`` below 1.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    params = {"resident_id": resident_id, "before_id": before_id, "limit": limit}
    with storage_errors("resident_access_log"):
        cur = conn.cursor(row_factory=class_row(AccessLogEntry))
        await cur.execute(queries()["resident_access_log"], params)
        return await cur.fetchall()


async def holds_open_incident(
    conn: AsyncConnection[Any], resident_id: int, *, actor: str
) -> int | None:
    """The id of an open incident about the resident that ``actor`` has claimed, or None.

    Open means claimed, acknowledged or dispatched. About the resident means the
    incident names them, or it is about a device bound to them (their wearable). The
    API's grounds for letting a dispatcher reveal; the id goes into the access log.
    """
    with storage_errors("resident_open_incident_of_actor"):
        cur = await conn.execute(
            queries()["resident_open_incident_of_actor"],
            {"resident_id": resident_id, "actor": actor},
        )
        row = await cur.fetchone()
    return None if row is None else int(row[0])


async def incident_resident(
    conn: AsyncConnection[Any],
    incident_id: int,
    *,
    scope: Sequence[int] | None,
    claimed_by: str | None = None,
) -> int | None:
    """The id of the resident incident ``incident_id`` is about, or None.

    About means what ``holds_open_incident`` means: the incident names the resident,
    or its device is bound to them. None too when the incident is not in ``scope``
    (community node ids, None for all) or, with ``claimed_by``, when it is not open
    and claimed by that actor: the grounds for showing a dispatcher whose it is.
    """
    params = {
        "id": incident_id,
        "scope": None if scope is None else list(scope),
        "claimed_by": claimed_by,
    }
    with storage_errors("resident_of_incident"):
        cur = await conn.execute(queries()["resident_of_incident"], params)
        row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def rekey(
    conn: AsyncConnection[Any],
    keyring: Keyring,
    *,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Rewrap every record wrapped by a key other than the keyring's current one.

    Only the data keys are rewrapped; no personal data is decrypted. Each batch is its
    own transaction and locks its rows with ``FOR UPDATE SKIP LOCKED``, so this runs
    beside a live API: a record being updated is skipped (the update seals it under
    the current key anyway), and an update waits for the batch holding its row.
    ``progress`` is called after each batch with the count rewrapped so far. Returns
    how many records were rewrapped; ``stale_count`` tells what is left (rows a writer
    held). Raises NoResidentKeys, UnknownWrappingKey for a record whose key was
    removed from the keyring too early (batches before it stay committed),
    PersonalDataCorrupt, or ValueError for a ``batch_size`` below 1.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    current = keyring.current
    sql = queries()
    done, after_id = 0, 0
    while True:
        async with conn.transaction():
            with storage_errors("resident_rekey_batch"):
                cur = await conn.execute(
                    sql["resident_rekey_batch"],
                    {"after_id": after_id, "current": current, "limit": batch_size},
                )
                rows = await cur.fetchall()
            if not rows:
                return done
            wrapped_keys = [
                rewrap(keyring, Sealed(key_id, wrapped_key, ciphertext)).wrapped_key
                for _, key_id, wrapped_key, ciphertext in rows
            ]
            with storage_errors("resident_rewrap"):
                await conn.execute(
                    sql["resident_rewrap"],
                    {
                        "key_id": current,
                        "ids": [row[0] for row in rows],
                        "wrapped_keys": wrapped_keys,
                    },
                )
        done += len(rows)
        after_id = rows[-1][0]
        if progress is not None:
            progress(done)


async def stale_count(conn: AsyncConnection[Any], keyring: Keyring) -> int:
    """How many records are wrapped by a key other than the keyring's current one.

    Zero after ``rekey`` means the other keys may be removed from ANJU_RESIDENT_KEYS.
    Raises NoResidentKeys for an empty keyring.
    """
    with storage_errors("resident_stale_count"):
        cur = await conn.execute(queries()["resident_stale_count"], {"current": keyring.current})
        row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def _update(
    conn: AsyncConnection[Any],
    keyring: Keyring,
    resident_id: int,
    *,
    building: str | None = None,
    unit: str | None = None,
    needs_evacuation_help: bool | None = None,
    personal: PersonalData | Keep | None = KEEP,
) -> ResidentRecord:
    sealed: Sealed | None = None
    if isinstance(personal, PersonalData):
        plaintext = personal.model_dump_json().encode("utf-8")
        sealed = seal(keyring, plaintext, aad=_aad(resident_id))
    params = {
        "id": resident_id,
        "building": building,
        "unit": unit,
        "needs_help": needs_evacuation_help,
        "set_personal": personal is not KEEP,
        "key_id": sealed.key_id if sealed else None,
        "wrapped_key": sealed.wrapped_key if sealed else None,
        "ciphertext": sealed.ciphertext if sealed else None,
    }
    record = await _fetch_record(conn, "resident_update", params)
    if record is not None:
        return record
    if await get(conn, resident_id) is None:
        raise ResidentNotFound(resident_id)
    raise ResidentErased(resident_id)


async def _fetch_record(
    conn: AsyncConnection[Any], name: str, params: dict[str, Any]
) -> ResidentRecord | None:
    with storage_errors(name):
        cur = conn.cursor(row_factory=class_row(ResidentRecord))
        await cur.execute(queries()[name], params)
        return await cur.fetchone()


def _aad(resident_id: int) -> bytes:
    """Associated data binding sealed data to its row."""
    return b"anju-resident:%d" % resident_id


def _check_text(label: str, text: str) -> None:
    if not 0 < len(text) <= _TEXT_LIMIT or "\x00" in text:
        raise InvalidResident(label, f"must be 1-{_TEXT_LIMIT} characters, without NUL")
