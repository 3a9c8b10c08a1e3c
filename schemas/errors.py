"""Errors raised by the schema package.

SchemaError
├── WireError      a payload or topic that does not match the wire contract
│   └── SchemaVersionMismatch   a payload of another schema version
└── ProfileError   a device profile file that does not match the profile schema
"""

from pathlib import Path


class SchemaError(ValueError):
    """Base of every error raised here; a ValueError so callers can treat it as bad input."""


class WireError(SchemaError):
    """A payload or topic that breaks the wire contract.

    Carries the topic (when known) and the start of the offending payload, so a
    quarantine row or a log line can show what arrived.
    """

    PAYLOAD_EXCERPT = 200

    def __init__(self, message: str, *, topic: str | None = None, payload: bytes = b"") -> None:
        self.reason = message
        self.topic = topic
        self.payload = payload
        where = f" on {topic}" if topic else ""
        super().__init__(f"{message}{where}")

    @property
    def excerpt(self) -> str:
        return self.payload[: self.PAYLOAD_EXCERPT].decode("utf-8", errors="replace")


class SchemaVersionMismatch(WireError):
    """A payload written for another version of the wire contract.

    Said apart from other wire errors because the cure is an upgrade, not a fix of the
    payload: the message says which side reads which version.
    """

    def __init__(
        self, found: object, expected: int, *, topic: str | None = None, payload: bytes = b""
    ) -> None:
        self.found = found
        self.expected = expected
        super().__init__(
            f"schema_version {found!r}, this side reads {expected}: upgrade the gateway agent "
            "or the cloud so both speak one version",
            topic=topic,
            payload=payload,
        )


class ProfileError(SchemaError):
    """A device profile file that cannot be used, naming the file, the field and the fault."""

    def __init__(self, path: Path | str, field: str, problem: str) -> None:
        self.path = Path(path)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.path}: {field}: {problem}")
