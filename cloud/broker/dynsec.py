"""Mosquitto's dynamic-security plugin, driven over its control topic.

The cloud and the broker may live on different hosts, and a revoked gateway must be
cut off at once, so the cloud does not write password and ACL files for the broker
to reload: it sends the plugin JSON commands on ``$CONTROL/dynamic-security/v1`` and
reads the answers on ``$CONTROL/dynamic-security/v1/response`` (docs/broker.md). The
plugin saves its own state (its ``dynsec.json``) after every change.

Every operation is idempotent: re-running one after a failure, or after it already
succeeded, ends in the same state. The only other module of ``cloud`` importing
aiomqtt is ``cloud.ingest.consumer``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import aiomqtt

from cloud.broker.errors import AccountInUse, BrokerAdminError, BrokerUnreachable
from cloud.broker.policy import (
    DEFAULT_ACCESS,
    SERVICE_ROLE,
    Acl,
    gateway_acls,
    gateway_role,
    service_acls,
)
from schemas.broker import BrokerAddress

log = logging.getLogger(__name__)

CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC: Final = f"{CONTROL_TOPIC}/response"

_CLIENT_NOT_FOUND: Final = "Client not found"
_CLIENT_EXISTS: Final = "Client already exists"
_ROLE_NOT_FOUND: Final = "Role not found"
_ROLE_EXISTS: Final = "Role already exists"

Command = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Response:
    """The plugin's answer to one command: ``error`` is its text when it refused."""

    command: str
    error: str | None
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ClientState:
    """What the plugin holds for one username (a gateway id, or a service account)."""

    username: str
    exists: bool
    disabled: bool = False
    roles: tuple[str, ...] = ()


