"""The installer's writes: gateways with their broker credentials, and their devices.

``POST /gateways`` registers a gateway and hands back its own broker credentials
(``cloud.provisioning``); ``/credentials`` rotates them and ``/revoke`` cuts the gateway
off. ``POST``/``PATCH``/``DELETE /devices`` and the import place devices behind
gateways, each checked against its profile (``cloud.registry.check_device``); every
change makes the gateway's next config version, which ``cloud.configs`` pushes to it.
``POST /devices/{id}/test`` reads a device once through its running gateway: the
request is a ``device_tests`` row that the config pusher sends as a ``read_device``
command and answers, while this route waits on the row
(``cloud.configs.device_test_store`` says why the database sits in between).

Scope first: a gateway, device or community outside the key's subtree is answered 404
exactly like a missing one, before any setting or body is looked at further.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any, Final, Literal, Self, cast

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from psycopg import AsyncConnection
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud import inventory, provisioning, registry
from cloud.api.deps import ConnectionDep
from cloud.api.params import NO_NUL, DbId, IdentifierPath
from cloud.api.problems import problem_response
from cloud.api.routes.inventory import DeviceView, GatewayView
from cloud.api.scoping import reachable_node
from cloud.api.security import allowed
from cloud.auth.principal import Principal
from cloud.auth.roles import Permission
from cloud.broker.errors import (
    AccountInUse,
    BrokerAdminError,
    BrokerUnreachable,
    CertificateRequestError,
    TopicLevelError,
)
from cloud.configs import device_test_store
from cloud.configs.device_tests import point_values
from cloud.configs.errors import DeviceTestRefused
from cloud.errors import RegistryError
from cloud.settings import BrokerSettings, CloudSettings
from schemas.profile import DeviceProfile
from schemas.wire import COMMUNITY_PATH_PATTERN, IDENTIFIER_PATTERN

router = APIRouter(tags=["provisioning"])

Installer = Annotated[Principal, allowed(Permission.GATEWAYS_MANAGE)]

MAX_IMPORT_ROWS: Final = 5000
_PEM_LIMIT: Final = 16_384
_TEXT: Final = 64

_Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN, max_length=64)]
_Place = Annotated[str, Field(min_length=1, max_length=_TEXT, pattern=NO_NUL)]
_Address = Annotated[str, Field(min_length=1, max_length=512, pattern=NO_NUL)]
_ProfileId = Annotated[str, Field(min_length=1, max_length=_TEXT, pattern=NO_NUL)]
_PollInterval = Annotated[float, Field(gt=0, le=3600)]
_Loose = Annotated[str, Field(max_length=1024, pattern=NO_NUL)]
Auth = Literal["password", "certificate"]


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CredentialsRequest(_Request):
    """``certificate`` needs ``csr`` (its common name the gateway id; the private key
    stays on the box); ``password`` takes none."""

    auth: Auth = "password"
    csr: Annotated[str, Field(min_length=1, max_length=_PEM_LIMIT, pattern=NO_NUL)] | None = None

    @model_validator(mode="after")
    def _csr_for_certificates(self) -> Self:
        if (self.auth == "certificate") != (self.csr is not None):
            raise ValueError("csr is required with auth certificate and refused with password")
        return self


class GatewayRequest(CredentialsRequest):
    id: _Identifier
    community: Annotated[str, Field(pattern=COMMUNITY_PATH_PATTERN, max_length=65)]
    """The community's path, ``street/community``; registered, active and in reach."""


class DeviceTestView(BaseModel):
    """One read of a device through its gateway, as the gateway answered it."""

    model_config = ConfigDict(frozen=True)

    id: int
    """The test request; its command id on the gateway is ``test-{id}`` (its audit log)."""
    device: str
    gateway: str
    """The gateway that read it."""
    ok: bool
    """Whether the device answered; false with the reason in ``detail`` when it did not
    (or the gateway refused the read: an unknown device, one on a streaming bus)."""
    detail: str
    values: dict[str, float | int | bool | str]
    """Every point of the device's profile by name, in engineering units (``raw *
    scale + offset``), configuration points included; empty when ``ok`` is false."""
    elapsed_ms: int | None
    """How long the read took on the gateway, waiting for its bus included."""
    fault: str | None
    """What kind of failure a device that did not answer showed: ``timeout``,
    ``unreachable``, ``disconnected``, ``exception`` ...; null otherwise."""
    requested_at: datetime
    finished_at: datetime


