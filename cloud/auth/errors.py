"""Errors of API keys, each carrying the key (by id or public prefix) it concerns."""

from __future__ import annotations

from cloud.errors import CloudError


class AuthError(CloudError):
    """Base of the errors of ``cloud.auth``."""


class KeyRefused(AuthError):
    """A presented key does not authenticate: malformed, unknown, revoked or expired.

    ``reason`` is safe to show the caller: it says "revoked" or "expired" only once the
    secret matched, so it discloses nothing to someone guessing keys.
    """

    def __init__(self, reason: str, *, prefix: str | None = None) -> None:
        self.reason = reason
        self.prefix = prefix
        super().__init__(f"API key {prefix or '(unparsed)'}: {reason}")


class KeyNotFound(AuthError):
    def __init__(self, key_id: int) -> None:
        self.key_id = key_id
        super().__init__(f"no API key {key_id}")


class InvalidKeyRequest(AuthError):
    """A key cannot be made or revoked as asked; ``field`` names what to change."""

    def __init__(self, message: str, *, field: str) -> None:
        self.message = message
        self.field = field
        super().__init__(f"{field}: {message}")
