"""Gateways' broker credentials: the registry and the broker kept in step.

An installer registers a gateway and gets its own broker credentials in one call
(``provision_gateway``); ``rotate_credentials`` replaces them and ``revoke`` cuts the
gateway off. The registry is written first and the broker second, and every step is
idempotent, so a call that failed half way (the broker unreachable) is finished by
running it again: nothing is left that a re-run cannot fix. New credentials replace the
old ones on the broker in one step, which also ends the gateway's live session, so the
old ones stop working at once.

Passwords are 32 random bytes (url-safe base64) and never stored by the cloud: the
broker keeps only its own hash. A certificate gateway sends a CSR (its private key never
leaves the box) that the deployment's client CA signs.

Errors (besides ``RegistryError`` from the registry and ``cloud.broker.errors``:
``CertificateRequestError`` for a bad CSR, ``BrokerUnreachable`` and
``BrokerAdminError`` when the broker cannot be asked or refuses)::

    ProvisioningError (CloudError)
    ├── BrokerNotConfigured   a setting the operation needs is unset or unreadable
    └── GatewayRevoked        the gateway was revoked; its id is never reused
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from psycopg import AsyncConnection

from cloud import inventory, registry
from cloud.broker.certificates import sign_gateway_csr
from cloud.broker.dynsec import DynamicSecurity
from cloud.errors import CloudError, RegistryError
from cloud.settings import BrokerSettings
from schemas.broker import BrokerAddress

Auth = Literal["password", "certificate"]

PASSWORD_BYTES: Final = 32


class ProvisioningError(CloudError):
    """Base of the errors of ``cloud.provisioning``."""


class BrokerNotConfigured(ProvisioningError):
    """The settings ``variables`` are unset (or name a file that cannot be read)."""

    def __init__(self, variables: Sequence[str], problem: str = "must be set") -> None:
        self.variables = list(variables)
        super().__init__(f"{' and '.join(self.variables)} {problem} to issue broker credentials")


class GatewayRevoked(ProvisioningError):
    """``gateway`` was revoked; a revoked id is never given credentials again."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        super().__init__(f"gateway {gateway!r} is revoked; revoked ids are not reused")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a gateway needs to reach the broker, handed to the installer once."""

    username: str
    password: str | None
    """None for a certificate gateway."""
    certificate: str | None
    """The signed client certificate (PEM); None for a password gateway."""
    broker_url: str
    """Where to connect, without credentials (``mqtts://host:port``)."""
    ca_certificate: str | None
    """The CA (PEM) to check the broker's certificate with; None when not configured."""
    issued_at: datetime


@dataclass(frozen=True, slots=True)
class Provisioned:
    """A gateway with fresh credentials; ``first`` when it never had any before."""

    gateway: registry.Gateway
    credentials: Credentials
    first: bool


async def provision_gateway(
    conn: AsyncConnection[Any],
    settings: BrokerSettings,
    gateway_id: str,
    community: str,
    *,
    auth: Auth,
    csr: str | None,
) -> Provisioned:
    """Register ``gateway_id`` under ``community`` (if it is not yet) and issue it new
    broker credentials; any it had stop working.

    Raises BrokerNotConfigured before anything is written, RegistryError when the
    community is unknown or retired or the gateway is registered under another one,
    GatewayRevoked for a revoked gateway, CertificateRequestError for a bad CSR,
    AccountInUse when the id names a broker account that is not a gateway's (before
    anything is registered), BrokerUnreachable or BrokerAdminError from the broker
    (re-run to finish).
    """
    admin = _required(settings, auth)
    # Before the registry: an id that names another broker account is never registered.
    async with _dynsec(settings, admin) as dynsec:
        await dynsec.refuse_other_accounts(gateway_id, "grantGateway")
    async with conn.transaction():
        gateway = await registry.register_gateway(conn, gateway_id, community)
        await registry.lock_gateway(conn, gateway_id)
        issued_before = gateway.credentials_issued_at is not None
        return await _issue(
            conn, settings, admin, gateway.id, gateway.status, community, issued_before, auth, csr
        )


