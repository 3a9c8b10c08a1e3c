"""An MQTT broker inside this process (amqtt), for machines without Mosquitto.

The zero-install demo must run where only ``pip`` works. amqtt is pure Python and
starts in milliseconds, but it speaks only MQTT 3.1.1 (a v5 CONNECT is refused)
and treats ``$share/GROUP/TOPIC`` as an ordinary topic that nobody publishes to, so
a shared subscription silently receives nothing. ``protocol_version`` and
``supports_shared_subscriptions`` say so; callers check them and fall back to
v3.1.1 and a single plain subscriber.

amqtt is in the ``demo`` extra, not a core dependency (it pins ``websockets``
exactly), so it is imported when the broker starts, not when this module loads.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Final, Self

from anju.services import ServiceError
from anju.services.ports import LOOPBACK, free_port

__all__ = ["PythonBroker"]

_SERVICE: Final = "amqtt"


class PythonBroker:
    """An anonymous amqtt broker on 127.0.0.1, running on the current event loop.

    ``async with PythonBroker() as broker: broker.url``. ``start()`` and
    ``stop()`` may be called again on the same object; the port stays the same.
    Sessions and retained messages live in memory and do not survive ``stop()``.
    """

    protocol_version: Final = "3.1.1"
    supports_shared_subscriptions: Final = False

    def __init__(
        self,
        port: int | None = None,
        *,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._port = port if port is not None else free_port()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._broker: Any = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``; stays the same across restarts."""
        return f"mqtt://{LOOPBACK}:{self._port}"

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1."""
        return self._port

    @property
    def running(self) -> bool:
        """Whether the broker is serving."""
        return self._broker is not None

    def _config(self) -> dict[str, Any]:
        return {
            # amqtt binds every interface unless told otherwise.
            "listeners": {"default": {"type": "tcp", "bind": f"{LOOPBACK}:{self._port}"}},
            # Only anonymous access: amqtt's default plugin list also logs every packet
            # and publishes $SYS topics, which costs time and says nothing we need.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }

    async def start(self) -> None:
        """Start listening; return once the port accepts connections.

        Raises ``ServiceError`` if amqtt is not installed, the port is taken, or
        start-up takes longer than ``start_timeout`` seconds.
        """
        if self._broker is not None:
            return
        try:
            from amqtt.broker import Broker
            from amqtt.errors import BrokerError
        except ImportError:
            raise ServiceError(
                "amqtt is not installed; pip install -e '.[demo]' (or run scripts/demo)",
                service=_SERVICE,
                port=self._port,
            ) from None
        broker = Broker(self._config())
        try:
            await asyncio.wait_for(broker.start(), timeout=self.start_timeout)
        except (BrokerError, TimeoutError, OSError) as exc:
            raise ServiceError(
                f"broker did not start: {exc}", service=_SERVICE, port=self._port
            ) from None
        self._broker = broker

    async def stop(self) -> None:
        """Disconnect every client and close the listener; idempotent."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        try:
            await asyncio.wait_for(broker.shutdown(), timeout=self.stop_timeout)
        except TimeoutError:
            raise ServiceError(
                f"broker did not stop in {self.stop_timeout} s", service=_SERVICE, port=self._port
            ) from None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
