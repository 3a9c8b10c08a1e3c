"""A broker as production runs it, for tests: TLS, the dynamic-security plugin, and
two listeners (passwords, and client certificates).

``start_secure_broker(work_dir)`` is a context manager giving a ``SecureBroker``;
``secure_broker`` is a session fixture around it that a test module imports
(``from tests.brokers import secure_broker  # noqa: F401``). Everything not granted
is denied: a test grants its gateways (``DynamicSecurity.grant_gateway``) and, for
the cloud side, a service account (``SecureBroker.service_url``).

``MqttProbe`` is one MQTT v5 session that reports the broker's reason codes
(CONNACK, PUBACK, SUBACK) and whether the broker dropped it: what tests of who may
do what assert on.

Gateway ids are shared by nobody else on the session's broker only if the test makes
them unique (the ``unique_id`` fixture).
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from anju.services.mosquitto import MosquittoServer, find_dynsec_plugin, find_mosquitto_ctrl
from anju.services.tls import (
    CertificateAuthority,
    IssuedCertificate,
    issue_client_cert,
    issue_server_cert,
    make_ca,
)
from cloud.broker.dynsec import DynamicSecurity
from schemas.broker import BrokerAddress, parse_broker_url

ADMIN_USER = "anju-admin"
SERVICE_USER = "anju-cloud-test"
HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class SecureBroker:
    """A running TLS + dynamic-security Mosquitto and what a test needs to use it.

    ``password_port``: TLS, username and password. ``certificate_port``: TLS with a
    client certificate signed by ``client_ca`` (its common name is the username).
    Both present a server certificate signed by ``server_ca`` (``ca_file``).
    """

    server: MosquittoServer
    password_port: int
    certificate_port: int
    server_ca: CertificateAuthority
    client_ca: CertificateAuthority
    admin_password: str
    service_password: str
    certs_dir: Path

    @property
    def ca_file(self) -> Path:
        """The PEM a client verifies the broker with (``tls_ca_file`` of a gateway)."""
        return self.server_ca.cert_path

    @property
    def admin(self) -> BrokerAddress:
        """The dynsec admin account on the password listener."""
        return parse_broker_url(self.admin_url)

    @property
    def admin_url(self) -> str:
        """``mqtts://anju-admin:PASSWORD@127.0.0.1:PORT``: ``ANJU_BROKER_ADMIN_URL``."""
        return self.password_url(ADMIN_USER, self.admin_password)

    @property
    def service_url(self) -> str:
        """The cloud workers' account (role ``anju-cloud``), on the password listener."""
        return self.password_url(SERVICE_USER, self.service_password)

    @property
    def gateway_url(self) -> str:
        """``mqtts://127.0.0.1:PORT`` of the password listener, without credentials."""
        return f"mqtts://{HOST}:{self.password_port}"

    @property
    def certificate_url(self) -> str:
        """``mqtts://127.0.0.1:PORT`` of the certificate listener."""
        return f"mqtts://{HOST}:{self.certificate_port}"

    def password_url(self, username: str, password: str) -> str:
        """The password listener's URL with these credentials."""
        return f"mqtts://{username}:{password}@{HOST}:{self.password_port}"

    def dynsec(self) -> DynamicSecurity:
        """A ``DynamicSecurity`` admin client of this broker (use with ``async with``)."""
        return DynamicSecurity(self.admin, ca_file=self.ca_file)

    def client_certificate(self, common_name: str) -> IssuedCertificate:
        """A client certificate for ``common_name`` (a gateway id) from ``client_ca``,
        written under ``certs_dir/clients``; its CN is the username the broker sees."""
        return issue_client_cert(self.client_ca, self.certs_dir / "clients", common_name)


@contextmanager
def start_secure_broker(work_dir: Path) -> Iterator[SecureBroker]:
    """Make the CAs and certificates under ``work_dir``, start the broker, set every
    default access to deny and create the service account; stop it on exit."""
    for missing, hint in (
        (find_dynsec_plugin(), "mosquitto_dynamic_security.so (package mosquitto)"),
        (find_mosquitto_ctrl(), "mosquitto_ctrl (package mosquitto-clients)"),
    ):
        if missing is None:
            pytest.fail(f"{hint} not found: run scripts/test, which installs it", pytrace=False)
    certs = work_dir / "certs"
    server_ca = make_ca(certs, "anju test server CA")
    client_ca = make_ca(certs, "anju test client CA")
    server_cert = issue_server_cert(server_ca, certs)
    tls = [f"certfile {server_cert.cert_path}", f"keyfile {server_cert.key_path}"]
    admin_password = secrets.token_urlsafe(16)
    broker = MosquittoServer(
        work_dir / "mosquitto",
        listener_config=[f"cafile {server_ca.cert_path}", *tls, "allow_anonymous false"],
        extra_listeners=[
            [
                f"cafile {client_ca.cert_path}",
                *tls,
                "require_certificate true",
                "use_identity_as_username true",
            ]
        ],
        dynsec_admin=(ADMIN_USER, admin_password),
    )
    with broker:
        secure = SecureBroker(
            server=broker,
            password_port=broker.port,
            certificate_port=broker.extra_ports[0],
            server_ca=server_ca,
            client_ca=client_ca,
            admin_password=admin_password,
            service_password=secrets.token_urlsafe(16),
            certs_dir=certs,
        )
        asyncio.run(_prepare(secure))
        yield secure


