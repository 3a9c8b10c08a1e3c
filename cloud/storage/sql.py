"""Named SQL queries kept in ``cloud/storage/queries/*.sql``.

A file holds blocks that each start with a ``-- name: some_name`` line, followed by
optional ``--`` comment lines (the query's documentation) and the statement. Files
are read once, on first use, and a query is looked up by name; a duplicate name is an
error at load time rather than a silent override.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable

_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$")


@dataclass(frozen=True, slots=True)
class Query:
    """One named statement, with the file it came from for error messages."""

    name: str
    text: str
    source: str


class Queries(Mapping[str, str]):
    """Read-only mapping of query name to SQL text.

    ``queries["name"]`` raises KeyError naming the directory when there is no such
    query, which is always a programming error.
    """

    def __init__(self, entries: Mapping[str, Query]) -> None:
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> str:
        try:
            return self._entries[name].text
        except KeyError:
            raise KeyError(f"no query named {name!r} in cloud/storage/queries/*.sql") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def parse_queries(text: str, *, source: str) -> list[Query]:
    """Split one ``.sql`` file into its named queries; raises ValueError for a bad file."""
    found: list[Query] = []
    name: str | None = None
    body: list[str] = []

    def close() -> None:
        if name is None:
            if any(line.strip() and not line.lstrip().startswith("--") for line in body):
                raise ValueError(f"{source}: SQL before the first '-- name:' line")
            return
        statement = "\n".join(
            line for line in body if line.strip() and not line.lstrip().startswith("--")
        ).strip()
        if not statement:
            raise ValueError(f"{source}: query {name!r} has no SQL")
        found.append(Query(name, statement, source))

    for line in text.splitlines():
        match = _NAME_LINE.match(line.strip())
        if match:
            close()
            name, body = match.group(1), []
        else:
            body.append(line)
    close()
    return found


def load_queries(directory: Traversable) -> Queries:
    """Every named query of every ``*.sql`` file in ``directory``.

    Raises ValueError for a duplicate name (naming both files) or a malformed file.
    """
    entries: dict[str, Query] = {}
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".sql"):
            continue
        for query in parse_queries(path.read_text(encoding="utf-8"), source=path.name):
            if query.name in entries:
                first = entries[query.name].source
                raise ValueError(f"query {query.name!r} is defined in {first} and {query.source}")
            entries[query.name] = query
    return Queries(entries)


@cache
def queries() -> Queries:
    """The cloud tier's queries, read from the package on first call and kept."""
    return load_queries(files("cloud.storage").joinpath("queries"))
