"""``/residents``: registering, updating and erasing residents, and showing their
personal data only to whom it is due, every showing logged (docs/residents.md).

Lists and single residents never carry personal data, only whether some is stored.
The data itself is read through ``GET /residents/{id}/personal`` or, from the
dispatch console, ``GET /incidents/{id}/resident``. An admin key in reach of the
resident may read it (purpose ``admin``); any other key only while its holder has
claimed an incident about the resident that is still open (purpose ``incident``).
Everyone else gets 404, exactly as for a resident that does not exist, so a
dispatcher cannot learn who lives where by probing ids. Each reading writes one
access-log row (``GET /residents/{id}/access-log``, admins only) before the data is
sent, and the answer carries ``Cache-Control: no-store``.

Personal data needs ``ANJU_RESIDENT_KEYS``: without it, storing or reading some is
503, since only the operator can fix that, and registering without it still works.
An erased resident's data is gone: reading it is 404.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any, Final, Literal, NoReturn, Self, cast

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from psycopg import AsyncConnection
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud.api.deps import ConnectionDep
from cloud.api.pagination import CursorQuery, Page, decode_id, id_page
from cloud.api.params import MAX_ID, NO_NUL, IdPath, Limit
from cloud.api.problems import problem_response
from cloud.api.scoping import CommunityQuery, TierQuery, reachable_node, scope_within
from cloud.api.security import allowed
from cloud.auth.principal import Principal
from cloud.auth.roles import Permission, Role
from cloud.residents import records
from cloud.residents.crypto import Keyring
from cloud.residents.errors import (
    InvalidResident,
    NoResidentKeys,
    PersonalDataCorrupt,
    ResidentErased,
    ResidentExists,
    ResidentNotFound,
    UnknownWrappingKey,
)
from cloud.residents.records import PersonalData, ResidentRecord, Viewer
from cloud.tree import list_nodes
from schemas.wire import COMMUNITY_PATH_PATTERN

ResidentStatus = Literal["active", "moved_out", "erased"]
Label = Annotated[str, Field(min_length=1, max_length=64, pattern=NO_NUL)]


class ResidentView(BaseModel):
    """A resident as listed: where they live and whether personal data is stored, never
    the data itself."""

    model_config = ConfigDict(frozen=True)

    id: int
    community: str
    """The community's path, ``street/community``."""
    building: str
    unit: str
    needs_evacuation_help: bool
    reference: str
    """The care provider's own id for the person; ``erased-{id}`` once erased."""
    status: ResidentStatus
    has_personal_data: bool
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None


class ResidentRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    community: Annotated[str, Field(pattern=COMMUNITY_PATH_PATTERN, max_length=65)]
    """The community the resident lives in, ``street/community``: never a street or city."""
    reference: Label
    """The care provider's own id for the person, unique; may not start ``erased-``."""
    building: Label
    unit: Label
    needs_evacuation_help: bool = False
    """In a fire, the rules open an evacuation-assistance incident for the resident."""
    personal: PersonalData | None = None
    """Sealed when stored, never answered back; needs ``ANJU_RESIDENT_KEYS``."""


class ResidentChange(BaseModel):
    """What changes; what is left out stays. ``personal`` replaces the personal data as a
    whole, and ``null`` removes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    building: Label | None = None
    unit: Label | None = None
    needs_evacuation_help: bool | None = None
    personal: PersonalData | None = None

    @model_validator(mode="after")
    def _null_only_for_personal(self) -> Self:
        """``null`` means "remove" for personal data; the others cannot be removed."""
        nulls = [
            name
            for name in ("building", "unit", "needs_evacuation_help")
            if name in self.model_fields_set and getattr(self, name) is None
        ]
        if nulls:
            raise ValueError(f"{', '.join(nulls)} may be left out but not null")
        return self


class PersonalDataShown(BaseModel):
    """A resident's personal data, as shown to one viewer and logged."""

    model_config = ConfigDict(frozen=True)

    resident: ResidentView
    personal: PersonalData | None
    """Null when none is stored: then nothing was shown and nothing logged."""
    incident_id: int | None
    """The incident that justified the showing, as logged; null for an admin's without one."""
    purpose: Literal["admin", "incident"]


