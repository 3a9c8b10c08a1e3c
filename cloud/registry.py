"""Communities, gateways and devices as installers register them.

These back ``anju provision`` and ``anju device add`` (through the API); the demo and
the tests call them directly. Every function runs in a transaction of its own (a
savepoint when the caller already holds one) and is idempotent: registering what is
already registered returns the existing row, while a registration that contradicts it
(a gateway under another community, a device behind another gateway) raises
``RegistryError`` instead of silently moving it.

Two ways to register a device:

- ``register_device`` records a device the gateway's own config file declares (the
  demo, benchmarks): no address, never pushed.
- ``add_device``, ``move_device``, ``remove_device`` and ``import_devices`` are the
  installer's: each device is checked against its profile (``check_device``), and
  every change to a gateway's devices makes, in the same transaction, the gateway's
  next config version (a ``GatewayConfigDocument`` of its active addressed devices and
  the profiles they use, stored in ``gateway_configs``) for ``cloud.configs`` to push.
  A description the profile refuses raises ``InvalidDevice`` naming every field.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any, Final, Literal, TypeVar

from psycopg import AsyncConnection
from psycopg.errors import ForeignKeyViolation
from psycopg.rows import class_row

from cloud.errors import RegistryError
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries
from schemas.profile import ActionName, DeviceProfile
from schemas.vocabulary import DeviceKind
from schemas.wire import (
    IDENTIFIER_PATTERN,
    NODE_NAME_PATTERN,
    GatewayConfigDocument,
    PushedDevice,
    encode,
)

DEFAULT_CITY: Final = "ningguo"

# The forms of the wire, checked here so a bad registration fails with a RegistryError
# rather than a database constraint message.
_NODE_NAME: Final = re.compile(NODE_NAME_PATTERN)
_IDENTIFIER: Final = re.compile(IDENTIFIER_PATTERN)
_TEXT_LIMIT: Final = 64
_DEVICE_RESIDENT_FKEY: Final = "devices_resident_fkey"
_ADDRESS_LIMIT: Final = 512
_POLL_LIMIT_S: Final = 3600.0
_CLOSEST: Final = 3

Row = TypeVar("Row")


class Tier(StrEnum):
    """The plan's three tiers of the community tree."""

    CITY = "city"
    STREET = "street"
    COMMUNITY = "community"


@dataclass(frozen=True, slots=True)
class Community:
    """A node of the tree; for tier ``community`` the path is ``street/community``."""

    id: int
    parent_id: int | None
    tier: str
    name: str
    path: str
    status: str
    """``active``, or ``retired``: a retired node takes no new gateways (``cloud.tree``)."""


@dataclass(frozen=True, slots=True)
class Gateway:
    id: str
    community_id: int
    status: str
    auth: str = "password"
    """How it authenticates to the broker: ``password`` or ``certificate``."""
    credentials_issued_at: datetime | None = None
    """When its current broker credentials were issued; None before the first."""


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    gateway_id: str
    kind: str
    profile_id: str
    building: str | None
    unit: str | None
    status: str
    resident_id: int | None = None
    """The resident a personal device (a wearable) belongs to; its incidents are theirs."""
    address: str | None = None
    """Where its gateway reaches it (a URL of its profile's protocol); None for a device
    its gateway's own file declares (``register_device``)."""
    egress: bool = False
    poll_interval_s: float | None = None


def _check(pattern: re.Pattern[str], value: str, *, entity: str, form: str) -> None:
    if not pattern.match(value):
        raise RegistryError(f"expected {form}", entity=entity, key=value)


