"""Where the MQTT broker is, as one URL both sides understand.

``mqtt://[user[:password]@]host[:port][?version=5|3.1.1]`` (``mqtts://`` for TLS, port
8883 by default). MQTT v5 is the default; ``version=3.1.1`` is for brokers without v5,
such as the in-process broker of the zero-install demo, and turns off shared
subscriptions, which need v5.
"""

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from schemas.errors import SchemaError

MqttVersion = Literal["5", "3.1.1"]


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    version: MqttVersion = "5"

    @property
    def supports_shared_subscriptions(self) -> bool:
        return self.version == "5"

    def redacted(self) -> str:
        """The URL without its password, for logs and status lines."""
        user = f"{self.username}@" if self.username else ""
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{user}{self.host}:{self.port}?version={self.version}"


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse a broker URL; raises SchemaError saying which part is wrong and the form."""
    form = "expected mqtt://[user[:password]@]host[:port][?version=5|3.1.1]"
    parts = urlsplit(url)
    shown = _without_password(url, parts.password)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise SchemaError(f"broker URL {shown!r}: {form}")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise SchemaError(f"broker URL {shown!r}: port is not a number; {form}") from None
    version = parse_qs(parts.query).get("version", ["5"])[-1]
    if version not in ("5", "3.1.1"):
        raise SchemaError(f"broker URL {shown!r}: version must be 5 or 3.1.1, not {version!r}")
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        version="5" if version == "5" else "3.1.1",
    )


def _without_password(url: str, password: str | None) -> str:
    """``url`` as an error may show it: a broker URL carries a gateway's or the admin's
    password, and errors end up in terminals, logs and CI output."""
    if not password:
        return url
    return url.replace(f":{password}@", ":***@", 1)