async def _prepare(broker: SecureBroker) -> None:
    async with broker.dynsec() as dynsec:
        await dynsec.set_default_deny()
        await dynsec.ensure_service_account(SERVICE_USER, broker.service_password)


@pytest.fixture(scope="session")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """The session's TLS + dynamic-security broker (see ``start_secure_broker``)."""
    with start_secure_broker(tmp_path_factory.mktemp("secure-broker")) as broker:
        yield broker


CONNECTED = 0
NO_MATCHING_SUBSCRIBERS = 16
BAD_CREDENTIALS = 134
NOT_AUTHORIZED = 135


class MqttProbe:
    """One MQTT v5 session over TLS to ``broker``, for asserting on reason codes.

    With ``certificate`` it connects to the certificate listener presenting it, else
    to the password listener with ``username`` and ``password``. Use it as an async
    context manager or call ``close()``. Every wait is bounded by ``timeout_s``.
    """

    def __init__(
        self,
        broker: SecureBroker,
        *,
        username: str | None = None,
        password: str | None = None,
        certificate: IssuedCertificate | None = None,
        client_id: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.timeout_s = timeout_s
        self.port = broker.certificate_port if certificate else broker.password_port
        self._connack: ReasonCode | None = None
        self._connected = threading.Event()
        self._dropped = threading.Event()
        self._acks: dict[int, ReasonCode] = {}
        self._acked = threading.Condition()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{uuid.uuid4().hex[:12]}",
            protocol=paho.MQTTv5,
        )
        context = ssl.create_default_context(cafile=str(broker.ca_file))
        if certificate is not None:
            context.load_cert_chain(str(certificate.cert_path), str(certificate.key_path))
        self._client.tls_set_context(context)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_ack
        self._client.on_subscribe = self._on_subscribe

    async def connect(self) -> int:
        """Connect and return the CONNACK reason code (0 accepted, 134 bad user name or
        password, 135 not authorized)."""
        await asyncio.to_thread(self._client.connect, HOST, self.port)
        self._client.loop_start()
        await self._wait(self._connected, "CONNACK")
        assert self._connack is not None
        return int(self._connack.value)

    async def publish(self, topic: str, payload: bytes = b"{}") -> int:
        """Publish at QoS 1 and return the PUBACK reason code (0 or 16 delivered, 135
        not authorized)."""
        info = self._client.publish(topic, payload, qos=1)
        return await self._ack(info.mid, f"PUBACK for {topic}")

    async def subscribe(self, topic: str) -> int:
        """Subscribe at QoS 1 and return the SUBACK code (granted QoS, or 135)."""
        _, mid = self._client.subscribe(topic, qos=1)
        assert mid is not None
        return await self._ack(mid, f"SUBACK for {topic}")

    @property
    def dropped(self) -> bool:
        """Whether the broker has closed this session."""
        return self._dropped.is_set()

    async def close(self) -> None:
        """Disconnect (if still connected) and stop the network thread."""
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _wait(self, event: threading.Event, what: str) -> None:
        if not await asyncio.to_thread(event.wait, self.timeout_s):
            raise AssertionError(f"no {what} on port {self.port} within {self.timeout_s} s")

    async def _ack(self, mid: int, what: str) -> int:
        def wait() -> ReasonCode | None:
            with self._acked:
                self._acked.wait_for(lambda: mid in self._acks, self.timeout_s)
                return self._acks.pop(mid, None)

        code = await asyncio.to_thread(wait)
        if code is None:
            raise AssertionError(f"no {what} within {self.timeout_s} s")
        return int(code.value)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
        self._connack = code
        self._connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
        if self._connack is None:
            self._connack = code
            self._connected.set()
        self._dropped.set()

    def _on_ack(self, _c: Any, _u: Any, mid: int, code: ReasonCode, _p: Any) -> None:
        with self._acked:
            self._acks[mid] = code
            self._acked.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[ReasonCode], _p: Any) -> None:
        self._on_ack(_c, _u, mid, codes[0], _p)