async def register_community(
    conn: AsyncConnection[Any], path: str, *, city: str = DEFAULT_CITY
) -> Community:
    """Register the community ``street/community``, creating its city and street nodes.

    Returns the community node. Raises RegistryError for a malformed path or city
    name, when the street is already registered under another city, or when a node on
    the way is retired.
    """
    name_form = "lower-case letters, digits and '-' (at most 32)"
    _check(_NODE_NAME, city, entity="city", form=name_form)
    street, _, name = path.partition("/")
    for part in (street, name):
        _check(_NODE_NAME, part, entity="community", form=f"street/community, each {name_form}")
    nodes = ((Tier.CITY, city, city), (Tier.STREET, street, street), (Tier.COMMUNITY, name, path))
    parent: int | None = None
    node: Community | None = None
    async with conn.transaction():
        for tier, node_name, node_path in nodes:
            with storage_errors("upsert_community_node"):
                cur = conn.cursor(row_factory=class_row(Community))
                await cur.execute(
                    queries()["upsert_community_node"],
                    {"parent_id": parent, "tier": tier, "name": node_name, "path": node_path},
                )
                node = await cur.fetchone()
            if node is None or node.parent_id != parent:
                raise RegistryError(
                    "already registered under another parent", entity=str(tier), key=node_path
                )
            if node.status != "active":
                raise RegistryError(
                    "is retired; it takes nothing new", entity=str(tier), key=node_path
                )
            parent = node.id
    if node is None:
        raise RegistryError("was not created", entity="community", key=path)
    return node


async def find_community(conn: AsyncConnection[Any], path: str) -> Community | None:
    """The community node with ``path`` (``street/community``), or None."""
    with storage_errors("community_by_path"):
        cur = conn.cursor(row_factory=class_row(Community))
        await cur.execute(queries()["community_by_path"], {"path": path})
        return await cur.fetchone()


async def register_gateway(
    conn: AsyncConnection[Any], gateway_id: str, community_path: str
) -> Gateway:
    """Register gateway ``gateway_id`` under the community ``community_path``.

    The community must be registered first and active. Raises RegistryError for a
    malformed id, an unknown or retired community, or a gateway already registered
    under another community.
    """
    _check(_IDENTIFIER, gateway_id, entity="gateway", form="a lower-case identifier")
    async with conn.transaction():
        community = await find_community(conn, community_path)
        if community is None:
            raise RegistryError(
                "unknown community; register it first", entity="community", key=community_path
            )
        if community.status != "active":
            raise RegistryError(
                "is retired and takes no new gateways", entity="community", key=community_path
            )
        with storage_errors("upsert_gateway"):
            cur = conn.cursor(row_factory=class_row(Gateway))
            await cur.execute(
                queries()["upsert_gateway"], {"id": gateway_id, "community_id": community.id}
            )
            gateway = await cur.fetchone()
    if gateway is None or gateway.community_id != community.id:
        raise RegistryError(
            f"already registered under another community, not {community_path}",
            entity="gateway",
            key=gateway_id,
        )
    return gateway


async def register_device(
    conn: AsyncConnection[Any],
    device_id: str,
    *,
    gateway_id: str,
    kind: DeviceKind,
    profile_id: str,
    building: str | None = None,
    unit: str | None = None,
    resident_id: int | None = None,
) -> Device:
    """Register a device behind ``gateway_id``, or update the description of one that is.

    Device ids are unique across the city (they key readings and events).
    ``resident_id`` binds a personal device (a wearable) to the resident wearing it, so
    the dispatcher holding its incident may see whose it is; re-registering without it
    unbinds the device, as it clears an omitted building or unit. Raises RegistryError
    for a malformed id, an unknown gateway or resident, or a device already registered
    behind another gateway.
    """
    _check(_IDENTIFIER, device_id, entity="device", form="a lower-case identifier")
    for label, text in (("building", building), ("unit", unit), ("profile", profile_id)):
        if text is not None and not 0 < len(text) <= _TEXT_LIMIT:
            raise RegistryError(
                f"{label} must be 1-{_TEXT_LIMIT} characters", entity="device", key=device_id
            )
    params = {
        "id": device_id,
        "gateway_id": gateway_id,
        "kind": str(kind),
        "profile_id": profile_id,
        "building": building,
        "unit": unit,
        "resident_id": resident_id,
    }
    async with conn.transaction():
        with storage_errors("upsert_device"):
            cur = conn.cursor(row_factory=class_row(Device))
            try:
                await cur.execute(queries()["upsert_device"], params)
            except ForeignKeyViolation as exc:
                if exc.diag.constraint_name == _DEVICE_RESIDENT_FKEY:
                    raise RegistryError(
                        "unknown resident", entity="resident", key=str(resident_id)
                    ) from None
                raise RegistryError(
                    "unknown gateway; register it first", entity="gateway", key=gateway_id
                ) from None
            device = await cur.fetchone()
    if device is None:
        raise RegistryError(
            f"already registered behind another gateway, not {gateway_id}",
            entity="device",
            key=device_id,
        )
    return device


