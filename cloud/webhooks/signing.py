"""Standard Webhooks signatures: ``whsec_`` secrets and the three ``webhook-*`` headers.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``, the MAC is
HMAC-SHA256 keyed with the base64-decoded part of the secret after ``whsec_``, and the
``webhook-signature`` header carries ``v1,<base64 MAC>`` once per secret, separated by
spaces, so a receiver holding either the old or the new secret of a rotation verifies.
Pure functions: no clock, no I/O (the caller passes the timestamp).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random_source
from collections.abc import Sequence
from typing import Final

from cloud.webhooks.errors import InvalidSecret

SECRET_PREFIX: Final = "whsec_"
SECRET_BYTES: Final = 32
"""Random bytes in a generated secret (the convention asks for 24 to 64)."""
MIN_SECRET_BYTES: Final = 24
MAX_SECRET_BYTES: Final = 64
SIGNATURE_VERSION: Final = "v1"

ID_HEADER: Final = "webhook-id"
TIMESTAMP_HEADER: Final = "webhook-timestamp"
SIGNATURE_HEADER: Final = "webhook-signature"


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` + base64 of 32 bytes from the OS's CSPRNG."""
    return SECRET_PREFIX + base64.b64encode(random_source.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of ``secret``; raises InvalidSecret unless it is ``whsec_`` + base64
    of 24 to 64 bytes."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret("a webhook secret is base64 after its prefix") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InvalidSecret(
            f"a webhook secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, "
            f"this one {len(key)}"
        )
    return key


def signature(secret: str, *, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``{message_id}.{timestamp}.{body}`` under ``secret``.

    Raises InvalidSecret for a malformed secret, ValueError for a message id with a
    ``.`` in it (which would make the signed content ambiguous).
    """
    if "." in message_id:
        raise ValueError(f"a webhook id may not contain '.': {message_id!r}")
    signed = b"%s.%d.%s" % (message_id.encode(), timestamp, body)
    mac = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode()}"


def signed_headers(
    secrets: Sequence[str], *, message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers.

    One signature per secret, in the order given. Raises InvalidSecret for a malformed
    secret and ValueError when there is none.
    """
    if not secrets:
        raise ValueError("a webhook is signed with at least one secret")
    signatures = " ".join(
        signature(secret, message_id=message_id, timestamp=timestamp, body=body)
        for secret in secrets
    )
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signatures,
    }
