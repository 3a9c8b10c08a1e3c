"""Which webhook URLs may be called: the guard against server-side request forgery.

A property manager chooses the URL, and the delivery worker calls it from inside the
platform's network, so a URL naming ``127.0.0.1``, a private range, link-local cloud
metadata (``169.254.169.254``) or any other non-public address would turn webhooks
into a way to reach internal services. ``resolve`` therefore refuses:

- schemes other than ``http`` and ``https``;
- hosts that do not resolve;
- hosts with *any* address that is loopback, private, link-local, site-local,
  multicast, reserved, unspecified or otherwise not globally routable; an IPv6
  address carrying an IPv4 one (IPv4-mapped, 6to4, Teredo) is also judged by the
  IPv4 address it leads to, because a host with such a tunnel delivers there, and
  the standard library's verdict on these ranges differs between Python releases;

unless ``ANJU_WEBHOOK_ALLOW_PRIVATE`` is set, or the address lies in one of
``ANJU_WEBHOOK_ALLOWED_NETWORKS``. It runs when a subscription is created and again
before every attempt, and the attempt connects to the very address that was checked
(``Target.pinned``), so a DNS answer that changes between check and connection (DNS
rebinding) cannot slip through. Redirects are never followed, so a public endpoint
cannot bounce a delivery inward either.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import httpx

from cloud.settings import IPNetwork, WebhookSettings
from cloud.webhooks.errors import UnsafeUrl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES: Final = ("http", "https")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses webhooks may reach: public ones, plus what the operator allows."""

    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: WebhookSettings) -> AddressPolicy:
        return cls(settings.allow_private, settings.allowed_networks)

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be called, or None when it may."""
        if self.allow_private:
            return None
        judged = address
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            judged = address.ipv4_mapped
        if any(judged in network for network in self.allowed_networks):
            return None
        kind = _non_public_kind(judged)
        if kind is None and isinstance(judged, ipaddress.IPv6Address):
            for embedded in _tunnelled_ipv4(judged):
                inner = _non_public_kind(embedded)
                if inner is not None:
                    return f"{address} leads to {embedded}, a {inner} address"
        return None if kind is None else f"{address} is a {kind} address"


def _tunnelled_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo
    return ()


def _non_public_kind(address: IPAddress) -> str | None:
    # Order matters: 127.0.0.1 is both loopback and private; name the precise kind.
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "non-public"
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL and the addresses its host resolved to (empty when not resolved,
    because the policy allows every address)."""

    url: httpx.URL
    addresses: tuple[IPAddress, ...]

    def pinned(self) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
        """The URL to request, extra headers and request extensions.

        With resolved addresses the URL names the first one, the ``Host`` header keeps
        the original name and, for https, so does TLS (SNI and certificate check). The
        name goes on the wire in its ASCII form (``xn--`` labels for an international
        name, brackets round an IPv6 literal), as HTTP headers and SNI require.
        """
        if not self.addresses:
            return self.url, {}, {}
        host = self.url.raw_host.decode("ascii")
        port = self.url.port
        host_header = _bracketed(host) if port is None else f"{_bracketed(host)}:{port}"
        extensions = {"sni_hostname": host} if self.url.scheme == "https" else {}
        return (
            self.url.copy_with(host=str(self.addresses[0])),
            {"host": host_header},
            extensions,
        )


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_url(url: str) -> httpx.URL:
    """``url`` as an http(s) URL with a host; raises UnsafeUrl otherwise."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UnsafeUrl(url, f"not a URL ({exc})") from None
    if parsed.scheme not in SCHEMES:
        raise UnsafeUrl(url, f"the scheme must be http or https, not {parsed.scheme!r}")
    if not parsed.host:
        raise UnsafeUrl(url, "it names no host")
    return parsed


async def resolve(url: str, policy: AddressPolicy, *, timeout_s: float = 10.0) -> Target:
    """Check ``url`` against ``policy`` and return where to connect.

    Resolves the host (unless the policy allows every address) and raises UnsafeUrl
    naming the reason when the scheme is not http(s), the host does not resolve within
    ``timeout_s``, or any of its addresses is refused.
    """
    parsed = parse_url(url)
    if policy.allow_private:
        return Target(parsed, ())
    host = parsed.host
    try:
        addresses: Sequence[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = await _lookup(
            url, host, parsed.port or _DEFAULT_PORTS[parsed.scheme], timeout_s
        )
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            raise UnsafeUrl(url, f"{host} resolves to {reason}" if str(address) != host else reason)
    return Target(parsed, tuple(addresses))


async def _lookup(url: str, host: str, port: int, timeout_s: float) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise UnsafeUrl(url, f"{host} did not resolve within {timeout_s:g} s") from None
    except OSError as exc:
        raise UnsafeUrl(url, f"{host} does not resolve ({exc})") from None
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # IPv6 scoped addresses come back as 'fe80::1%eth0'.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise UnsafeUrl(url, f"{host} has no addresses")
    return found