async def rotate_credentials(
    conn: AsyncConnection[Any],
    settings: BrokerSettings,
    gateway_id: str,
    *,
    auth: Auth,
    csr: str | None,
) -> Provisioned:
    """Issue new credentials to the registered ``gateway_id``; the old ones stop at once.

    Raises RegistryError for an unknown gateway, otherwise as ``provision_gateway``.
    """
    admin = _required(settings, auth)
    async with conn.transaction():
        # Locked first, so the status read below is the one the grant runs under.
        await registry.lock_gateway(conn, gateway_id)
        found = await inventory.get_gateway(conn, gateway_id, scope=None)
        if found is None:
            raise RegistryError("unknown gateway", entity="gateway", key=gateway_id)
        issued_before = found.credentials_issued_at is not None
        return await _issue(
            conn, settings, admin, found.id, found.status, found.community, issued_before, auth, csr
        )


async def revoke(
    conn: AsyncConnection[Any], settings: BrokerSettings, gateway_id: str
) -> registry.Gateway:
    """Revoke ``gateway_id`` in the registry, then delete its broker client (which ends
    its session). Idempotent: revoking again re-runs the broker step.

    Raises BrokerNotConfigured before anything is written, RegistryError for an
    unknown gateway, BrokerUnreachable or BrokerAdminError from the broker.
    """
    if settings.admin_url is None:
        raise BrokerNotConfigured([BrokerSettings.variable("admin_url")])
    # Committed before the broker step, so a broker failure leaves the gateway revoked.
    # Its UPDATE waits for a grant holding the row (lock_gateway), and a grant after it
    # finds the gateway revoked: a grant and a revocation never interleave.
    gateway = await registry.revoke_gateway(conn, gateway_id)
    async with _dynsec(settings, settings.admin_url) as dynsec:
        await dynsec.revoke_gateway(gateway_id)
    return gateway


async def _issue(
    conn: AsyncConnection[Any],
    settings: BrokerSettings,
    admin: BrokerAddress,
    gateway_id: str,
    status: str,
    community: str,
    issued_before: bool,
    auth: Auth,
    csr: str | None,
) -> Provisioned:
    if status != "active":
        raise GatewayRevoked(gateway_id)
    ca_certificate = _read(settings.server_ca_file, "server_ca_file")
    if auth == "certificate":
        certificate = _sign(settings, gateway_id, csr or "")
        password = None
        url = settings.certificate_url
    else:
        certificate = None
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        url = settings.gateway_url
    async with _dynsec(settings, admin) as dynsec:
        await dynsec.grant_gateway(gateway_id, community, password)
    issued = await registry.record_credentials(conn, gateway_id, auth=auth)
    credentials = Credentials(
        username=gateway_id,
        password=password,
        certificate=certificate,
        broker_url=url or "",
        ca_certificate=ca_certificate,
        issued_at=issued.credentials_issued_at or datetime.now().astimezone(),
    )
    return Provisioned(issued, credentials, first=not issued_before)


def _required(settings: BrokerSettings, auth: Auth) -> BrokerAddress:
    """The admin address, once every setting ``auth`` needs is known to be there."""
    needed = ["admin_url", "gateway_url"]
    if auth == "certificate":
        needed += ["client_ca_cert_file", "client_ca_key_file"]
    missing = [name for name in needed if getattr(settings, name) is None]
    if missing or settings.admin_url is None:
        raise BrokerNotConfigured([BrokerSettings.variable(name) for name in missing])
    return settings.admin_url


def _sign(settings: BrokerSettings, gateway: str, csr: str) -> str:
    """The CSR signed by the client CA; the CA files are known to be set."""
    cert, key = settings.client_ca_cert_file, settings.client_ca_key_file
    variables = [BrokerSettings.variable(f"client_ca_{part}_file") for part in ("cert", "key")]
    if cert is None or key is None:
        raise BrokerNotConfigured(variables)
    try:
        return sign_gateway_csr(csr, gateway, cert, key, settings.cert_days)
    except (OSError, ValueError) as exc:
        raise BrokerNotConfigured(
            variables, f"must name a readable PEM certificate and key ({type(exc).__name__})"
        ) from None


def _read(path: Path | None, setting: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        raise BrokerNotConfigured(
            [BrokerSettings.variable(setting)], "must name a readable PEM file"
        ) from None


def _dynsec(settings: BrokerSettings, admin: BrokerAddress) -> DynamicSecurity:
    return DynamicSecurity(admin, ca_file=settings.admin_ca_file)