async def record_credentials(
    conn: AsyncConnection[Any], gateway_id: str, *, auth: Literal["password", "certificate"]
) -> Gateway:
    """Note that ``gateway_id`` was just given new broker credentials of kind ``auth``.

    Raises RegistryError when the gateway is unknown.
    """
    return await _gateway_update(conn, "registry_gateway_credentials", gateway_id, auth=auth)


async def revoke_gateway(conn: AsyncConnection[Any], gateway_id: str) -> Gateway:
    """Mark ``gateway_id`` revoked (ingest refuses its batches; its id is never reused).

    Idempotent. Raises RegistryError when the gateway is unknown.
    """
    return await _gateway_update(conn, "registry_gateway_revoke", gateway_id)


async def _gateway_update(
    conn: AsyncConnection[Any], query: str, gateway_id: str, **params: Any
) -> Gateway:
    async with conn.transaction():
        found = await _fetch(conn, Gateway, query, {"id": gateway_id, **params})
    if not found:
        raise RegistryError("unknown gateway", entity="gateway", key=gateway_id)
    return found[0]


# The installer's path: devices checked against their profiles, each change making the
# gateway's next pushed config.


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device as an installer describes it (``anju device add``, a CSV row)."""

    id: str
    profile: str
    address: str
    building: str
    unit: str
    resident_id: int | None = None
    egress: bool = False
    poll_interval_s: float | None = None


@dataclass(frozen=True, slots=True)
class DeviceProblem:
    """What is wrong with one field of a device's description."""

    field: str
    """``id``, ``profile``, ``address``, ``building``, ``unit``, ``resident_id``,
    ``egress`` or ``poll_interval_s``."""
    reason: str


class InvalidDevice(RegistryError):
    """A device description its profile or the registry refuses; ``problems`` holds
    every field that is wrong, and the message all their reasons."""

    def __init__(self, device_id: str, problems: Sequence[DeviceProblem]) -> None:
        self.device_id = device_id
        self.problems = list(problems)
        super().__init__(
            "; ".join(problem.reason for problem in problems), entity="device", key=device_id
        )


@dataclass(frozen=True, slots=True)
class Placed:
    """The outcome of a device change: the device as stored, whether anything changed,
    and its gateway's config version afterwards."""

    device: Device
    outcome: Literal["created", "updated", "unchanged"]
    config_version: int


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A bad row of an import: its 0-based index, the field and the reason."""

    index: int
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did: ``imported`` rows written (with ``dry_run``, the good rows
    that would have been), every bad row, and the gateway's config version after."""

    imported: int
    bad: list[RowProblem] = field(default_factory=list)
    dry_run: bool = False
    config_version: int = 0


@dataclass(frozen=True, slots=True)
class _LockedGateway:
    id: str
    community_id: int
    status: str
    auth: str
    credentials_issued_at: datetime | None
    config_version: int


@dataclass(frozen=True, slots=True)
class _Whereabouts:
    gateway_id: str