class AccessLogView(BaseModel):
    """One showing of the resident's personal data: who, when, in which role, and why."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: int
    at: datetime
    incident_id: int | None
    api_key_id: int | None
    actor: str
    role: str
    purpose: str


log = logging.getLogger(__name__)
router = APIRouter(tags=["residents"])

Reader = Annotated[Principal, allowed(Permission.RESIDENTS_READ)]
Manager = Annotated[Principal, allowed(Permission.RESIDENTS_MANAGE)]
Revealer = Annotated[Principal, allowed(Permission.RESIDENTS_REVEAL)]
Auditor = Annotated[Principal, allowed(Permission.RESIDENTS_AUDIT)]
IncidentQuery = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_ID,
        description="The incident the reading is for; an admin may leave it out, and it "
        "must be about the resident",
    ),
]

NO_STORE: Final = {"Cache-Control": "no-store"}
_NOT_FOUND: Final = problem_response("No resident with this id in reach")
_NO_KEYS: Final = problem_response(
    "ANJU_RESIDENT_KEYS is not configured (or lacks the key a record needs); the operator "
    "must set it"
)
_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {HTTPStatus.NOT_FOUND.value: _NOT_FOUND}
_REVEAL_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    HTTPStatus.NOT_FOUND.value: problem_response(
        "No such resident in reach, erased, or no grounds to see their data (for a "
        "dispatcher: no open incident about them that she claimed); these are not told apart"
    ),
    HTTPStatus.INTERNAL_SERVER_ERROR.value: problem_response(
        "The stored data failed authentication: it was altered or moved between rows"
    ),
    HTTPStatus.SERVICE_UNAVAILABLE.value: _NO_KEYS,
}


async def get_keyring(request: Request) -> Keyring:
    """The keyring ``create_app`` built from ANJU_RESIDENT_KEYS."""
    return cast(Keyring, request.app.state.keyring)


KeyringDep = Annotated[Keyring, Depends(get_keyring)]


@router.get(
    "/residents",
    response_model=Page[ResidentView],
    responses={HTTPStatus.NOT_FOUND.value: problem_response("No node at `community` in reach")},
)
async def list_residents(
    conn: ConnectionDep,
    principal: Reader,
    community: CommunityQuery = None,
    tier: TierQuery = None,
    status: ResidentStatus | None = None,
    limit: Limit = 100,
    cursor: CursorQuery = None,
) -> Page[ResidentView]:
    """Residents of the communities the key reaches (of ``community``'s subtree when
    given), by id; never their personal data."""
    scope = await scope_within(conn, principal, community, tier)
    found = await records.list_page(
        conn,
        community_ids=scope,
        after_id=decode_id(cursor),
        limit=limit + 1,
        status=status,
    )
    items = await _views(conn, found)
    return id_page(items, limit)


@router.post(
    "/residents",
    response_model=ResidentView,
    status_code=HTTPStatus.CREATED,
    responses={
        HTTPStatus.NOT_FOUND.value: problem_response("No community at `community` in reach"),
        HTTPStatus.CONFLICT.value: problem_response("A resident has this reference already"),
        HTTPStatus.SERVICE_UNAVAILABLE.value: _NO_KEYS,
    },
)
async def register_resident(
    conn: ConnectionDep, principal: Manager, keyring: KeyringDep, body: ResidentRequest
) -> ResidentView:
    """Register a resident, with personal data sealed when given; the answer says
    whether some is stored but never shows it."""
    community_id = await reachable_node(conn, principal, body.community)
    with _refusals():
        record = await records.register(
            conn,
            keyring,
            community_id=community_id,
            reference=body.reference,
            building=body.building,
            unit=body.unit,
            needs_evacuation_help=body.needs_evacuation_help,
            personal=body.personal,
        )
    return (await _views(conn, [record]))[0]


@router.get("/residents/{resident_id}", response_model=ResidentView, responses=_RESPONSES)
async def get_resident(conn: ConnectionDep, principal: Reader, resident_id: IdPath) -> ResidentView:
    """One resident, without personal data."""
    return (await _views(conn, [await _resident(conn, principal, resident_id)]))[0]


@router.patch(
    "/residents/{resident_id}",
    response_model=ResidentView,
    responses={
        **_RESPONSES,
        HTTPStatus.CONFLICT.value: problem_response("The resident was erased"),
        HTTPStatus.SERVICE_UNAVAILABLE.value: _NO_KEYS,
    },
)
async def update_resident(
    conn: ConnectionDep,
    principal: Manager,
    keyring: KeyringDep,
    resident_id: IdPath,
    body: ResidentChange,
) -> ResidentView:
    """Change what the body gives; ``personal`` is replaced whole, ``null`` removes it."""
    await _resident(conn, principal, resident_id)
    given = body.model_fields_set
    with _refusals():
        record = await records.update(
            conn,
            keyring,
            resident_id,
            building=body.building,
            unit=body.unit,
            needs_evacuation_help=body.needs_evacuation_help,
            personal=body.personal if "personal" in given else records.KEEP,
        )
    return (await _views(conn, [record]))[0]


@router.delete("/residents/{resident_id}", status_code=HTTPStatus.NO_CONTENT, responses=_RESPONSES)
async def erase_resident(conn: ConnectionDep, principal: Manager, resident_id: IdPath) -> None:
    """Erase the resident's personal data for good (PIPL's deletion right): the sealed
    data, the reference and the evacuation flag go; the row stays, as ``erased``, for
    the incidents and access-log rows that point at it. Erasing again is a 204 too."""
    await _resident(conn, principal, resident_id)
    with _refusals():
        await records.erase(conn, resident_id)


@router.get(
    "/residents/{resident_id}/personal",
    response_model=PersonalDataShown,
    responses=_REVEAL_RESPONSES,
)
async def reveal_personal(
    conn: ConnectionDep,
    principal: Revealer,
    keyring: KeyringDep,
    response: Response,
    resident_id: IdPath,
    incident_id: IncidentQuery = None,
) -> PersonalDataShown:
    """The resident's personal data, logged with the incident that justified it: for an
    admin ``incident_id`` if given; for a dispatcher that one or else the open incident
    about the resident she claimed (404 when there is none)."""
    record = await _resident(conn, principal, resident_id)
    claimant = _claimant(principal)
    if incident_id is not None:
        about = await records.incident_resident(
            conn, incident_id, scope=principal.scope, claimed_by=claimant
        )
        if about != resident_id:
            _missing(resident_id)
    elif claimant is not None:
        incident_id = await records.holds_open_incident(conn, resident_id, actor=claimant)
        if incident_id is None:
            _missing(resident_id)
    return await _reveal(conn, keyring, principal, response, record, incident_id)


@router.get(
    "/incidents/{incident_id}/resident",
    response_model=PersonalDataShown,
    responses={
        **_REVEAL_RESPONSES,
        HTTPStatus.NOT_FOUND.value: problem_response(
            "No such incident in reach, it is about no resident, the resident was erased, "
            "or (for a dispatcher) it is not open and claimed by her"
        ),
    },
)
async def reveal_incident_resident(
    conn: ConnectionDep,
    principal: Revealer,
    keyring: KeyringDep,
    response: Response,
    incident_id: IdPath,
) -> PersonalDataShown:
    """Whom the incident is about (named by it, or wearing its device) with their personal
    data, for the console of the dispatcher holding it; logged under the incident."""
    resident_id = await records.incident_resident(
        conn, incident_id, scope=principal.scope, claimed_by=_claimant(principal)
    )
    record = None if resident_id is None else await _find(conn, principal, resident_id)
    if record is None:
        raise HTTPException(HTTPStatus.NOT_FOUND, f"no resident of incident {incident_id}")
    return await _reveal(conn, keyring, principal, response, record, incident_id)


@router.get(
    "/residents/{resident_id}/access-log",
    response_model=Page[AccessLogView],
    responses=_RESPONSES,
)
async def resident_access_log(
    conn: ConnectionDep,
    principal: Auditor,
    resident_id: IdPath,
    limit: Limit = 100,
    cursor: CursorQuery = None,
) -> Page[AccessLogView]:
    """Every showing of the resident's personal data, newest first; kept after erasure,
    so the resident can still be told who saw their data."""
    await _resident(conn, principal, resident_id)
    found = await records.access_log(
        conn,
        resident_id,
        limit=limit + 1,
        before_id=decode_id(cursor),
    )
    items = [AccessLogView.model_validate(entry) for entry in found]
    return id_page(items, limit)


def _claimant(principal: Principal) -> str | None:
    """Whose claim grounds a reading: None for an admin, who needs no incident; the key
    holder's name for everyone else, so a role granted the reveal later still needs one."""
    return None if principal.role is Role.ADMIN else principal.name


