"""The uplink against a broker that asks what a production one asks: TLS, a password
per gateway, and an ACL that lets a gateway publish only under its own topics.

The test's ``cloud`` account acknowledges each batch it receives, as ingest does after
its commit: only that empties the gateway's spool."""

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest
import yaml

from anju.services.mosquitto import MosquittoServer
from edge.backoff import Backoff
from edge.config import load_config
from edge.spool import Spool
from edge.uplink import BrokerLogin, Uplink, UplinkState
from schemas.broker import parse_broker_url
from schemas.topics import Channel, topic_for
from schemas.vocabulary import EventType, Severity
from schemas.wire import AckedBatch, AckOutcome, BatchAck, Event, EventBatch, decode, encode
from tests.waiting import until

COMMUNITY = "xijin/fenghuang"


@dataclass(frozen=True)
class SecuredBroker:
    port: int
    ca_file: Path

    def url(self, user: str, password: str) -> str:
        return f"mqtts://{user}:{password}@127.0.0.1:{self.port}"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    work = tmp_path_factory.mktemp("secured-broker")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=anju test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=work,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=work,
    )
    (work / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
             cwd=work)  # fmt: skip
    passwords = work / "passwords"
    for index, (user, password) in enumerate(
        [
            ("gw-fh-01", "fh-secret"),
            ("gw-by-01", "by-secret"),
            ("gw-fh-02", "fh2-secret"),
            ("cloud", "cloud-secret"),
        ]
    ):
        flags = ["-c"] if index == 0 else []
        subprocess.run(
            ["mosquitto_passwd", *flags, "-b", str(passwords), user, password],
            check=True,
            capture_output=True,
            timeout=30,
        )
    acl = work / "acl"
    acl.write_text(
        "user gw-fh-01\ntopic readwrite anju/v1/xijin/fenghuang/gw-fh-01/#\n"
        "user gw-by-01\ntopic readwrite anju/v1/nanshan/baiyun/gw-by-01/#\n"
        # gw-fh-02's role was not given its ack topic: it can publish, not subscribe.
        "user gw-fh-02\ntopic write anju/v1/xijin/fenghuang/gw-fh-02/#\n"
        "user cloud\ntopic read anju/v1/#\ntopic write anju/v1/+/+/+/ack\n"
    )
    broker = MosquittoServer(
        work / "mosquitto",
        listener_config=[
            f"cafile {work / 'ca.crt'}",
            f"certfile {work / 'server.crt'}",
            f"keyfile {work / 'server.key'}",
            "allow_anonymous false",
            f"password_file {passwords}",
            f"acl_file {acl}",
        ],
    )
    with broker:
        yield SecuredBroker(broker.port, work / "ca.crt")


def alarm() -> Event:
    return Event(
        device="fh-b3-smoke-01",
        ts=datetime.now(UTC),
        seq=1,
        type=EventType.SMOKE_ALARM,
        severity=Severity.CRITICAL,
    )