class DynamicSecurity:
    """One admin connection to the plugin; use it as an async context manager.

    ``broker`` carries the admin account (the one ``mosquitto_ctrl dynsec init``
    made); ``ca_file`` verifies a TLS broker whose certificate the system does not
    trust. Operations raise ``BrokerAdminError`` when the plugin refuses a command
    and ``BrokerUnreachable`` when the broker cannot be reached or does not answer
    within ``timeout_s``.
    """

    def __init__(
        self,
        broker: BrokerAddress,
        *,
        ca_file: Path | None = None,
        client_id: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.broker = broker
        self.ca_file = ca_file
        self.client_id = client_id or f"anju-broker-admin-{uuid.uuid4().hex[:12]}"
        self.timeout_s = timeout_s
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[Response]] = {}

    async def __aenter__(self) -> Self:
        tls = None
        if self.broker.tls:
            tls = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
        v5 = self.broker.version == "5"
        client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            tls_context=tls,
            timeout=self.timeout_s,
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise BrokerUnreachable(
                "connect", f"{self.broker.redacted()}: {exc}", subject=self.broker.username
            ) from None
        try:
            await client.subscribe(RESPONSE_TOPIC, qos=1, timeout=self.timeout_s)
        except aiomqtt.MqttError as exc:
            await client.__aexit__(None, None, None)
            raise BrokerUnreachable("subscribe", f"{RESPONSE_TOPIC}: {exc}") from None
        self._client = client
        self._reader = asyncio.create_task(self._read(client), name="dynsec-responses")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if client is not None:
            try:
                await client.__aexit__(exc_type, exc, tb)
            except aiomqtt.MqttError as failure:
                log.info("dynsec admin %s: disconnect failed: %s", self.client_id, failure)

    async def execute(self, commands: Sequence[Command]) -> list[Response]:
        """Send ``commands`` in one control message and return their answers in order.

        The plugin runs them one after another. A refusal is an answer (``error``
        set), not an exception: callers decide which refusals mean "already so".
        Raises ``BrokerUnreachable`` when the answers do not all come in time.
        """
        client = self._client
        if client is None:
            raise BrokerUnreachable(_names(commands), "not connected: use `async with`")
        loop = asyncio.get_running_loop()
        keyed = []
        for command in commands:
            key = uuid.uuid4().hex
            self._pending[key] = loop.create_future()
            keyed.append({**command, "correlationData": key})
        keys = [entry["correlationData"] for entry in keyed]
        try:
            await client.publish(
                CONTROL_TOPIC, json.dumps({"commands": keyed}), qos=1, timeout=self.timeout_s
            )
            async with asyncio.timeout(self.timeout_s):
                return [await self._pending[key] for key in keys]
        except aiomqtt.MqttError as exc:
            raise BrokerUnreachable(_names(commands), str(exc)) from None
        except TimeoutError:
            raise BrokerUnreachable(
                _names(commands), f"no answer within {self.timeout_s} s"
            ) from None
        finally:
            for key in keys:
                self._pending.pop(key, None)

    async def set_default_deny(self) -> None:
        """Deny whatever no role allows, for every kind of access (policy.DEFAULT_ACCESS)."""
        acls = [{"acltype": str(kind), "allow": allow} for kind, allow in DEFAULT_ACCESS.items()]
        await self._expect([{"command": "setDefaultACLAccess", "acls": acls}])

    async def grant_gateway(self, gateway: str, community: str, password: str | None) -> None:
        """Let ``gateway`` of ``community`` in with ``password``, or with a certificate
        whose common name is the gateway id when ``password`` is None.

        Its role ``anju-gw-{gateway}`` gets exactly the ACLs of ``policy.gateway_acls``.
        An existing client is deleted and made again, which drops its live session and
        its old password at once: the box reconnects with the new credentials.
        """
        role = gateway_role(gateway)
        await self.refuse_other_accounts(gateway, "grantGateway")
        await self._ensure_role(role, gateway_acls(community, gateway))
        client: dict[str, Any] = {
            "command": "createClient",
            "username": gateway,
            "roles": [{"rolename": role}],
        }
        if password is not None:
            client["password"] = password
        delete, create = await self.execute(
            [{"command": "deleteClient", "username": gateway}, client]
        )
        _check(delete, gateway, allowed=(_CLIENT_NOT_FOUND,))
        _check(create, gateway)

    async def revoke_gateway(self, gateway: str) -> None:
        """Delete ``gateway``'s client (dropping its session) and its role.

        A password gateway can no longer connect. A certificate gateway whose
        certificate is still valid completes TLS and CONNECT but may do nothing
        (docs/broker.md, "revoking a certificate").
        """
        role = gateway_role(gateway)
        await self.refuse_other_accounts(gateway, "revokeGateway")
        client, role_answer = await self.execute(
            [
                {"command": "deleteClient", "username": gateway},
                {"command": "deleteRole", "rolename": role},
            ]
        )
        _check(client, gateway, allowed=(_CLIENT_NOT_FOUND,))
        _check(role_answer, role, allowed=(_ROLE_NOT_FOUND,))

    async def ensure_service_account(self, username: str, password: str) -> None:
        """Give the cloud workers' account ``username`` the password and the role
        ``anju-cloud`` (policy.service_acls), making either when missing.

        Unlike a gateway's, an existing account keeps its sessions: workers already
        connected carry on, and the new password applies from their next connect.
        """
        await self._ensure_role(SERVICE_ROLE, service_acls())
        (create,) = await self.execute(
            [
                {
                    "command": "createClient",
                    "username": username,
                    "password": password,
                    "roles": [{"rolename": SERVICE_ROLE}],
                }
            ]
        )
        _check(create, username, allowed=(_CLIENT_EXISTS,))
        if create.error is None:
            return
        commands: list[Command] = [
            {"command": "setClientPassword", "username": username, "password": password}
        ]
        if SERVICE_ROLE not in (await self._client_state(username)).roles:
            commands.append(
                {"command": "addClientRole", "username": username, "rolename": SERVICE_ROLE}
            )
        await self._expect(commands, subject=username)

    async def refuse_other_accounts(self, gateway: str, command: str) -> None:
        """Raise AccountInUse when an account named ``gateway`` exists with any role but
        the gateway's own: a gateway id must never replace the cloud workers' or the
        admin's account, which share the plugin's one namespace of usernames."""
        state = await self._client_state(gateway)
        if state.exists and set(state.roles) - {gateway_role(gateway)}:
            raise AccountInUse(command, gateway, state.roles)

    async def gateway_state(self, gateway: str) -> ClientState:
        """Whether ``gateway``'s client exists and is disabled, and its roles."""
        return await self._client_state(gateway)

    async def _client_state(self, username: str) -> ClientState:
        (answer,) = await self.execute([{"command": "getClient", "username": username}])
        _check(answer, username, allowed=(_CLIENT_NOT_FOUND,))
        if answer.error is not None:
            return ClientState(username, exists=False)
        client = answer.data.get("client", {})
        roles = tuple(str(entry.get("rolename")) for entry in client.get("roles", []))
        return ClientState(username, True, bool(client.get("disabled", False)), roles)

    async def _ensure_role(self, role: str, acls: Sequence[Acl]) -> None:
        """Make ``role`` hold exactly ``acls``: created with them, or corrected in place."""
        wanted = [acl.to_json() for acl in acls]
        (create,) = await self.execute(
            [{"command": "createRole", "rolename": role, "acls": wanted}]
        )
        _check(create, role, allowed=(_ROLE_EXISTS,))
        if create.error is None:
            return
        (current,) = await self.execute([{"command": "getRole", "rolename": role}])
        _check(current, role)
        held = {Acl.from_json(entry) for entry in current.data.get("role", {}).get("acls", [])}
        desired = set(acls)
        fixes: list[Command] = [
            {
                "command": "removeRoleACL",
                "rolename": role,
                "acltype": str(acl.type),
                "topic": acl.topic,
            }
            for acl in held - desired
        ]
        fixes += [
            {"command": "addRoleACL", "rolename": role, **acl.to_json()}
            for acl in acls
            if acl not in held
        ]
        if fixes:
            log.info("dynsec: role %s corrected (%d ACL changes)", role, len(fixes))
            await self._expect(fixes, subject=role)

    async def _expect(self, commands: Sequence[Command], *, subject: str | None = None) -> None:
        for answer in await self.execute(commands):
            _check(answer, subject)

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                self._settle(message.payload)
        except aiomqtt.MqttError as exc:
            failure = BrokerUnreachable("read", f"connection lost: {exc}")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(failure)

    def _settle(self, payload: object) -> None:
        if not isinstance(payload, bytes | bytearray):
            return
        try:
            answers = json.loads(payload).get("responses", [])
        except (ValueError, AttributeError):
            log.warning("dynsec: unreadable answer on %s: %r", RESPONSE_TOPIC, payload[:200])
            return
        for entry in answers:
            future = self._pending.get(str(entry.get("correlationData")))
            if future is not None and not future.done():
                future.set_result(
                    Response(str(entry.get("command")), entry.get("error"), entry.get("data", {}))
                )


def _check(answer: Response, subject: str | None, *, allowed: Sequence[str] = ()) -> None:
    if answer.error is not None and answer.error not in allowed:
        raise BrokerAdminError(answer.command, answer.error, subject=subject)


def _names(commands: Sequence[Command]) -> str:
    return ",".join(str(command.get("command")) for command in commands)