async def _reveal(
    conn: AsyncConnection[Any],
    keyring: Keyring,
    principal: Principal,
    response: Response,
    record: ResidentRecord,
    incident_id: int | None,
) -> PersonalDataShown:
    """Decrypt and log (one access-log row, committed before the data is returned)."""
    if record.status == "erased":
        raise HTTPException(
            HTTPStatus.NOT_FOUND, f"resident {record.id} was erased: no personal data is kept"
        )
    purpose: Literal["admin", "incident"] = "admin" if principal.role is Role.ADMIN else "incident"
    viewer = Viewer(api_key_id=principal.key_id, actor=principal.name, role=str(principal.role))
    with _refusals():
        personal = await records.reveal(
            conn, keyring, record.id, viewer=viewer, incident_id=incident_id, purpose=purpose
        )
    response.headers.update(NO_STORE)
    if personal is not None:
        log.info(
            "resident %d's personal data shown to key %d (%s, %s) for %s",
            record.id,
            principal.key_id,
            principal.name,
            principal.role,
            f"incident {incident_id}" if incident_id is not None else purpose,
        )
    return PersonalDataShown(
        resident=(await _views(conn, [record]))[0],
        personal=personal,
        incident_id=incident_id,
        purpose=purpose,
    )


async def _find(
    conn: AsyncConnection[Any], principal: Principal, resident_id: int
) -> ResidentRecord | None:
    """The resident if the key reaches its community; None whether missing or not."""
    record = await records.get(conn, resident_id)
    return record if record is not None and principal.reaches(record.community_id) else None


