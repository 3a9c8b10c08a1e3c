"""The broker follows the registry: Mosquitto with TLS and the dynamic-security
plugin, driven by ``cloud.broker.dynsec`` exactly as the cloud drives it.

A gateway publishes only under its own community and id and hears only its own
commands; a revoked or rotated gateway is cut off at once; the cloud workers' account
reads every gateway and sends commands, but cannot speak as a gateway.
"""

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from anju.cli import root as cli
from anju.services.tls import certificate_request, new_key
from cloud.broker.certificates import sign_gateway_csr
from cloud.broker.dynsec import ClientState
from cloud.broker.errors import AccountInUse, CertificateRequestError, TopicLevelError
from cloud.broker.policy import gateway_acls, service_acls
from schemas.topics import Channel, subscription, topic_for
from tests.brokers import (
    BAD_CREDENTIALS,
    CONNECTED,
    NO_MATCHING_SUBSCRIBERS,
    NOT_AUTHORIZED,
    SERVICE_USER,
    MqttProbe,
    SecureBroker,
    secure_broker,  # noqa: F401  (the fixture)
)
from tests.waiting import until

FENGHUANG = "xijin/fenghuang"
BAIYUN = "nanshan/baiyun"
DELIVERED = {CONNECTED, NO_MATCHING_SUBSCRIBERS}


async def test_gateway_publishes_only_its_own_topics(
    secure_broker: SecureBroker,  # noqa: F811
    unique_id: Callable[[str], str],
) -> None:
    gateway, neighbour = unique_id("gw"), unique_id("gw")
    async with secure_broker.dynsec() as dynsec:
        await dynsec.grant_gateway(gateway, FENGHUANG, "fh-secret")
        await dynsec.grant_gateway(neighbour, FENGHUANG, "other-secret")
    async with MqttProbe(secure_broker, username=gateway, password="fh-secret") as box:
        assert await box.connect() == CONNECTED
        for channel in (Channel.TELEMETRY, Channel.EVENTS, Channel.STATUS):
            assert await box.publish(topic_for(FENGHUANG, gateway, channel)) in DELIVERED
        result = topic_for(FENGHUANG, gateway, Channel.COMMAND_RESULT, "cmd-1")
        assert await box.publish(result) in DELIVERED
        refused = [
            topic_for(FENGHUANG, neighbour, Channel.EVENTS),
            topic_for(BAIYUN, gateway, Channel.EVENTS),
            topic_for(FENGHUANG, gateway, Channel.COMMAND, "cmd-1"),
            "anju/v1/xijin/fenghuang/elsewhere",
        ]
        for topic in refused:
            assert await box.publish(topic) == NOT_AUTHORIZED, topic
        assert await box.subscribe(topic_for(FENGHUANG, gateway, Channel.COMMAND, "+")) == 1
        assert await box.subscribe(f"anju/v1/{FENGHUANG}/{gateway}/ack/#") == 1
        for topic in (
            topic_for(FENGHUANG, neighbour, Channel.COMMAND, "+"),
            subscription(Channel.TELEMETRY),
            "#",
        ):
            assert await box.subscribe(topic) == NOT_AUTHORIZED, topic


async def test_revoked_password_gateway_is_dropped_and_cannot_connect(
    secure_broker: SecureBroker,  # noqa: F811
    unique_id: Callable[[str], str],
) -> None:
    gateway = unique_id("gw")
    async with secure_broker.dynsec() as dynsec:
        await dynsec.grant_gateway(gateway, FENGHUANG, "lost-box")
        async with MqttProbe(secure_broker, username=gateway, password="lost-box") as box:
            assert await box.connect() == CONNECTED
            await dynsec.revoke_gateway(gateway)
            await until("the revoked session is dropped", 10, lambda: box.dropped)
        await dynsec.revoke_gateway(gateway)
        assert await dynsec.gateway_state(gateway) == ClientState(gateway, exists=False)
    async with MqttProbe(secure_broker, username=gateway, password="lost-box") as again:
        assert await again.connect() in {BAD_CREDENTIALS, NOT_AUTHORIZED}


async def test_rotation_kicks_the_old_session_and_only_the_new_password_works(
    secure_broker: SecureBroker,  # noqa: F811
    unique_id: Callable[[str], str],
) -> None:
    gateway = unique_id("gw")
    telemetry = topic_for(FENGHUANG, gateway, Channel.TELEMETRY)
    async with secure_broker.dynsec() as dynsec:
        await dynsec.grant_gateway(gateway, FENGHUANG, "first")
        async with MqttProbe(secure_broker, username=gateway, password="first") as old:
            assert await old.connect() == CONNECTED
            await dynsec.grant_gateway(gateway, FENGHUANG, "second")
            await until("the session on the old password is dropped", 10, lambda: old.dropped)
        state = await dynsec.gateway_state(gateway)
    assert state.exists
    assert not state.disabled
    async with MqttProbe(secure_broker, username=gateway, password="first") as stale:
        assert await stale.connect() in {BAD_CREDENTIALS, NOT_AUTHORIZED}
    async with MqttProbe(secure_broker, username=gateway, password="second") as new:
        assert await new.connect() == CONNECTED
        assert await new.publish(telemetry) in DELIVERED


