"""Cursor pagination: a page of items and an opaque cursor for the next one.

A cursor is the sort key of the last item served (key-set pagination), so pages stay
stable while rows are added and each page costs an index range scan however deep it
is. It is opaque to clients: base64url of a JSON list, decoded against the types the
route expects; anything else is a 422, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Final, Generic, NoReturn, Protocol, TypeVar, cast

from fastapi import HTTPException, Query
from pydantic import BaseModel

from cloud.api.params import EARLIEST, LATEST, MAX_ID


class _HasId(Protocol):
    @property
    def id(self) -> int | str: ...


T = TypeVar("T")
Identified = TypeVar("Identified", bound=_HasId)
Key = int | str | datetime
CURSOR_PATTERN: Final = r"^[A-Za-z0-9_-]+$"

CursorQuery = Annotated[
    str | None,
    Query(
        max_length=512,
        pattern=CURSOR_PATTERN,
        description="`next_cursor` of the previous page; absent for the first page",
    ),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; null on the last page."""


def page(items: Sequence[T], limit: int, key: Callable[[T], Sequence[Key]]) -> Page[T]:
    """The page of the first ``limit`` of ``items`` (fetch ``limit + 1`` to know whether
    there is more); the cursor holds ``key`` of its last item."""
    more = len(items) > limit
    return Page(
        items=list(items[:limit]), next_cursor=encode(key(items[limit - 1])) if more else None
    )


def id_page(items: Sequence[Identified], limit: int) -> Page[Identified]:
    """``page`` for a list ordered by id alone."""
    return page(items, limit, lambda item: (item.id,))


def encode(key: Sequence[Key]) -> str:
    values = [value.isoformat() if isinstance(value, datetime) else value for value in key]
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(cursor: str | None, *types: type[Key]) -> tuple[Key, ...] | None:
    """The key in ``cursor`` as ``types``, None without a cursor; 422 when it is not one
    this route made."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        _refuse()
    if not isinstance(values, list) or len(values) != len(types):
        _refuse()
    return tuple(_typed(value, kind) for value, kind in zip(values, types, strict=True))


def decode_id(cursor: str | None) -> int | None:
    """The id in the cursor of a list paged by id alone, None without a cursor."""
    key = decode(cursor, int)
    return None if key is None else int(cast(int, key[0]))


def _typed(value: object, kind: type[Key]) -> Key:
    if kind is int and type(value) is int and 1 <= value <= MAX_ID:
        return value
    if kind is str and isinstance(value, str) and "\x00" not in value and len(value) <= 200:
        return value
    if kind is datetime and isinstance(value, str):
        try:
            instant = datetime.fromisoformat(value)
        except ValueError:
            _refuse()
        if instant.tzinfo is not None and EARLIEST <= instant <= LATEST:
            return instant
    _refuse()


def _refuse() -> NoReturn:
    raise HTTPException(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "cursor is not one this list handed out; start again without it",
    )