async def _resident(
    conn: AsyncConnection[Any], principal: Principal, resident_id: int
) -> ResidentRecord:
    """The resident if the key reaches it, else 404 (out of reach looks like missing)."""
    record = await _find(conn, principal, resident_id)
    if record is None:
        _missing(resident_id)
    return record


def _missing(resident_id: int) -> NoReturn:
    raise HTTPException(HTTPStatus.NOT_FOUND, f"no resident {resident_id}")


async def _views(conn: AsyncConnection[Any], found: Sequence[ResidentRecord]) -> list[ResidentView]:
    """``found`` as answered, with each community's path (one query for them all)."""
    ids = sorted({record.community_id for record in found})
    nodes = await list_nodes(conn, scope=ids, limit=len(ids)) if ids else []
    paths = {node.id: node.path for node in nodes}
    return [
        ResidentView(
            id=record.id,
            community=paths[record.community_id],
            building=record.building,
            unit=record.unit,
            needs_evacuation_help=record.needs_evacuation_help,
            reference=record.reference,
            status=cast(ResidentStatus, record.status),
            has_personal_data=record.has_personal_data,
            created_at=record.created_at,
            updated_at=record.updated_at,
            erased_at=record.erased_at,
        )
        for record in found
    ]


@contextmanager
def _refusals() -> Iterator[None]:
    """The residents library's refusals as problem answers; their messages hold ids and
    key ids only, never personal data, so they are safe to send."""
    try:
        yield
    except ResidentNotFound as exc:
        raise HTTPException(HTTPStatus.NOT_FOUND, str(exc)) from None
    except (ResidentExists, ResidentErased) as exc:
        raise HTTPException(HTTPStatus.CONFLICT, str(exc)) from None
    except InvalidResident as exc:
        raise HTTPException(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
    except (NoResidentKeys, UnknownWrappingKey) as exc:
        raise HTTPException(HTTPStatus.SERVICE_UNAVAILABLE, str(exc)) from None
    except PersonalDataCorrupt as exc:
        raise HTTPException(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc)) from None
