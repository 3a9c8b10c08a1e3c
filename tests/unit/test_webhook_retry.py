"""The retry schedule, its jitter, Retry-After, and the SSRF address policy."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from cloud.errors import SettingsError
from cloud.settings import STANDARD_WEBHOOKS_RETRY_SCHEDULE_S, WebhookSettings, load_settings
from cloud.webhooks.errors import UnsafeUrl
from cloud.webhooks.retry import parse_retry_after, retry_delay
from cloud.webhooks.ssrf import AddressPolicy, resolve


def _no_jitter(low: float, high: float) -> float:
    return low


def _full_jitter(low: float, high: float) -> float:
    return high


def test_default_schedule_is_the_standard_webhooks_one() -> None:
    settings = WebhookSettings()
    # Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
    assert settings.max_attempts == 10
    delays = [retry_delay(settings, attempts=n, uniform=_no_jitter) for n in range(1, 10)]
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    assert retry_delay(settings, attempts=10, uniform=_no_jitter) is None
    assert sum(STANDARD_WEBHOOKS_RETRY_SCHEDULE_S) / 3600 == pytest.approx(75 + 35 / 60 + 5 / 3600)


def test_jitter_only_stretches_up_to_its_fraction() -> None:
    settings = WebhookSettings(jitter=0.2)
    assert retry_delay(settings, attempts=2, uniform=_full_jitter) == pytest.approx(360)
    assert retry_delay(settings, attempts=2, uniform=_no_jitter) == pytest.approx(300)


def test_retry_after_wins_only_when_longer_and_is_capped() -> None:
    settings = WebhookSettings(jitter=0, max_retry_after_s=3600)
    assert retry_delay(settings, attempts=1, retry_after_s=120) == 120
    assert retry_delay(settings, attempts=1, retry_after_s=1) == 5
    assert retry_delay(settings, attempts=1, retry_after_s=10**9) == 3600
    assert retry_delay(settings, attempts=9, retry_after_s=120) == 86400


def test_retry_after_parses_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now=now) == 120
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90
    )
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now=now) == 0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after("-5", now=now) is None
    assert parse_retry_after(None) is None


def test_schedule_and_networks_come_from_the_environment() -> None:
    env = {
        "ANJU_DATABASE_URL": "postgresql://anju@127.0.0.1/anju",
        "ANJU_WEBHOOK_RETRY_SCHEDULE_S": "1, 2,3",
        "ANJU_WEBHOOK_ALLOWED_NETWORKS": "10.20.0.0/16,fd00::/8",
        "ANJU_WEBHOOK_ALLOW_PRIVATE": "0",
        "ANJU_WEBHOOK_TIMEOUT_S": "15",
    }
    webhooks = load_settings(env, require_mqtt=False).webhooks
    assert webhooks.retry_schedule_s == (1, 2, 3)
    assert webhooks.max_attempts == 4
    assert webhooks.allowed_networks == (
        ipaddress.ip_network("10.20.0.0/16"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert not webhooks.allow_private


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ANJU_WEBHOOK_RETRY_SCHEDULE_S", "5,soon"),
        ("ANJU_WEBHOOK_RETRY_SCHEDULE_S", "5,-1"),
        ("ANJU_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/33"),
        ("ANJU_WEBHOOK_ALLOW_PRIVATE", "perhaps"),
        ("ANJU_WEBHOOK_TIMEOUT_S", "0"),
    ],
)
def test_bad_webhook_settings_name_their_variable(variable: str, value: str) -> None:
    env = {"ANJU_DATABASE_URL": "postgresql://anju@127.0.0.1/anju", variable: value}
    with pytest.raises(SettingsError) as caught:
        load_settings(env, require_mqtt=False)
    assert caught.value.variable == variable


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.5", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-public"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::", "unspecified"),
    ],
)
def test_policy_refuses_non_public_addresses(address: str, kind: str) -> None:
    reason = AddressPolicy().refusal(ipaddress.ip_address(address))
    assert reason is not None
    assert kind in reason


def test_policy_allows_public_addresses_and_operator_allowances() -> None:
    policy = AddressPolicy()
    assert policy.refusal(ipaddress.ip_address("93.184.216.34")) is None
    assert policy.refusal(ipaddress.ip_address("2606:4700::1111")) is None
    allowed = AddressPolicy(allowed_networks=(ipaddress.ip_network("10.20.0.0/16"),))
    assert allowed.refusal(ipaddress.ip_address("10.20.3.4")) is None
    assert allowed.refusal(ipaddress.ip_address("10.21.3.4")) is not None
    assert AddressPolicy(allow_private=True).refusal(ipaddress.ip_address("127.0.0.1")) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "https://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/hook",
        "http://[::ffff:10.0.0.5]/hook",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "not a url",
        "http:///no-host",
    ],
)
async def test_resolve_refuses_unsafe_urls(url: str) -> None:
    with pytest.raises(UnsafeUrl) as caught:
        await resolve(url, AddressPolicy())
    assert caught.value.url == url


async def test_resolve_with_allowance_accepts_loopback_unresolved() -> None:
    target = await resolve("http://localhost:9/hook", AddressPolicy(allow_private=True))
    assert target.addresses == ()
    assert target.pinned()[0] == target.url


async def test_a_public_literal_is_pinned_with_its_name_kept() -> None:
    target = await resolve("https://93.184.216.34:8443/hook", AddressPolicy())
    url, headers, extensions = target.pinned()
    assert str(url) == "https://93.184.216.34:8443/hook"
    assert headers == {"host": "93.184.216.34:8443"}
    assert extensions == {"sni_hostname": "93.184.216.34"}