async def test_certificate_gateway_publishes_until_revoked(
    secure_broker: SecureBroker,  # noqa: F811
    unique_id: Callable[[str], str],
) -> None:
    gateway = unique_id("gw")
    events = topic_for(FENGHUANG, gateway, Channel.EVENTS)
    certificate = secure_broker.client_certificate(gateway)
    async with secure_broker.dynsec() as dynsec:
        await dynsec.grant_gateway(gateway, FENGHUANG, None)
        async with MqttProbe(secure_broker, certificate=certificate) as box:
            assert await box.connect() == CONNECTED
            assert await box.publish(events) in DELIVERED
            assert await box.publish(topic_for(BAIYUN, gateway, Channel.EVENTS)) == NOT_AUTHORIZED
            await dynsec.revoke_gateway(gateway)
            await until("the revoked session is dropped", 10, lambda: box.dropped)
    # Its certificate still completes TLS and CONNECT (no CRL here: docs/broker.md), but
    # the plugin no longer knows the name, so nothing is allowed.
    async with MqttProbe(secure_broker, certificate=certificate) as revoked:
        assert await revoked.connect() == CONNECTED
        assert await revoked.publish(events) == NOT_AUTHORIZED
        assert await revoked.subscribe(topic_for(FENGHUANG, gateway, Channel.COMMAND, "+")) == (
            NOT_AUTHORIZED
        )
    # Without a password it cannot use the password listener with its id either.
    async with MqttProbe(secure_broker, username=gateway, password="") as guess:
        assert await guess.connect() in {BAD_CREDENTIALS, NOT_AUTHORIZED}


async def test_cloud_account_reads_every_gateway_and_sends_commands(
    secure_broker: SecureBroker,  # noqa: F811
    unique_id: Callable[[str], str],
) -> None:
    gateway = unique_id("gw")
    async with secure_broker.dynsec() as dynsec:
        await dynsec.grant_gateway(gateway, BAIYUN, "by-secret")
    cloud = MqttProbe(secure_broker, username=SERVICE_USER, password=secure_broker.service_password)
    async with cloud:
        assert await cloud.connect() == CONNECTED
        for channel in (Channel.TELEMETRY, Channel.EVENTS, Channel.STATUS, Channel.COMMAND_RESULT):
            assert await cloud.subscribe(subscription(channel)) == 1, channel
            assert await cloud.subscribe(subscription(channel, shared_group="ingest")) == 1
        command = topic_for(BAIYUN, gateway, Channel.COMMAND, "cmd-7")
        assert await cloud.publish(command) in DELIVERED
        for topic in (
            topic_for(BAIYUN, gateway, Channel.TELEMETRY),
            topic_for(BAIYUN, gateway, Channel.COMMAND_RESULT, "cmd-7"),
        ):
            assert await cloud.publish(topic) == NOT_AUTHORIZED, topic
        assert await cloud.subscribe(subscription(Channel.COMMAND)) == NOT_AUTHORIZED


async def test_a_gateway_id_never_takes_over_the_cloud_account(
    secure_broker: SecureBroker,  # noqa: F811
) -> None:
    """Granting or revoking a "gateway" named like the cloud workers' account would
    delete that account; both are refused and the account keeps working."""
    async with secure_broker.dynsec() as dynsec:
        with pytest.raises(AccountInUse, match="not a gateway's"):
            await dynsec.grant_gateway(SERVICE_USER, FENGHUANG, "stolen")
        with pytest.raises(AccountInUse, match="anju-cloud"):
            await dynsec.revoke_gateway(SERVICE_USER)
    cloud = MqttProbe(secure_broker, username=SERVICE_USER, password=secure_broker.service_password)
    async with cloud:
        assert await cloud.connect() == CONNECTED
        assert await cloud.subscribe(subscription(Channel.TELEMETRY)) == 1


async def test_a_role_edited_by_hand_is_put_back(
    secure_broker: SecureBroker,  # noqa: F811
    unique_id: Callable[[str], str],
) -> None:
    """ensure_service_account corrects a role that drifted: what was added by hand goes,
    what was removed comes back."""
    async with secure_broker.dynsec() as dynsec:
        stray = {"acltype": "publishClientSend", "topic": "#", "allow": True}
        kept = service_acls()[0]
        await dynsec.execute(
            [
                {"command": "addRoleACL", "rolename": "anju-cloud", **stray},
                {
                    "command": "removeRoleACL",
                    "rolename": "anju-cloud",
                    "acltype": str(kept.type),
                    "topic": kept.topic,
                },
            ]
        )
        await dynsec.ensure_service_account(SERVICE_USER, secure_broker.service_password)
        (role,) = await dynsec.execute([{"command": "getRole", "rolename": "anju-cloud"}])
    held = {(acl["acltype"], acl["topic"]) for acl in role.data["role"]["acls"]}
    assert held == {(str(acl.type), acl.topic) for acl in service_acls()}


