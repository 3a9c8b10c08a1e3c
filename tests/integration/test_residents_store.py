"""Residents' personal data in a real PostgreSQL: sealed at rest, revealed only with a
log row, re-keyed beside live writers, erased on request."""

from __future__ import annotations

import asyncio
import base64
import os
import re
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg.errors import CheckViolation
from typer.testing import CliRunner

from anju.commands import residents as residents_cli
from cloud.errors import RegistryError, StorageError
from cloud.registry import register_community, register_device, register_gateway
from cloud.residents import records
from cloud.residents.crypto import Keyring
from cloud.residents.errors import (
    InvalidResident,
    PersonalDataCorrupt,
    ResidentErased,
    ResidentExists,
    ResidentNotFound,
    UnknownWrappingKey,
)
from cloud.residents.records import EmergencyContact, PersonalData, Viewer
from schemas.vocabulary import DeviceKind

COMMUNITY = "xijin/fenghuang"
OTHER_COMMUNITY = "xijin/meilin"
GATEWAY = "gw-residents"
K1 = ("k1", os.urandom(32))
K2 = ("k2", os.urandom(32))
OLD = Keyring.from_keys([K1])
ROTATING = Keyring.from_keys([K2, K1])
NEW = Keyring.from_keys([K2])
DISPATCHER = Viewer(api_key_id=12, actor="dispatcher-li", role="dispatcher")

WANG = PersonalData(
    name="王秀英",
    phone="+86 (138) 1234-5678",
    emergency_contacts=[
        EmergencyContact(name="王建国", phone="13900001111", relation="son"),
    ],
    medical_notes="Type 2 diabetes, insulin at 08:00 and 20:00; allergic to penicillin.",
)
SECRETS = ("王秀英", "1234-5678", "王建国", "13900001111", "penicillin")


def person(name: str, notes: str = "") -> PersonalData:
    return PersonalData(name=name, phone="13800000000", medical_notes=notes)


async def community_id(conn: AsyncConnection[Any], path: str = COMMUNITY) -> int:
    return (await register_community(conn, path)).id


async def new_resident(
    conn: AsyncConnection[Any],
    reference: str,
    personal: PersonalData | None = WANG,
    keyring: Keyring = OLD,
) -> records.ResidentRecord:
    return await records.register(
        conn,
        keyring,
        community_id=await community_id(conn),
        reference=reference,
        building="3",
        unit="301",
        needs_evacuation_help=True,
        personal=personal,
    )


