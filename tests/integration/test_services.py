"""The service fixtures and starters work against the real servers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

import aiomqtt
import psycopg
import pytest

from anju.services import Broker
from anju.services.mosquitto import MosquittoServer
from anju.services.postgres import PostgresServer
from anju.services.python_broker import PythonBroker

TIMEOUT = 10.0


def _client(url: str, identifier: str, protocol: aiomqtt.ProtocolVersion) -> aiomqtt.Client:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return aiomqtt.Client(
        parts.hostname, parts.port, identifier=identifier, protocol=protocol, timeout=TIMEOUT
    )


async def _connect(url: str, identifier: str, protocol: aiomqtt.ProtocolVersion) -> None:
    """Connect and disconnect; raises ``aiomqtt.MqttError`` if the broker refuses."""
    async with asyncio.timeout(TIMEOUT), _client(url, identifier, protocol):
        pass


async def _round_trip(
    url: str, topic: str, unique_id: Callable[[str], str], protocol: aiomqtt.ProtocolVersion
) -> aiomqtt.Message:
    """Subscribe, publish one QoS 1 message from a second client, return what arrived."""
    async with asyncio.timeout(TIMEOUT):
        async with _client(url, unique_id("sub"), protocol) as subscriber:
            await subscriber.subscribe(topic, qos=1)
            async with _client(url, unique_id("pub"), protocol) as publisher:
                await publisher.publish(topic, b"hello", qos=1)
            async for message in subscriber.messages:
                return message
    raise AssertionError("the subscriber's message stream ended")


async def test_mosquitto_delivers_qos1_over_mqtt5(
    mqtt_url: str, topic_prefix: str, unique_id: Callable[[str], str]
) -> None:
    topic = f"{topic_prefix}/hello"

    message = await _round_trip(mqtt_url, topic, unique_id, aiomqtt.ProtocolVersion.V5)

    assert message.topic.value == topic
    assert message.payload == b"hello"
    assert message.qos == 1


async def test_mosquitto_restart_keeps_its_url(
    mosquitto: MosquittoServer, topic_prefix: str, unique_id: Callable[[str], str]
) -> None:
    url, first_pid = mosquitto.url, mosquitto.pid
    mosquitto.stop()
    try:
        assert mosquitto.pid is None
        with pytest.raises(aiomqtt.MqttError):
            await _connect(url, unique_id("down"), aiomqtt.ProtocolVersion.V5)
    finally:
        mosquitto.start()

    message = await _round_trip(
        mosquitto.url, f"{topic_prefix}/again", unique_id, aiomqtt.ProtocolVersion.V5
    )

    assert mosquitto.url == url
    assert mosquitto.pid not in (None, first_pid)
    assert message.payload == b"hello"


@pytest.mark.own_server
def test_postgres_round_trips_sql(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.url) as conn:
        conn.execute("CREATE TEMPORARY TABLE t (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO t VALUES (%s, %s)", (1, "安居"))
        row = conn.execute("SELECT note, current_user, current_database() FROM t").fetchone()

    assert row == ("安居", "anju", "anju")


@pytest.mark.own_server
def test_postgres_restart_keeps_url_and_data(postgres: PostgresServer, database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    url = postgres.url

    postgres.stop()
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(database_url, connect_timeout=2)
    finally:
        postgres.start()

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT n FROM kept").fetchone()
    assert postgres.url == url
    assert row == (42,)


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    return {name for (name,) in rows}


def test_template_clones_are_isolated(
    database_url: str, create_database: Callable[[], str]
) -> None:
    other_url = create_database()
    migrated = _tables(other_url)
    assert migrated, "the template has no tables: were the migrations applied?"
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TABLE only_here (n int)")

    assert database_url != other_url
    assert "public.only_here" in _tables(database_url)
    assert _tables(other_url) == migrated
    assert _tables(create_database()) == migrated


async def test_python_broker_delivers_qos1_over_mqtt311(
    topic_prefix: str, unique_id: Callable[[str], str]
) -> None:
    topic = f"{topic_prefix}/fallback"
    async with PythonBroker() as broker:
        as_broker: Broker = broker
        message = await _round_trip(broker.url, topic, unique_id, aiomqtt.ProtocolVersion.V311)
        with pytest.raises(aiomqtt.MqttError):
            await _connect(broker.url, unique_id("v5"), aiomqtt.ProtocolVersion.V5)

    assert (as_broker.protocol_version, as_broker.supports_shared_subscriptions) == ("3.1.1", False)
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    assert message.payload == b"hello"
    assert message.qos == 1


def test_mosquitto_says_it_speaks_mqtt5_with_shared_subscriptions(
    mosquitto: MosquittoServer,
) -> None:
    as_broker: Broker = mosquitto

    assert (as_broker.protocol_version, as_broker.supports_shared_subscriptions) == ("5", True)
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