@contextlib.asynccontextmanager
async def acking_cloud(
    secured: SecuredBroker, gateway: str = "gw-fh-01"
) -> AsyncIterator[list[EventBatch]]:
    """The cloud's side: every event batch of ``gateway`` received and acknowledged."""
    received: list[EventBatch] = []
    cloud = aiomqtt.Client(
        "127.0.0.1",
        secured.port,
        username="cloud",
        password="cloud-secret",
        tls_params=aiomqtt.TLSParameters(ca_certs=str(secured.ca_file)),
    )

    async def acknowledge() -> None:
        async for message in cloud.messages:
            assert isinstance(message.payload, bytes)
            batch = decode(message.payload, EventBatch)
            received.append(batch)
            acked = AckedBatch(
                spool_epoch=batch.spool_epoch, batch_seq=batch.batch_seq, outcome=AckOutcome.STORED
            )
            ack = BatchAck(gateway=gateway, batches=[acked], acked_at=datetime.now(UTC))
            await cloud.publish(topic_for(COMMUNITY, gateway, Channel.ACK), encode(ack), qos=1)

    async with cloud:
        await cloud.subscribe(topic_for(COMMUNITY, gateway, Channel.EVENTS), qos=1)
        task = asyncio.create_task(acknowledge())
        try:
            yield received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def run_briefly(uplink: Uplink, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(uplink.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, timeout=30)


async def test_gateway_publishes_over_tls_with_its_password(
    secured: SecuredBroker, tmp_path: Path
) -> None:
    with Spool(tmp_path / "spool", "gw-fh-01", COMMUNITY, budget_bytes=2**24) as spool:
        spool.add_events([alarm()])
        uplink = Uplink(
            parse_broker_url(secured.url("gw-fh-01", "fh-secret")),
            spool,
            agent_version="test",
            ca_file=secured.ca_file,
        )
        async with acking_cloud(secured) as received:
            await run_briefly(uplink, 2.0)
        assert spool.empty
    assert [e.type for e in received[0].items] == [EventType.SMOKE_ALARM]
    assert uplink.acknowledged_batches == 1


async def test_an_acl_without_the_ack_topic_still_lets_alarms_out(
    secured: SecuredBroker, tmp_path: Path
) -> None:
    """An ACL written before acknowledgements existed: the alarm still goes out, and
    stays in the spool, since no acknowledgement can come (Mosquitto's acl_file grants
    the subscription and silently delivers nothing; a refused SUBACK is logged:
    test_uplink_acks.py)."""
    with Spool(tmp_path / "spool", "gw-fh-02", COMMUNITY, budget_bytes=2**24) as spool:
        spool.add_events([alarm()])
        uplink = Uplink(
            parse_broker_url(secured.url("gw-fh-02", "fh2-secret")),
            spool,
            agent_version="test",
            ca_file=secured.ca_file,
        )
        async with acking_cloud(secured, "gw-fh-02") as received:
            await run_briefly(uplink, 2.0)
        assert [e.type for e in received[0].items] == [EventType.SMOKE_ALARM]
        assert spool.sent_unacked[Channel.EVENTS] == 1
        assert uplink.connection_failures == 0


async def test_wrong_password_keeps_the_batch(secured: SecuredBroker, tmp_path: Path) -> None:
    with Spool(tmp_path / "spool", "gw-fh-01", COMMUNITY, budget_bytes=2**24) as spool:
        spool.add_events([alarm()])
        uplink = Uplink(
            parse_broker_url(secured.url("gw-fh-01", "not-the-password")),
            spool,
            agent_version="test",
            ca_file=secured.ca_file,
        )
        await run_briefly(uplink, 2.0)
        assert uplink.connection_failures >= 1
        assert uplink.state is not UplinkState.ONLINE
        assert spool.depth[Channel.EVENTS] == 1


async def test_untrusted_broker_certificate_is_refused(
    secured: SecuredBroker, tmp_path: Path
) -> None:
    """Without the operator's CA the broker's certificate is not trusted: no connection."""
    with Spool(tmp_path / "spool", "gw-fh-01", COMMUNITY, budget_bytes=2**24) as spool:
        spool.add_events([alarm()])
        uplink = Uplink(
            parse_broker_url(secured.url("gw-fh-01", "fh-secret")), spool, agent_version="test"
        )
        await run_briefly(uplink, 2.0)
        assert uplink.connection_failures >= 1
        assert spool.depth[Channel.EVENTS] == 1


async def test_gateway_cannot_publish_as_another(secured: SecuredBroker, tmp_path: Path) -> None:
    """Baiyun's credentials on Fenghuang's topics: the broker refuses, nothing is lost."""
    with Spool(tmp_path / "spool", "gw-fh-01", COMMUNITY, budget_bytes=2**24) as spool:
        spool.add_events([alarm()])
        uplink = Uplink(
            parse_broker_url(secured.url("gw-by-01", "by-secret")),
            spool,
            agent_version="test",
            ca_file=secured.ca_file,
        )
        await run_briefly(uplink, 2.0)
        assert uplink.refused_publishes >= 1
        assert uplink.published_batches == 0
        assert spool.depth[Channel.EVENTS] == 1


async def test_refused_credentials_are_read_again_from_the_config_file(
    secured: SecuredBroker, tmp_path: Path
) -> None:
    """A rotation: the broker refuses the old password, the installer has written the
    new one to the config file, and the running uplink picks it up with nothing lost."""
    path = tmp_path / "gateway.yaml"

    def write_config(password: str) -> None:
        document = {
            "gateway": "gw-fh-01",
            "community": COMMUNITY,
            "broker": secured.url("gw-fh-01", password),
            "tls_ca_file": str(secured.ca_file),
        }
        path.write_text(yaml.safe_dump(document))

    def relogin() -> BrokerLogin:
        config = load_config(path)
        return BrokerLogin(config.broker_address, ca_file=config.tls_ca_file)

    write_config("the-old-password")
    async with acking_cloud(secured):
        with Spool(tmp_path / "spool", "gw-fh-01", COMMUNITY, budget_bytes=2**24) as spool:
            spool.add_events([alarm()])
            uplink = Uplink(
                parse_broker_url(secured.url("gw-fh-01", "the-old-password")),
                spool,
                agent_version="test",
                ca_file=secured.ca_file,
                backoff=Backoff(initial_s=0.1, cap_s=0.5),
                relogin=relogin,
            )
            stop = asyncio.Event()
            task = asyncio.create_task(uplink.run(stop))
            try:
                await until("a refused connect", 10, lambda: uplink.connection_failures >= 1)
                assert spool.depth[Channel.EVENTS] == 1
                write_config("fh-secret")
                await until("the alarm sent with the new password", 10, lambda: spool.empty)
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=30)
            assert uplink.relogins == 1
            assert uplink.published_items == 1