@dataclass(frozen=True, slots=True)
class _ConfigDevice:
    id: str
    profile_id: str
    address: str
    building: str | None
    unit: str | None
    egress: bool
    poll_interval_s: float | None


def check_device(spec: DeviceSpec, profiles: Mapping[str, DeviceProfile]) -> list[DeviceProblem]:
    """Every problem of ``spec`` that its profile and the forms show (the database is
    not asked: residents and other gateways are checked by the writers).

    The address is checked for its scheme only: the gateway parses the rest when it
    applies the config, and ``anju device add`` parses it before sending.
    """
    problems: list[DeviceProblem] = []
    if not _IDENTIFIER.match(spec.id):
        problems.append(
            DeviceProblem("id", f"{spec.id!r} is not an identifier (a-z, 0-9, '.', '_', '-')")
        )
    for name, text in (("building", spec.building), ("unit", spec.unit)):
        if not 0 < len(text) <= _TEXT_LIMIT:
            problems.append(DeviceProblem(name, f"{name} must be 1-{_TEXT_LIMIT} characters"))
    if spec.poll_interval_s is not None and not 0 < spec.poll_interval_s <= _POLL_LIMIT_S:
        problems.append(
            DeviceProblem("poll_interval_s", f"must be more than 0 and at most {_POLL_LIMIT_S:g} s")
        )
    scheme, separator, rest = spec.address.partition("://")
    if not separator or not scheme or not rest or len(spec.address) > _ADDRESS_LIMIT:
        problems.append(
            DeviceProblem(
                "address",
                f"{spec.address[:80]!r} is not a device URL such as modbus-tcp://HOST:502?unit=1",
            )
        )
        scheme = ""
    profile = profiles.get(spec.profile)
    if profile is None:
        close = difflib.get_close_matches(spec.profile, list(profiles), n=_CLOSEST, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else f"known: {', '.join(sorted(profiles))}"
        problems.append(DeviceProblem("profile", f"no profile {spec.profile[:64]!r}; {hint}"))
        return problems
    mismatch = profile.address_mismatch(spec.id, scheme) if scheme else None
    if mismatch is not None:
        problems.append(DeviceProblem("address", mismatch))
    if spec.egress and ActionName.FIRE_RELEASE not in profile.actions:
        problems.append(
            DeviceProblem(
                "egress",
                f"only a door with a fire_release action can be an egress door; "
                f"{profile.id} has none",
            )
        )
    return problems


async def add_device(
    conn: AsyncConnection[Any],
    spec: DeviceSpec,
    *,
    gateway_id: str,
    profiles: Mapping[str, DeviceProfile],
) -> Placed:
    """Put the device ``spec`` behind ``gateway_id``, or update it there.

    A change (a new device, another description, a disabled device added again) makes
    the gateway's next config version; re-adding an identical device changes nothing.
    Raises InvalidDevice for a description its profile refuses or a resident who does
    not live in the gateway's community, RegistryError for an unknown or revoked
    gateway or a device behind another gateway.
    """
    async with conn.transaction():
        gateway = await _lock_gateway(conn, gateway_id)
        problems = check_device(spec, profiles) + await _resident_problems(
            conn, spec.resident_id, gateway.community_id
        )
        if problems:
            raise InvalidDevice(spec.id, problems)
        existing = await _lock_device(conn, spec.id)
        if existing is not None and existing.gateway_id != gateway_id:
            raise _elsewhere(spec.id)
        kind = profiles[spec.profile].kind
        if existing is not None and _as_device(spec, gateway_id, kind) == existing:
            return Placed(existing, "unchanged", gateway.config_version)
        device = await _put(conn, spec, gateway_id, kind)
        version = await _next_config(conn, gateway, profiles)
    return Placed(device, "created" if existing is None else "updated", version)


class Keep(Enum):
    """``move_device``'s ``resident_id`` when the binding stays as it is (None unbinds)."""

    RESIDENT = "keep"


async def move_device(
    conn: AsyncConnection[Any],
    device_id: str,
    *,
    profiles: Mapping[str, DeviceProfile],
    gateway_id: str | None = None,
    building: str | None = None,
    unit: str | None = None,
    address: str | None = None,
    resident_id: int | Keep | None = Keep.RESIDENT,
) -> Placed:
    """Move the active device ``device_id`` to another gateway or place, or give it a
    new address or resident (``resident_id=None`` unbinds it); what is not given stays.

    Makes the next config version of every gateway it leaves or joins (none when
    nothing changed). Raises RegistryError for an unknown device, a disabled one (add it
    again instead), an unknown or revoked gateway; InvalidDevice as ``add_device``.
    """
    async with conn.transaction():
        placed = await _lock_placed(conn, device_id, joining=gateway_id)
        if placed is None:
            raise RegistryError("unknown device", entity="device", key=device_id)
        current, locked = placed
        if current.status != "active":
            raise RegistryError(
                "is removed from its gateway; add it again instead", entity="device", key=device_id
            )
        target_id = gateway_id or current.gateway_id
        _refuse_revoked(locked[target_id])
        spec = DeviceSpec(
            id=device_id,
            profile=current.profile_id,
            address=address if address is not None else current.address or "",
            building=building if building is not None else current.building or "",
            unit=unit if unit is not None else current.unit or "",
            resident_id=current.resident_id if isinstance(resident_id, Keep) else resident_id,
            egress=current.egress,
            poll_interval_s=current.poll_interval_s,
        )
        problems = check_device(spec, profiles) + await _resident_problems(
            conn, spec.resident_id, locked[target_id].community_id
        )
        if problems:
            raise InvalidDevice(device_id, problems)
        if _as_device(spec, target_id, current.kind) == current:
            return Placed(current, "unchanged", locked[target_id].config_version)
        params = {
            "id": device_id,
            "gateway_id": target_id,
            "building": spec.building,
            "unit": spec.unit,
            "resident_id": spec.resident_id,
            "address": spec.address,
        }
        moved = (await _fetch(conn, Device, "registry_device_move", params))[0]
        versions = {gid: await _next_config(conn, gw, profiles) for gid, gw in locked.items()}
    return Placed(moved, "updated", versions[target_id])


async def remove_device(
    conn: AsyncConnection[Any], device_id: str, *, profiles: Mapping[str, DeviceProfile]
) -> Placed:
    """Disable ``device_id``: it leaves its gateway's config (a new version), its
    readings and events stay. Idempotent. Raises RegistryError for an unknown device."""
    async with conn.transaction():
        placed = await _lock_placed(conn, device_id)
        if placed is None:
            raise RegistryError("unknown device", entity="device", key=device_id)
        current, locked = placed
        gateway = locked[current.gateway_id]
        if current.status != "active":
            return Placed(current, "unchanged", gateway.config_version)
        removed = (await _fetch(conn, Device, "registry_device_disable", {"id": device_id}))[0]
        version = await _next_config(conn, gateway, profiles)
    return Placed(removed, "updated", version)


async def import_devices(
    conn: AsyncConnection[Any],
    gateway_id: str,
    specs: Sequence[DeviceSpec],
    *,
    profiles: Mapping[str, DeviceProfile],
    dry_run: bool = False,
    skip_bad: bool = False,
) -> ImportReport:
    """Add (or update) ``specs`` behind ``gateway_id`` in one transaction and one new
    config version, after checking every row.

    Every bad row is reported at once. With bad rows, nothing is written unless
    ``skip_bad``, which writes the good ones; ``dry_run`` never writes. Raises
    RegistryError for an unknown or revoked gateway.
    """
    async with conn.transaction():
        gateway = await _lock_gateway(conn, gateway_id)
        bad: list[RowProblem] = []
        good: list[DeviceSpec] = []
        first_row: dict[str, int] = {}
        for index, spec in enumerate(specs):
            problems = await _row_problems(conn, spec, gateway, profiles)
            if spec.id in first_row:
                problems.append(DeviceProblem("id", f"also on row {first_row[spec.id]}"))
            first_row.setdefault(spec.id, index)
            bad += [RowProblem(index, p.field, p.reason) for p in problems]
            if not problems:
                good.append(spec)
        if dry_run or (bad and not skip_bad):
            return ImportReport(
                imported=len(good) if dry_run else 0,
                bad=bad,
                dry_run=dry_run,
                config_version=gateway.config_version,
            )
        changed = False
        for spec in good:
            kind = profiles[spec.profile].kind
            if _as_device(spec, gateway_id, kind) != await _lock_device(conn, spec.id):
                await _put(conn, spec, gateway_id, kind)
                changed = True
        version = await _next_config(conn, gateway, profiles) if changed else gateway.config_version
    return ImportReport(imported=len(good), bad=bad, config_version=version)


async def _row_problems(
    conn: AsyncConnection[Any],
    spec: DeviceSpec,
    gateway: _LockedGateway,
    profiles: Mapping[str, DeviceProfile],
) -> list[DeviceProblem]:
    problems = check_device(spec, profiles)
    problems += await _resident_problems(conn, spec.resident_id, gateway.community_id)
    if not any(problem.field == "id" for problem in problems):
        # Unlocked: a device behind another gateway is that gateway's to lock.
        existing = await _fetch(conn, _Whereabouts, "registry_device_gateway", {"id": spec.id})
        if existing and existing[0].gateway_id != gateway.id:
            problems.append(DeviceProblem("id", str(_elsewhere(spec.id))))
    return problems


def _elsewhere(device_id: str) -> RegistryError:
    # The other gateway is not named: it may be in a community the caller cannot see.
    return RegistryError(
        "is registered behind another gateway; move it instead (anju device move)",
        entity="device",
        key=device_id,
    )


def _as_device(spec: DeviceSpec, gateway_id: str, kind: str) -> Device:
    """The row ``spec`` makes behind ``gateway_id``, to tell a change from a repeat."""
    return Device(
        id=spec.id,
        gateway_id=gateway_id,
        kind=str(kind),
        profile_id=spec.profile,
        building=spec.building,
        unit=spec.unit,
        status="active",
        resident_id=spec.resident_id,
        address=spec.address,
        egress=spec.egress,
        poll_interval_s=spec.poll_interval_s,
    )


async def lock_gateway(conn: AsyncConnection[Any], gateway_id: str) -> None:
    """Hold ``gateway_id``'s row until the caller's transaction ends.

    Broker changes for one gateway (a grant, a revocation) run one at a time under it:
    a revocation between a grant's role and its client would leave the grant failing
    on a role that is gone. Raises RegistryError for an unknown gateway.
    """
    await _lock_gateway(conn, gateway_id, allow_revoked=True)


async def _lock_gateway(
    conn: AsyncConnection[Any], gateway_id: str, *, allow_revoked: bool = False
) -> _LockedGateway:
    found = await _fetch(conn, _LockedGateway, "registry_gateway_lock", {"id": gateway_id})
    if not found:
        raise RegistryError("unknown gateway; register it first", entity="gateway", key=gateway_id)
    if not allow_revoked:
        _refuse_revoked(found[0])
    return found[0]


def _refuse_revoked(gateway: _LockedGateway) -> None:
    if gateway.status != "active":
        raise RegistryError("is revoked; it takes no devices", entity="gateway", key=gateway.id)


class _MovedMeanwhile(Exception):
    """The device left the gateway locked for it before its own row was locked."""


async def _lock_placed(
    conn: AsyncConnection[Any], device_id: str, *, joining: str | None = None
) -> tuple[Device, dict[str, _LockedGateway]] | None:
    """Lock the gateway ``device_id`` is behind (with ``joining``, in id order), then the
    device: the order every change of the installer's path locks in (registry.sql), so
    an add and a removal of one device never deadlock. None for an unknown device.

    A device another change moved between the look and the lock is looked up again;
    the savepoint's rollback lets go of the gateway locked for nothing.
    """
    while True:
        try:
            async with conn.transaction():
                where = await _fetch(
                    conn, _Whereabouts, "registry_device_gateway", {"id": device_id}
                )
                if not where:
                    return None
                home = where[0].gateway_id
                locked = {
                    gid: await _lock_gateway(conn, gid, allow_revoked=True)
                    for gid in sorted({home, joining or home})
                }
                device = await _lock_device(conn, device_id)
                if device is None or device.gateway_id != home:
                    raise _MovedMeanwhile(device_id)
                return device, locked
        except _MovedMeanwhile:
            continue


async def _lock_device(conn: AsyncConnection[Any], device_id: str) -> Device | None:
    found = await _fetch(conn, Device, "registry_device_lock", {"id": device_id})
    return found[0] if found else None


async def _resident_problems(
    conn: AsyncConnection[Any], resident_id: int | None, community_id: int
) -> list[DeviceProblem]:
    if resident_id is None:
        return []
    with storage_errors("registry_resident_home"):
        cur = await conn.execute(queries()["registry_resident_home"], {"id": resident_id})
        row = await cur.fetchone()
    if row is None or row[0] != community_id:
        return [
            DeviceProblem(
                "resident_id",
                f"no resident {resident_id} lives in the community of this device's gateway",
            )
        ]
    return []


async def _put(
    conn: AsyncConnection[Any], spec: DeviceSpec, gateway_id: str, kind: DeviceKind
) -> Device:
    params = {
        "id": spec.id,
        "gateway_id": gateway_id,
        "kind": str(kind),
        "profile_id": spec.profile,
        "building": spec.building,
        "unit": spec.unit,
        "resident_id": spec.resident_id,
        "address": spec.address,
        "egress": spec.egress,
        "poll_interval_s": spec.poll_interval_s,
    }
    stored = await _fetch(conn, Device, "registry_device_put", params)
    if not stored:
        raise _elsewhere(spec.id)
    return stored[0]


async def _next_config(
    conn: AsyncConnection[Any], gateway: _LockedGateway, profiles: Mapping[str, DeviceProfile]
) -> int:
    """Store the gateway's next config version (the caller holds its row locked)."""
    devices = await _fetch(
        conn, _ConfigDevice, "registry_config_devices", {"gateway_id": gateway.id}
    )
    missing = sorted({d.profile_id for d in devices} - set(profiles))
    if missing:
        raise RegistryError(
            f"uses profiles the cloud does not have: {', '.join(missing)}",
            entity="gateway",
            key=gateway.id,
        )
    version = gateway.config_version + 1
    document = GatewayConfigDocument(
        gateway=gateway.id,
        version=version,
        devices=[
            PushedDevice(
                id=d.id,
                profile=d.profile_id,
                address=d.address,
                building=d.building or "",
                unit=d.unit or "",
                egress=d.egress,
                poll_interval_s=d.poll_interval_s,
            )
            for d in devices
        ],
        profiles={
            pid: profiles[pid].model_dump(mode="json")
            for pid in sorted({d.profile_id for d in devices})
        },
    )
    params = {
        "gateway_id": gateway.id,
        "version": version,
        "document": encode(document).decode(),
    }
    with storage_errors("registry_config_insert"):
        cur = await conn.execute(queries()["registry_config_insert"], params)
        row = await cur.fetchone()
    return int(row[0]) if row else version


async def _fetch(
    conn: AsyncConnection[Any], kind: type[Row], query: str, params: Mapping[str, Any]
) -> list[Row]:
    with storage_errors(query):
        cur = conn.cursor(row_factory=class_row(kind))
        await cur.execute(queries()[query], params)
        return await cur.fetchall()