@pytest.mark.parametrize(
    ("community", "gateway"),
    [
        (FENGHUANG, "gw/01"),
        (FENGHUANG, "gw-+"),
        (FENGHUANG, "#"),
        (FENGHUANG, "$SYS"),
        (FENGHUANG, ""),
        ("xijin", "gw-01"),
        ("xijin/+", "gw-01"),
        ("a/b/c", "gw-01"),
    ],
)
def test_ids_that_would_widen_an_acl_are_refused(community: str, gateway: str) -> None:
    with pytest.raises(TopicLevelError):
        gateway_acls(community, gateway)


def test_a_gateway_certificate_is_signed_from_its_own_request(
    secure_broker: SecureBroker,  # noqa: F811
    tmp_path: Path,
) -> None:
    ca = secure_broker.client_ca
    request = certificate_request(new_key(tmp_path / "gw.key"), "gw-fh-01")
    pem = sign_gateway_csr(request, "gw-fh-01", ca.cert_path, ca.key_path, days=30)
    certificate = x509.load_pem_x509_certificate(pem.encode())
    assert certificate.subject.rfc4514_string() == "CN=gw-fh-01"
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    again = sign_gateway_csr(request, "gw-fh-01", ca.cert_path, ca.key_path, days=30)
    assert x509.load_pem_x509_certificate(again.encode()).serial_number != (
        certificate.serial_number
    )


def test_requests_that_are_not_the_gateways_own_are_refused(
    secure_broker: SecureBroker,  # noqa: F811
    tmp_path: Path,
) -> None:
    ca = secure_broker.client_ca
    key = new_key(tmp_path / "gw.key")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak_request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw-fh-01")]))
        .sign(weak, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    other = certificate_request(key, "gw-by-01")
    own = x509.load_pem_x509_csr(certificate_request(key, "gw-fh-01").encode())
    tampered = bytearray(own.public_bytes(serialization.Encoding.DER))
    tampered[-1] ^= 0x01
    tampered_pem = x509.load_der_x509_csr(bytes(tampered)).public_bytes(serialization.Encoding.PEM)
    cases: dict[str, str | bytes] = {
        "common name": other,
        "signature": tampered_pem,
        "1024 bits": weak_request,
        "not a PEM": "hello",
    }
    for reason, request in cases.items():
        with pytest.raises(CertificateRequestError, match=reason) as refused:
            sign_gateway_csr(request, "gw-fh-01", ca.cert_path, ca.key_path, days=30)
        assert refused.value.gateway == "gw-fh-01"


def test_broker_setup_gives_the_cloud_workers_their_account(
    secure_broker: SecureBroker,  # noqa: F811
    unique_id: Callable[[str], str],
    tmp_path: Path,
) -> None:
    user = unique_id("workers")
    env = {
        "ANJU_BROKER_ADMIN_URL": secure_broker.admin_url,
        "ANJU_BROKER_ADMIN_CA_FILE": str(secure_broker.ca_file),
    }
    made = CliRunner().invoke(cli, ["cloud", "broker", "setup", "--user", user], env=env)
    assert made.exit_code == 0, made.output
    password = made.output.split("password (shown once): ")[1].split()[0]
    assert f"ANJU_MQTT_URL=mqtts://{user}:PASSWORD@127.0.0.1:" in made.output
    chosen = tmp_path / "password"
    chosen.write_text("chosen-secret\n")
    again = CliRunner().invoke(
        cli, ["cloud", "broker", "setup", "--user", user, "--password-file", str(chosen)], env=env
    )
    assert again.exit_code == 0, again.output
    assert "shown once" not in again.output

    async def check() -> None:
        async with MqttProbe(secure_broker, username=user, password=password) as stale:
            assert await stale.connect() in {BAD_CREDENTIALS, NOT_AUTHORIZED}
        async with MqttProbe(secure_broker, username=user, password="chosen-secret") as cloud:
            assert await cloud.connect() == CONNECTED
            assert await cloud.subscribe(subscription(Channel.EVENTS, shared_group="g")) == 1

    asyncio.run(check())


def test_broker_setup_names_a_bad_admin_url() -> None:
    bad = CliRunner().invoke(
        cli, ["cloud", "broker", "setup"], env={"ANJU_BROKER_ADMIN_URL": "http://x"}
    )
    assert bad.exit_code == 2
    assert "ANJU_BROKER_ADMIN_URL" in bad.output