class CredentialsView(BaseModel):
    """A gateway's broker credentials, shown this once (the cloud keeps no password)."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    username: str
    password: str | None
    certificate: str | None
    """The signed client certificate (PEM) for ``auth`` certificate."""
    broker_url: str
    """Where the gateway connects (``mqtts://host:port``, no credentials in it)."""
    ca_certificate: str | None
    """The CA (PEM) the gateway checks the broker with, when the operator set one."""
    issued_at: datetime


class ProvisionedView(BaseModel):
    model_config = ConfigDict(frozen=True)

    gateway: GatewayView
    credentials: CredentialsView
    config_version: int
    """The device config version the cloud holds for it (0: none yet)."""


class DeviceRequest(_Request):
    id: _Identifier
    gateway: _Identifier
    profile: _ProfileId
    address: _Address
    """A URL of the profile's protocol: ``modbus-tcp://10.0.0.5:502?unit=3``,
    ``modbus-rtu:///dev/ttyUSB0?unit=2``, ``ble://AA:BB:CC:DD:EE:FF`` ..."""
    building: _Place
    unit: _Place
    resident_id: DbId | None = None
    """The resident wearing a personal device; must live in the gateway's community."""
    egress: bool = False
    """A door on an escape route (its profile needs a ``fire_release`` action)."""
    poll_interval_s: _PollInterval | None = None


class MoveRequest(_Request):
    """What changes; fields left out stay. ``resident_id`` null unbinds the device."""

    gateway: _Identifier | None = None
    building: _Place | None = None
    unit: _Place | None = None
    resident_id: DbId | None = None
    address: _Address | None = None


class ImportRow(_Request):
    """A device of an import. Fields are loosely typed so that every bad row is reported
    with its field and reason (``bad``) rather than the request refused as a whole."""

    id: _Loose
    profile: _Loose
    address: _Loose
    building: _Loose = ""
    unit: _Loose = ""
    resident_id: DbId | None = None
    egress: bool = False
    poll_interval_s: Annotated[float, Field(allow_inf_nan=False)] | None = None


class ImportRequest(_Request):
    devices: Annotated[list[ImportRow], Field(max_length=MAX_IMPORT_ROWS)]
    dry_run: bool = False
    """Check every row and write nothing."""
    skip_bad: bool = False
    """Write the good rows even when some are bad (else nothing is written)."""


class BadRow(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    index: int
    """The row's 0-based index in ``devices``."""
    field: str
    reason: str


class ImportView(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    imported: int
    """Rows written; with ``dry_run``, the good rows that would have been."""
    bad: list[BadRow]
    dry_run: bool
    config_version: int
    """The gateway's config version afterwards (one new version per import)."""


async def get_profiles(request: Request) -> Mapping[str, DeviceProfile]:
    """The profiles ``create_app`` loaded from the profile folder (ANJU_PROFILE_DIR)."""
    return cast(Mapping[str, DeviceProfile], request.app.state.profiles)


async def get_broker_settings(request: Request) -> BrokerSettings:
    return cast(CloudSettings, request.app.state.settings).provisioning


ProfilesDep = Annotated[Mapping[str, DeviceProfile], Depends(get_profiles)]
BrokerDep = Annotated[BrokerSettings, Depends(get_broker_settings)]

_GATEWAY_MISSING: Final = problem_response("No gateway with this id in reach")
_DEVICE_MISSING: Final = problem_response("No device with this id in reach")
_BROKER: Final[dict[int | str, dict[str, Any]]] = {
    HTTPStatus.CONFLICT.value: problem_response(
        "The gateway is revoked (ids are not reused), registered under another community, "
        "or its id names a broker account that is not a gateway's"
    ),
    HTTPStatus.BAD_GATEWAY.value: problem_response(
        "The broker refused the change; running the same request again is safe"
    ),
    HTTPStatus.SERVICE_UNAVAILABLE.value: problem_response(
        "The broker cannot be reached, or the ANJU_BROKER_* settings this needs are unset "
        "(`detail` names them), or the database is unavailable"
    ),
}
_TEST_REFUSALS: Final[dict[int | str, dict[str, Any]]] = {
    HTTPStatus.NOT_FOUND.value: _DEVICE_MISSING,
    HTTPStatus.CONFLICT.value: problem_response(
        "The device is removed, its gateway is revoked, or it is behind another gateway "
        "than `gateway`"
    ),
    HTTPStatus.GATEWAY_TIMEOUT.value: problem_response(
        "The gateway did not answer within `timeout_s`; `detail` says whether the read "
        "was sent to it"
    ),
}
MAX_TEST_TIMEOUT_S: Final = 30.0
_DEVICE_REFUSALS: Final[dict[int | str, dict[str, Any]]] = {
    HTTPStatus.NOT_FOUND.value: problem_response("No device or gateway with this id in reach"),
    HTTPStatus.CONFLICT.value: problem_response(
        "The device is behind another gateway, is removed, or the gateway is revoked"
    ),
}


@contextmanager
def _refusals() -> Iterator[None]:
    """Answer the registry's, the broker's and the settings' refusals as problems."""
    try:
        yield
    except registry.InvalidDevice as exc:
        raise HTTPException(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
    except RegistryError as exc:
        raise HTTPException(HTTPStatus.CONFLICT, str(exc)) from None
    except provisioning.GatewayRevoked as exc:
        raise HTTPException(HTTPStatus.CONFLICT, str(exc)) from None
    except provisioning.BrokerNotConfigured as exc:
        raise HTTPException(HTTPStatus.SERVICE_UNAVAILABLE, str(exc)) from None
    except (CertificateRequestError, TopicLevelError) as exc:
        raise HTTPException(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
    except AccountInUse as exc:
        raise HTTPException(HTTPStatus.CONFLICT, str(exc)) from None
    except BrokerUnreachable as exc:
        raise HTTPException(
            HTTPStatus.SERVICE_UNAVAILABLE, f"{exc}; try again", headers={"Retry-After": "5"}
        ) from None
    except BrokerAdminError as exc:
        raise HTTPException(HTTPStatus.BAD_GATEWAY, str(exc)) from None


async def _gateway_in_reach(
    conn: AsyncConnection[Any], principal: Principal | None, gateway_id: str
) -> inventory.GatewayRecord:
    """The gateway if ``principal`` reaches it (None: anyone), else 404."""
    scope = None if principal is None else principal.scope
    found = await inventory.get_gateway(conn, gateway_id, scope=scope)
    if found is None:
        raise HTTPException(HTTPStatus.NOT_FOUND, f"no gateway {gateway_id!r}")
    return found


async def _device_in_reach(
    conn: AsyncConnection[Any], principal: Principal | None, device_id: str
) -> inventory.DeviceRecord:
    """The device if ``principal`` reaches it (None: anyone), else 404."""
    scope = None if principal is None else principal.scope
    found = await inventory.get_device(conn, device_id, scope=scope)
    if found is None:
        raise HTTPException(HTTPStatus.NOT_FOUND, f"no device {device_id!r}")
    return found


async def _provisioned(
    conn: AsyncConnection[Any], done: provisioning.Provisioned
) -> ProvisionedView:
    gateway = await _gateway_in_reach(conn, None, done.gateway.id)
    return ProvisionedView(
        gateway=GatewayView.model_validate(gateway),
        credentials=CredentialsView.model_validate(done.credentials),
        config_version=gateway.config_version,
    )


async def _device_view(conn: AsyncConnection[Any], device_id: str) -> DeviceView:
    return DeviceView.model_validate(await _device_in_reach(conn, None, device_id))


@router.post(
    "/gateways",
    response_model=ProvisionedView,
    status_code=HTTPStatus.CREATED,
    responses={
        HTTPStatus.OK.value: {
            "model": ProvisionedView,
            "description": "Already registered there: fresh credentials, the old ones dead",
        },
        HTTPStatus.NOT_FOUND.value: problem_response("No community at `community` in reach"),
        **_BROKER,
    },
)
async def provision_gateway(
    conn: ConnectionDep,
    principal: Installer,
    broker: BrokerDep,
    body: GatewayRequest,
    response: Response,
) -> ProvisionedView:
    """Register a gateway in a community and issue its own broker credentials (201);
    for a gateway registered there already, issue fresh ones (200): the old ones stop
    working at once. Safe to repeat after any failure."""
    await reachable_node(conn, principal, body.community, "community")
    with _refusals():
        done = await provisioning.provision_gateway(
            conn, broker, body.id, body.community, auth=body.auth, csr=body.csr
        )
    response.status_code = HTTPStatus.CREATED if done.first else HTTPStatus.OK
    return await _provisioned(conn, done)


@router.post(
    "/gateways/{gateway_id}/credentials",
    response_model=ProvisionedView,
    responses={HTTPStatus.NOT_FOUND.value: _GATEWAY_MISSING, **_BROKER},
)
async def rotate_credentials(
    conn: ConnectionDep,
    principal: Installer,
    broker: BrokerDep,
    gateway_id: IdentifierPath,
    body: CredentialsRequest,
) -> ProvisionedView:
    """New broker credentials for the gateway (password or certificate); the old ones
    stop working at once and its live session is ended."""
    await _gateway_in_reach(conn, principal, gateway_id)
    with _refusals():
        done = await provisioning.rotate_credentials(
            conn, broker, gateway_id, auth=body.auth, csr=body.csr
        )
    return await _provisioned(conn, done)


@router.post(
    "/gateways/{gateway_id}/revoke",
    response_model=GatewayView,
    responses={HTTPStatus.NOT_FOUND.value: _GATEWAY_MISSING, **_BROKER},
)
async def revoke_gateway(
    conn: ConnectionDep, principal: Installer, broker: BrokerDep, gateway_id: IdentifierPath
) -> GatewayView:
    """Cut a gateway off: its broker account is deleted (its session ends), ingest
    refuses its batches, and its id is never reused. Idempotent."""
    await _gateway_in_reach(conn, principal, gateway_id)
    with _refusals():
        await provisioning.revoke(conn, broker, gateway_id)
    return GatewayView.model_validate(await _gateway_in_reach(conn, principal, gateway_id))


@router.post(
    "/devices",
    response_model=DeviceView,
    status_code=HTTPStatus.CREATED,
    responses={
        HTTPStatus.OK.value: {
            "model": DeviceView,
            "description": "The device was behind this gateway already (updated, or identical)",
        },
        **_DEVICE_REFUSALS,
    },
)
async def add_device(
    conn: ConnectionDep,
    principal: Installer,
    profiles: ProfilesDep,
    body: DeviceRequest,
    response: Response,
) -> DeviceView:
    """Place a device behind a gateway, checked against its profile (a Modbus profile
    with a BLE address is refused, naming both); the gateway gets a new config."""
    await _gateway_in_reach(conn, principal, body.gateway)
    spec = registry.DeviceSpec(
        id=body.id,
        profile=body.profile,
        address=body.address,
        building=body.building,
        unit=body.unit,
        resident_id=body.resident_id,
        egress=body.egress,
        poll_interval_s=body.poll_interval_s,
    )
    with _refusals():
        placed = await registry.add_device(conn, spec, gateway_id=body.gateway, profiles=profiles)
    if placed.outcome != "created":
        response.status_code = HTTPStatus.OK
    return await _device_view(conn, placed.device.id)


@router.patch("/devices/{device_id}", response_model=DeviceView, responses=_DEVICE_REFUSALS)
async def move_device(
    conn: ConnectionDep,
    principal: Installer,
    profiles: ProfilesDep,
    device_id: IdentifierPath,
    body: MoveRequest,
) -> DeviceView:
    """Move a device to another gateway or place, give it a new address, or bind or
    unbind its resident; every gateway it leaves or joins gets a new config."""
    await _device_in_reach(conn, principal, device_id)
    if body.gateway is not None:
        await _gateway_in_reach(conn, principal, body.gateway)
    resident = (
        body.resident_id if "resident_id" in body.model_fields_set else registry.Keep.RESIDENT
    )
    with _refusals():
        await registry.move_device(
            conn,
            device_id,
            profiles=profiles,
            gateway_id=body.gateway,
            building=body.building,
            unit=body.unit,
            address=body.address,
            resident_id=resident,
        )
    return await _device_view(conn, device_id)


@router.delete(
    "/devices/{device_id}",
    response_model=DeviceView,
    responses={HTTPStatus.NOT_FOUND.value: _DEVICE_MISSING},
)
async def remove_device(
    conn: ConnectionDep, principal: Installer, profiles: ProfilesDep, device_id: IdentifierPath
) -> DeviceView:
    """Take a device off its gateway (status ``disabled``): it leaves the gateway's
    config; its readings and events stay. Idempotent."""
    await _device_in_reach(conn, principal, device_id)
    with _refusals():
        await registry.remove_device(conn, device_id, profiles=profiles)
    return await _device_view(conn, device_id)


@router.post(
    "/gateways/{gateway_id}/devices/import",
    response_model=ImportView,
    responses={
        HTTPStatus.NOT_FOUND.value: _GATEWAY_MISSING,
        HTTPStatus.CONFLICT.value: problem_response("The gateway is revoked"),
    },
)
async def import_devices(
    conn: ConnectionDep,
    principal: Installer,
    profiles: ProfilesDep,
    gateway_id: IdentifierPath,
    body: ImportRequest,
) -> ImportView:
    """Place many devices behind a gateway at once, every row checked and every bad one
    reported (index, field, reason). With bad rows nothing is written unless
    ``skip_bad``; ``dry_run`` never writes. One new config version for the lot."""
    await _gateway_in_reach(conn, principal, gateway_id)
    specs = [
        registry.DeviceSpec(
            id=row.id,
            profile=row.profile,
            address=row.address,
            building=row.building,
            unit=row.unit,
            resident_id=row.resident_id,
            egress=row.egress,
            poll_interval_s=row.poll_interval_s,
        )
        for row in body.devices
    ]
    with _refusals():
        report = await registry.import_devices(
            conn,
            gateway_id,
            specs,
            profiles=profiles,
            dry_run=body.dry_run,
            skip_bad=body.skip_bad,
        )
    return ImportView.model_validate(report)


@router.post(
    "/devices/{device_id}/test",
    response_model=DeviceTestView,
    responses=_TEST_REFUSALS,
)
async def run_device_test(
    conn: ConnectionDep,
    principal: Installer,
    profiles: ProfilesDep,
    device_id: IdentifierPath,
    timeout_s: Annotated[
        float,
        Query(
            ge=1,
            le=MAX_TEST_TIMEOUT_S,
            description="Seconds to wait for the gateway's answer (1-30).",
        ),
    ] = 10.0,
    gateway: Annotated[
        str | None,
        Query(
            pattern=IDENTIFIER_PATTERN,
            max_length=64,
            description="The gateway the device should be behind; 409 if it is not.",
        ),
    ] = None,
) -> DeviceTestView:
    """Read every point of the device once through its running gateway, which queues
    the read behind its own polling of the bus (safe on a shared RS-485 line), and
    answer with the values. 200 also when the device did not answer (``ok`` false, the
    fault named); 504 when the gateway did not answer in time (offline, or the cloud's
    config pusher not running), saying whether the read was sent. Changes nothing."""
    device = await _device_in_reach(conn, principal, device_id)
    try:
        asked = await device_test_store.request_test(
            conn, device_id, key_id=principal.key_id, timeout_s=timeout_s, gateway=gateway
        )
    except DeviceTestRefused as exc:
        raise HTTPException(HTTPStatus.CONFLICT, str(exc)) from None
    test = await device_test_store.wait_for_answer(conn, asked.id, timeout_s=timeout_s)
    if test.finished_at is None or test.ok is None:
        raise HTTPException(HTTPStatus.GATEWAY_TIMEOUT, _unanswered(test, timeout_s))
    data = test.data or {}
    elapsed = data.get("elapsed_ms")
    fault = data.get("fault")
    return DeviceTestView(
        id=test.id,
        device=test.device,
        gateway=test.gateway,
        ok=test.ok,
        detail=test.detail or "",
        values=_in_profile_order(point_values(data), profiles.get(device.profile_id))
        if test.ok
        else {},
        elapsed_ms=elapsed if isinstance(elapsed, int) and not isinstance(elapsed, bool) else None,
        fault=fault if isinstance(fault, str) else None,
        requested_at=test.requested_at,
        finished_at=test.finished_at,
    )


def _in_profile_order(values: dict[str, Any], profile: DeviceProfile | None) -> dict[str, Any]:
    """``values`` in the order of the profile's points (JSON storage sorts keys), any
    point the profile here does not name last."""
    if profile is None:
        return values
    ordered = {point.name: values[point.name] for point in profile.points if point.name in values}
    return {**ordered, **values}


def _unanswered(test: device_test_store.DeviceTest, timeout_s: float) -> str:
    """Why a test got no answer in time: sent and unanswered, or never sent."""
    if test.sent_at is not None:
        return (
            f"{test.gateway} did not answer the read of {test.device} within {timeout_s:g} s; "
            "it was sent: is the gateway online (anju provision check on the box), and its "
            f"clock right? (device test {test.id})"
        )
    return (
        f"the read of {test.device} was not sent to {test.gateway} within {timeout_s:g} s: "
        "the cloud's config pusher (anju cloud run, or anju cloud configs) is not running "
        f"or cannot reach the broker (device test {test.id})"
    )
