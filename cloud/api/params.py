"""Parameter types that refuse at the API's edge what the database or Python would
choke on, so a bad request is a 422 naming the parameter, never a 500.

- ids are positive and fit PostgreSQL's ``bigint``;
- text holds no NUL character (PostgreSQL's ``text`` cannot store one);
- instants carry a time zone and lie between 1900 and 9000 UTC, so converting them
  between zones never leaves the years Python and PostgreSQL share;
- device and gateway ids have the registry's form, so a malformed one is refused
  before any lookup.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final

from fastapi import Path, Query
from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints

from schemas.wire import IDENTIFIER_PATTERN

MAX_ID: Final = 2**63 - 1
NO_NUL: Final = r"^[^\x00]*$"
WORDS: Final = r"^[^\x00]*[^\s\x00][^\x00]*$"
"""Text with something besides white space in it, and no NUL."""
EARLIEST: Final = datetime(1900, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(9000, 1, 1, tzinfo=UTC)


def _within_range(value: datetime) -> datetime:
    if not EARLIEST <= value <= LATEST:
        raise ValueError(f"must lie between {EARLIEST.isoformat()} and {LATEST.isoformat()}")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_within_range)]
"""An ISO 8601 instant with its offset (``2026-12-03T08:00:00+08:00``)."""

Text = Annotated[str, StringConstraints(pattern=NO_NUL)]
"""Free text without NUL characters."""

DbId = Annotated[int, Field(ge=1, le=MAX_ID)]

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdentifierPath = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, max_length=64)]
IdentifierQuery = Annotated[str, Query(pattern=IDENTIFIER_PATTERN, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=500, description="Items per page")]
