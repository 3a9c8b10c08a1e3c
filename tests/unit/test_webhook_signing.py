"""Webhook signatures, checked by the reference ``standardwebhooks`` library and by
golden values computed from the convention's definition."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from cloud.webhooks.errors import InvalidSecret
from cloud.webhooks.signing import generate_secret, secret_key, signature, signed_headers

# 24 bytes 0x00..0x17, base64: the convention's minimum secret length.
FIXED_SECRET = "whsec_" + base64.b64encode(bytes(range(24))).decode()
BODY = b'{"type": "incident.opened", "data": {"incident_id": 7}}'


def test_generated_secrets_are_whsec_base64_of_32_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_")
    assert len(secret_key(first)) == 32
    assert first != second


def test_signature_is_hmac_sha256_of_id_timestamp_body_golden() -> None:
    # Written from the definition, not from the implementation under test.
    expected = base64.b64encode(
        hmac.new(bytes(range(24)), b"msg_abc.1700000000." + BODY, hashlib.sha256).digest()
    ).decode()
    got = signature(FIXED_SECRET, message_id="msg_abc", timestamp=1700000000, body=BODY)
    assert got == f"v1,{expected}"


def test_reference_library_verifies_our_headers() -> None:
    secret = generate_secret()
    headers = signed_headers([secret], message_id="msg_1", timestamp=int(time.time()), body=BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert Webhook(secret).verify(BODY, headers) == {
        "type": "incident.opened",
        "data": {"incident_id": 7},
    }


def test_rotation_signs_with_every_secret_and_either_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    headers = signed_headers([old, new], message_id="msg_2", timestamp=int(time.time()), body=BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_a_changed_body_or_id_does_not_verify() -> None:
    secret = generate_secret()
    headers = signed_headers([secret], message_id="msg_3", timestamp=int(time.time()), body=BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"7", b"8"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-id": "msg_4"})


@pytest.mark.parametrize(
    "bad",
    [
        "plainvalue",
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"x" * 23).decode(),
        "whsec_" + base64.b64encode(b"x" * 65).decode(),
    ],
)
def test_malformed_secrets_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(InvalidSecret) as caught:
        signature(bad, message_id="msg_5", timestamp=1, body=b"{}")
    assert bad not in str(caught.value)


def test_message_ids_with_dots_are_refused() -> None:
    with pytest.raises(ValueError, match="may not contain"):
        signature(FIXED_SECRET, message_id="msg.x", timestamp=1, body=b"{}")


def test_no_secret_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one secret"):
        signed_headers([], message_id="msg_6", timestamp=1, body=b"{}")
