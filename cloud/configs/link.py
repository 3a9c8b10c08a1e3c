"""The config pusher's broker connection: the only module of ``cloud.configs`` that
imports aiomqtt, and where its errors become ``ConfigLinkLost``.

A clean session, acknowledged on receipt (aiomqtt's default), unlike ingest's
persistent one acknowledged after commit. Nothing this connection can lose needs
keeping. Statuses are retained, and a gateway publishes a fresh one after every apply,
so each gateway's current version comes again with every new subscription. A command
result missed while the link was down, or received but not recorded, is recovered by
the next push of that version: a new attempt gets a fresh answer ("already runs
version N" when it had been applied, the same refusal when it was refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from cloud.configs.errors import ConfigLinkLost
from schemas.broker import BrokerAddress

_T = TypeVar("_T")

TIMEOUT_S: Final = 10.0
"""Longest a connect, subscribe or publish (until its PUBACK) may take."""


class ConfigLink:
    """One connection as ``client_id``; an async context manager (connects on entry).

    Every method raises ConfigLinkLost when the broker cannot be reached, refuses the
    connection or a subscription, or does not answer within ``TIMEOUT_S``.
    """

    def __init__(
        self, broker: BrokerAddress, *, client_id: str, ca_file: Path | None = None
    ) -> None:
        self._broker = broker
        self.client_id = client_id
        v5 = broker.version == "5"
        self._client = aiomqtt.Client(
            broker.host,
            broker.port,
            username=broker.username,
            password=broker.password,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else True,
            tls_context=ssl.create_default_context(cafile=ca_file) if broker.tls else None,
            timeout=TIMEOUT_S,
        )

    async def __aenter__(self) -> Self:
        try:
            await self._client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise self._lost("connecting", exc) from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self._client.__aexit__(exc_type, exc, traceback)
        except aiomqtt.MqttError as failed:
            # Leaving a connection that already failed: the first failure is the news.
            if exc is None:
                raise self._lost("disconnecting", failed) from None

    async def subscribe(self, topics: Sequence[str]) -> None:
        """Subscribe to ``topics`` at QoS 1; a refused one raises ConfigLinkLost naming it."""
        for topic in topics:
            try:
                granted = await _to_the_end(self._client.subscribe(topic, qos=1, timeout=TIMEOUT_S))
            except aiomqtt.MqttError as exc:
                raise self._lost(f"subscribing to {topic}", exc) from None
            for code in granted:
                refused = code.is_failure if isinstance(code, ReasonCode) else code == 0x80
                if refused:
                    raise self._lost(f"subscribing to {topic}", f"refused: {code}")

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK.

        aiomqtt does not pass the PUBACK's reason code on, so a publish the broker's
        ACL refuses (MQTT v5 reason 135) looks delivered here; the gateway then never
        answers and the version is pushed again on the retry schedule.
        """
        try:
            await self._client.publish(topic, payload, qos=1, timeout=TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            raise self._lost(f"publishing on {topic}", exc) from None

    async def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        """(topic, payload) of each message of the subscriptions, until the link fails."""
        try:
            async for message in self._client.messages:
                payload = message.payload
                data = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
                yield message.topic.value, data
        except aiomqtt.MqttError as exc:
            raise self._lost("receiving", exc) from None

    def _lost(self, doing: str, reason: object) -> ConfigLinkLost:
        return ConfigLinkLost(self._broker.redacted(), doing, str(reason))


async def _to_the_end(subscribing: Coroutine[Any, Any, _T]) -> _T:
    """Await ``subscribing`` even when the caller is cancelled meanwhile, then re-raise
    the cancellation.

    aiomqtt 2.5 forgets a subscribe whose caller is cancelled; the broker's SUBACK then
    arrives for an id it no longer knows and it logs that with a traceback (seen when
    ``anju cloud run`` stops because its API port is taken). The wait is bounded by the
    subscribe's own timeout.
    """
    task = asyncio.ensure_future(subscribing)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise
