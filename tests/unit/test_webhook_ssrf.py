"""The SSRF guard's verdicts on addresses that tunnel to IPv4 or are scoped to a site,
and how a pinned request names its host on the wire (golden values from RFC 3056
(6to4), RFC 4380 (Teredo), RFC 3879 (site-local), RFC 9110 (Host) and RFC 3492 (IDNA))."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from cloud.webhooks.ssrf import AddressPolicy, Target


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("2002:7f00:1::1", "127.0.0.1, a loopback"),
        ("2002:a00:5::", "10.0.0.5, a private"),
        ("2002:a9fe:a9fe::1", "169.254.169.254, a link-local"),
        ("fec0::1", "site-local"),
    ],
)
def test_addresses_that_lead_inward_are_refused(address: str, reason: str) -> None:
    refusal = AddressPolicy().refusal(ipaddress.ip_address(address))
    assert refusal is not None
    assert reason in refusal


def test_a_6to4_address_of_a_public_ipv4_one_is_not_refused_for_its_tunnel() -> None:
    # 2002:5db8:d822:: carries 93.184.216.34: judged by the standard library alone.
    public = ipaddress.ip_address("2002:5db8:d822::1")
    refusal = AddressPolicy().refusal(public)
    assert refusal is None or "leads to" not in refusal


def test_an_ipv6_literal_keeps_its_brackets_in_the_host_header() -> None:
    address = ipaddress.ip_address("2606:4700::1111")
    url, headers, extensions = Target(
        httpx.URL("https://[2606:4700::1111]/hook"), (address,)
    ).pinned()
    assert str(url) == "https://[2606:4700::1111]/hook"
    assert headers == {"host": "[2606:4700::1111]"}
    assert extensions == {"sni_hostname": "2606:4700::1111"}


def test_an_international_name_goes_on_the_wire_as_ascii() -> None:
    address = ipaddress.ip_address("93.184.216.34")
    target = Target(httpx.URL("https://bücher.example:8443/hook"), (address,))
    url, headers, extensions = target.pinned()
    assert str(url) == "https://93.184.216.34:8443/hook"
    assert headers == {"host": "xn--bcher-kva.example:8443"}
    assert extensions == {"sni_hostname": "xn--bcher-kva.example"}
    httpx.Request("POST", url, headers=headers)