async def open_incident(
    conn: AsyncConnection[Any],
    *,
    kind: str,
    resident_id: int | None = None,
    device_id: str | None = None,
    claimed_by: str | None = None,
    status: str | None = None,
) -> int:
    """An incident row as the queue leaves it: claimed when ``claimed_by`` is given."""
    status = status or ("open" if claimed_by is None else "claimed")
    cur = await conn.execute(
        "INSERT INTO incidents (type, priority, community_id, building, unit, device_id,"
        " resident_id, scope, status, claimed_by, claimed_at)"
        " VALUES (%s, 1, %s, '3', '301', %s, %s, %s, %s, %s,"
        " CASE WHEN %s::text IS NULL THEN NULL ELSE now() END) RETURNING id",
        [
            kind,
            await community_id(conn),
            device_id,
            resident_id,
            "resident" if resident_id is not None else "device",
            status,
            claimed_by,
            claimed_by,
        ],
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def log_count(conn: AsyncConnection[Any], resident_id: int) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM resident_access_log WHERE resident_id = %s", [resident_id]
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def reveal(
    conn: AsyncConnection[Any], resident_id: int, keyring: Keyring = OLD
) -> PersonalData | None:
    return await records.reveal(
        conn,
        keyring,
        resident_id,
        viewer=DISPATCHER,
        incident_id=None,
        purpose="test",
    )


async def test_personal_data_is_nowhere_in_the_table_in_clear(
    conn: AsyncConnection[Any],
) -> None:
    resident = await new_resident(conn, "care-001")
    assert resident.has_personal_data
    dumps: list[str] = []
    for query in (
        "SELECT * FROM residents",
        "SELECT r::text FROM residents r",
        "SELECT personal_ciphertext::text, personal_wrapped_key::text,"
        " encode(personal_ciphertext, 'escape') FROM residents",
    ):
        cur = await conn.execute(query)
        dumps += [repr(value) for row in await cur.fetchall() for value in row]
    cur = await conn.execute("SELECT personal_ciphertext FROM residents")
    row = await cur.fetchone()
    assert row is not None
    raw = bytes(row[0])
    dump = "\n".join(dumps)
    for secret in SECRETS:
        assert secret not in dump
        assert secret.encode().hex() not in dump
        assert secret.encode() not in raw
    assert await reveal(conn, resident.id) == WANG


async def test_reveal_writes_one_log_row_per_decryption(conn: AsyncConnection[Any]) -> None:
    resident = await new_resident(conn, "care-001")
    incident = await open_incident(conn, kind="fall", resident_id=resident.id)
    for n in range(3):
        shown = await records.reveal(
            conn,
            OLD,
            resident.id,
            viewer=DISPATCHER,
            incident_id=incident,
            purpose=f"call {n}",
        )
        assert shown == WANG
        assert await log_count(conn, resident.id) == n + 1
    log = await records.access_log(conn, resident.id, limit=10)
    assert [entry.purpose for entry in log] == ["call 2", "call 1", "call 0"]
    assert {(e.actor, e.role, e.api_key_id, e.incident_id) for e in log} == {
        ("dispatcher-li", "dispatcher", 12, incident)
    }
    assert len(await records.access_log(conn, resident.id, limit=2)) == 2


async def test_no_data_without_its_log_row(conn: AsyncConnection[Any]) -> None:
    """A log row that cannot be written (here: an unknown incident) withholds the data."""
    resident = await new_resident(conn, "care-001")
    with pytest.raises(StorageError):
        await records.reveal(
            conn, OLD, resident.id, viewer=DISPATCHER, incident_id=999_999, purpose="x"
        )
    assert await log_count(conn, resident.id) == 0
    async with conn.transaction():
        with pytest.raises(ValueError, match="outside"):
            await reveal(conn, resident.id)
    assert await log_count(conn, resident.id) == 0


async def test_nothing_to_decrypt_is_none_and_unlogged(conn: AsyncConnection[Any]) -> None:
    resident = await new_resident(conn, "care-001", personal=None)
    assert not resident.has_personal_data
    assert await reveal(conn, resident.id) is None
    assert await log_count(conn, resident.id) == 0
    with pytest.raises(ResidentNotFound):
        await reveal(conn, 999_999)


async def test_ciphertext_copied_onto_another_row_does_not_open(
    conn: AsyncConnection[Any],
) -> None:
    wang = await new_resident(conn, "care-001")
    li = await new_resident(conn, "care-002", personal=person("李明"))
    await conn.execute(
        "UPDATE residents AS target"
        " SET personal_key_id = source.personal_key_id,"
        "     personal_wrapped_key = source.personal_wrapped_key,"
        "     personal_ciphertext = source.personal_ciphertext"
        " FROM residents AS source WHERE source.id = %s AND target.id = %s",
        [wang.id, li.id],
    )
    with pytest.raises(PersonalDataCorrupt):
        await reveal(conn, li.id)
    assert await log_count(conn, li.id) == 0
    assert await reveal(conn, wang.id) == WANG


async def test_rekey_moves_every_record_to_the_current_key(conn: AsyncConnection[Any]) -> None:
    ids = [(await new_resident(conn, f"care-{n}", person(f"居民{n}"))).id for n in range(5)]
    await new_resident(conn, "care-none", personal=None)
    before = await _sealed_columns(conn)
    seen: list[int] = []

    assert await records.rekey(conn, ROTATING, batch_size=2, progress=seen.append) == 5

    assert seen == [2, 4, 5]
    after = await _sealed_columns(conn)
    assert {key_id for key_id, _, _ in after.values()} == {"k2", None}
    for resident_id in ids:
        assert after[resident_id][2] == before[resident_id][2]  # ciphertext untouched
        assert after[resident_id][1] != before[resident_id][1]
    assert await records.stale_count(conn, NEW) == 0
    assert await records.rekey(conn, ROTATING) == 0
    for n, resident_id in enumerate(ids):
        assert await reveal(conn, resident_id, NEW) == person(f"居民{n}")
    with pytest.raises(UnknownWrappingKey):
        await reveal(conn, ids[0], OLD)


async def test_rekey_stops_at_a_key_removed_too_early(conn: AsyncConnection[Any]) -> None:
    resident = await new_resident(conn, "care-001")
    with pytest.raises(UnknownWrappingKey, match="'k1'"):
        await records.rekey(conn, NEW)
    assert await reveal(conn, resident.id, OLD) == WANG


async def test_concurrent_rekey_and_updates_lose_nothing(database_url: str) -> None:
    """APIs still sealing under the old key update records while rekey runs: every
    record then opens, and holds the last data written to it."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as setup:
        ids = [(await new_resident(setup, f"care-{n}", person(f"v0-{n}"))).id for n in range(80)]
    latest = {resident_id: person(f"v0-{n}") for n, resident_id in enumerate(ids)}
    writers = 8

    async def updates(writer: int) -> None:
        async with await AsyncConnection.connect(database_url, autocommit=True) as api:
            for round_ in range(1, 6):
                for n, resident_id in enumerate(ids[writer::writers]):
                    data = person(f"v{round_}-{writer}-{n}")
                    await records.update(api, OLD, resident_id, personal=data)
                    latest[resident_id] = data

    async def rekeys(writing: asyncio.Future[Any]) -> int:
        rewrapped = 0
        async with await AsyncConnection.connect(database_url, autocommit=True) as rekeying:
            while not writing.done():
                rewrapped += await records.rekey(rekeying, ROTATING, batch_size=80)
        return rewrapped

    writing = asyncio.gather(*(updates(writer) for writer in range(writers)))
    assert await rekeys(writing) > len(ids)  # rekey kept moving records the writers resealed
    await writing
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        for resident_id in ids:
            assert await reveal(conn, resident_id, ROTATING) == latest[resident_id]
        await records.rekey(conn, ROTATING)
        for resident_id in ids:
            assert await reveal(conn, resident_id, NEW) == latest[resident_id]


async def test_rekey_skips_rows_a_writer_holds(database_url: str) -> None:
    """Rekey beside a live API: a row locked by a writer is skipped, not waited for."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        held = (await new_resident(conn, "care-held")).id
        free = (await new_resident(conn, "care-free")).id
        async with await AsyncConnection.connect(database_url) as writer:
            await writer.execute("SELECT 1 FROM residents WHERE id = %s FOR UPDATE", [held])
            done = await asyncio.wait_for(records.rekey(conn, ROTATING), timeout=10)
            assert done == 1
            assert await records.stale_count(conn, ROTATING) == 1
            await writer.rollback()
        assert await records.rekey(conn, ROTATING) == 1
        assert await records.stale_count(conn, ROTATING) == 0
        for resident_id in (held, free):
            assert await reveal(conn, resident_id, NEW) == WANG


async def test_erase_deletes_personal_data_and_keeps_incidents(
    conn: AsyncConnection[Any],
) -> None:
    resident = await new_resident(conn, "care-001")
    incident = await open_incident(conn, kind="fall", resident_id=resident.id)
    await reveal(conn, resident.id)

    await records.erase(conn, resident.id)

    erased = await records.get(conn, resident.id)
    assert erased is not None
    assert (erased.status, erased.reference) == ("erased", f"erased-{resident.id}")
    assert not erased.has_personal_data
    assert not erased.needs_evacuation_help
    assert erased.erased_at is not None
    cur = await conn.execute(
        "SELECT personal_key_id, personal_wrapped_key, personal_ciphertext"
        " FROM residents WHERE id = %s",
        [resident.id],
    )
    assert await cur.fetchone() == (None, None, None)
    cur = await conn.execute("SELECT resident_id FROM incidents WHERE id = %s", [incident])
    assert await cur.fetchone() == (resident.id,)
    assert await log_count(conn, resident.id) == 1
    assert await reveal(conn, resident.id) is None

    await records.erase(conn, resident.id)
    again = await records.get(conn, resident.id)
    assert again is not None
    assert again.erased_at == erased.erased_at
    with pytest.raises(ResidentErased):
        await records.update(conn, OLD, resident.id, personal=WANG)
    with pytest.raises(ResidentNotFound):
        await records.erase(conn, 999_999)
    # The care provider may register the person again: a new row, nothing carried over.
    returned = await new_resident(conn, "care-001", personal=None)
    assert returned.id != resident.id


async def test_an_erased_row_cannot_be_revived(conn: AsyncConnection[Any]) -> None:
    """The database itself refuses to reactivate an erased row or seal data onto it,
    whatever code tries."""
    resident = await new_resident(conn, "care-001")
    await records.erase(conn, resident.id)
    for revival in (
        "UPDATE residents SET status = 'active' WHERE id = %s",
        "UPDATE residents SET personal_key_id = 'k1', personal_wrapped_key = 'x',"
        " personal_ciphertext = 'x' WHERE id = %s",
    ):
        with pytest.raises(CheckViolation):
            await conn.execute(revival, [resident.id])
    with pytest.raises(InvalidResident, match="erased-"):
        await new_resident(conn, "erased-77")


async def test_update_changes_only_what_is_given(conn: AsyncConnection[Any]) -> None:
    resident = await new_resident(conn, "care-001")
    moved = await records.update(conn, NEW, resident.id, unit="302")
    assert (moved.building, moved.unit, moved.needs_evacuation_help) == ("3", "302", True)
    assert moved.updated_at >= resident.updated_at
    assert await reveal(conn, resident.id, OLD) == WANG  # personal data kept as sealed

    changed = WANG.model_copy(update={"medical_notes": "No longer on insulin."})
    await records.update(conn, NEW, resident.id, personal=changed)
    assert await reveal(conn, resident.id, NEW) == changed

    removed = await records.update(conn, NEW, resident.id, personal=None)
    assert not removed.has_personal_data
    assert await reveal(conn, resident.id, NEW) is None
    with pytest.raises(ResidentNotFound):
        await records.update(conn, NEW, 999_999, unit="1")


async def test_register_refuses_duplicates_and_non_communities(
    conn: AsyncConnection[Any],
) -> None:
    await new_resident(conn, "care-001")
    with pytest.raises(ResidentExists):
        await new_resident(conn, "care-001", personal=None)
    home = await register_community(conn, COMMUNITY)
    assert home.parent_id is not None
    with pytest.raises(InvalidResident, match="not a community"):
        await records.register(
            conn,
            OLD,
            community_id=home.parent_id,  # the street
            reference="care-002",
            building="3",
            unit="301",
        )
    with pytest.raises(InvalidResident, match="building"):
        await records.register(
            conn, OLD, community_id=home.id, reference="care-003", building="", unit="1"
        )
    cur = await conn.execute("SELECT count(*) FROM residents")
    assert await cur.fetchone() == (1,)


async def test_list_page_walks_by_id_within_communities(conn: AsyncConnection[Any]) -> None:
    home = await community_id(conn)
    other = await community_id(conn, OTHER_COMMUNITY)
    made = []
    for n in range(5):
        made.append(
            await records.register(
                conn,
                OLD,
                community_id=home if n % 2 == 0 else other,
                reference=f"care-{n}",
                building="1",
                unit=str(n),
            )
        )
    first = await records.list_page(conn, community_ids=None, after_id=None, limit=3)
    rest = await records.list_page(conn, community_ids=None, after_id=first[-1].id, limit=3)
    assert [r.id for r in first + rest] == [r.id for r in made]
    mine = await records.list_page(conn, community_ids=[home], after_id=None, limit=10)
    assert [r.reference for r in mine] == ["care-0", "care-2", "care-4"]
    assert await records.list_page(conn, community_ids=[], after_id=None, limit=10) == []


async def test_holds_open_incident_by_subject_and_claimant(conn: AsyncConnection[Any]) -> None:
    resident = await new_resident(conn, "care-001")
    other = await new_resident(conn, "care-002")
    await register_gateway(conn, GATEWAY, COMMUNITY)
    band = await register_device(
        conn,
        "band-1",
        gateway_id=GATEWAY,
        kind=DeviceKind.WEARABLE,
        profile_id="test",
        resident_id=resident.id,
    )
    assert band.resident_id == resident.id
    await register_device(
        conn, "band-2", gateway_id=GATEWAY, kind=DeviceKind.WEARABLE, profile_id="test"
    )

    async def held(actor: str = "alice") -> int | None:
        return await records.holds_open_incident(conn, resident.id, actor=actor)

    assert await held() is None
    await open_incident(conn, kind="sos", device_id="band-2", claimed_by="alice")
    await open_incident(conn, kind="sos", resident_id=other.id, claimed_by="alice")
    await open_incident(conn, kind="smoke", resident_id=resident.id, status="open")
    await open_incident(
        conn, kind="fall", resident_id=resident.id, claimed_by="alice", status="resolved"
    )
    assert await held() is None
    by_device = await open_incident(conn, kind="fall", device_id="band-1", claimed_by="alice")
    assert await held() == by_device
    assert await held("bob") is None
    await conn.execute("UPDATE incidents SET status = 'dispatched' WHERE id = %s", [by_device])
    assert await held() == by_device
    direct = await open_incident(
        conn, kind="evacuation_help", resident_id=resident.id, claimed_by="alice"
    )
    assert await held() == direct


async def test_device_bound_to_an_unknown_resident_is_refused(
    conn: AsyncConnection[Any],
) -> None:
    await register_community(conn, COMMUNITY)
    await register_gateway(conn, GATEWAY, COMMUNITY)
    with pytest.raises(RegistryError, match="unknown resident"):
        await register_device(
            conn,
            "band-1",
            gateway_id=GATEWAY,
            kind=DeviceKind.WEARABLE,
            profile_id="test",
            resident_id=999_999,
        )


def test_personal_data_model_refuses_what_it_cannot_keep() -> None:
    too_many = [EmergencyContact(name="x", phone="1", relation="friend")] * 6
    for bad in (
        {"name": "", "phone": "1"},
        {"name": "a\x00b", "phone": "1"},
        {"name": "x" * 101, "phone": "1"},
        {"name": "Wang", "phone": "call me"},
        {"name": "Wang", "phone": "1" * 33},
        {"name": "Wang", "phone": "1", "medical_notes": "n" * 4001},
        {"name": "Wang", "phone": "1", "medical_notes": "\x00"},
        {"name": "Wang", "phone": "1", "emergency_contacts": too_many},
        {"name": "Wang", "phone": "1", "blood_type": "A"},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 (pydantic's ValidationError)
            PersonalData.model_validate(bad)


async def _sealed_columns(
    conn: AsyncConnection[Any],
) -> dict[int, tuple[str | None, bytes | None, bytes | None]]:
    cur = await conn.execute(
        "SELECT id, personal_key_id, personal_wrapped_key, personal_ciphertext FROM residents"
    )
    return {row[0]: (row[1], row[2], row[3]) for row in await cur.fetchall()}


def test_cli_makes_a_key_and_rekeys_onto_it(database_url: str) -> None:
    """`keygen` prints an entry the settings accept; `rekey` moves records onto it."""
    runner = CliRunner()
    made = runner.invoke(residents_cli.app, ["keygen", "--id", "k2"])
    assert made.exit_code == 0, made.output
    entry = made.stdout.strip()
    assert entry.startswith("k2:")
    assert len(base64.b64decode(entry.removeprefix("k2:"))) == 32
    default = runner.invoke(residents_cli.app, ["keygen"]).stdout.strip()
    assert re.fullmatch(r"k\d{8}:[A-Za-z0-9+/]{43}=", default)

    async def setup() -> None:
        async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
            for n in range(3):
                await new_resident(conn, f"care-{n}")

    asyncio.run(setup())
    old_entry = f"k1:{base64.b64encode(K1[1]).decode()}"
    env = {"ANJU_DATABASE_URL": database_url, "ANJU_RESIDENT_KEYS": f"{entry},{old_entry}"}
    moved = runner.invoke(residents_cli.app, ["rekey", "--batch-size", "2"], env=env)
    assert moved.exit_code == 0, moved.output
    assert "... 2 records rewrapped" in moved.stderr
    assert moved.stdout.strip() == "rewrapped 3 records under key k2"
    bare = runner.invoke(residents_cli.app, ["rekey"], env={**env, "ANJU_RESIDENT_KEYS": ""})
    assert bare.exit_code == 1
    assert "ANJU_RESIDENT_KEYS" in bare.stderr
