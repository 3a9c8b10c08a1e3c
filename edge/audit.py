"""The command audit log on disk: a record of every command that survives a power cut.

The log is JSON lines (``commands.jsonl`` in the state directory, mode 0600), each
written, flushed and fsynced before the command goes on; ``edge/commands.py`` decides
what is written and when. It is read whole at start; when it has grown past
``rotate_lines`` lines or ``rotate_bytes`` bytes (``CommandLimits.audit_rotate_lines``
and ``audit_rotate_bytes``; and the results it still keeps fill no more than half of
that) it is rotated there: the old file becomes ``commands.jsonl.1`` (older
generations move up to ``.{generations}``, the oldest beyond that is removed, with a
warning) and the new file starts with the lines of the results still kept, so no door
unlock's record is ever dropped silently::

    {"at": "...Z", "id": "c-17", "name": "unlock_door", "device": "fh-b3-door-01",
     "args": {"seconds": 7}, "outcome": "ok", "detail": "unlocked fh-b3-door-01 for 7 s",
     "kept_until": "...Z", "result": {...the CommandResult exactly as sent...}}

``outcome`` is ``started``, ``ok``, ``failed`` (accepted, but the device, reload or scan
failed), ``refused`` (not carried out, ``detail`` says why) or ``repeat`` (an id seen
before; ``result`` is what was sent again). ``name``, ``device`` and ``kept_until`` are
null where they do not apply (a malformed payload is not kept: it has no trustworthy
id); ``result`` is null on ``started`` lines.

Errors: AuditError (an ``EdgeError``), the audit log cannot be read or written (path,
problem).
"""

import asyncio
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import msgspec

from edge.errors import EdgeError
from schemas.wire import ArgValue

log = logging.getLogger(__name__)


class AuditError(EdgeError):
    """The audit log cannot be read or written."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"command audit log {path}: {problem}")


class Outcome(StrEnum):
    STARTED = "started"
    OK = "ok"
    FAILED = "failed"
    REFUSED = "refused"
    REPEAT = "repeat"


class AuditLine(msgspec.Struct, kw_only=True, frozen=True):
    """One line of the audit log (see the module docstring)."""

    at: datetime
    id: str
    name: str | None
    device: str | None
    args: dict[str, ArgValue]
    outcome: Outcome
    detail: str
    kept_until: datetime | None
    result: msgspec.Raw


@dataclass(frozen=True, slots=True)
class StoredLine:
    """A readable line of the log with its bytes as stored, so a rotation copies it exactly."""

    line: AuditLine
    raw: bytes


@dataclass(frozen=True, slots=True)
class AuditSnapshot:
    """The log as read at start; ``line_count`` and ``size`` decide whether it is rotated."""

    lines: list[StoredLine]
    line_count: int
    size: int


_LINE_ENCODER = msgspec.json.Encoder()
_LINE_DECODER = msgspec.json.Decoder(AuditLine)


def encode_line(line: AuditLine) -> bytes:
    """The line as the log holds it, without its newline (also how a lost line is logged)."""
    return _LINE_ENCODER.encode(line)


class AuditLog:
    """The audit log file at ``path``: read at start, appended to, rotated.

    Writes go one at a time, each in a thread (an fsync can take seconds, and the event
    loop must not wait for it) and bounded by ``timeout_s``. ``rotate_lines``,
    ``rotate_bytes`` and ``generations`` are the rotation limits of the module
    docstring. Lines skipped at start as unreadable are counted in ``unreadable_lines``.
    """

    def __init__(
        self,
        path: Path,
        *,
        timeout_s: float,
        rotate_lines: int,
        rotate_bytes: int,
        generations: int,
    ) -> None:
        self._path = path
        self._timeout_s = timeout_s
        self._rotate_lines = rotate_lines
        self._rotate_bytes = rotate_bytes
        self._generations = generations
        self._lock = asyncio.Lock()
        self.unreadable_lines = 0

    def read(self) -> AuditSnapshot:
        """The log's readable lines, its folder created first; raises AuditError if it cannot.

        Unreadable lines (a line torn by a power cut) are skipped, logged and counted.
        """
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            text = self._path.read_bytes() if self._path.exists() else b""
        except OSError as exc:
            raise AuditError(self._path, f"cannot read: {exc.strerror or exc}") from None
        if text and not text.endswith(b"\n"):
            # A line torn by a power cut: end it, so the next line starts cleanly.
            self._append(b"\n")
        stored: list[StoredLine] = []
        lines = text.splitlines()
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                line = _LINE_DECODER.decode(raw)
            except msgspec.DecodeError as exc:
                self.unreadable_lines += 1
                log.warning("%s line %d skipped: %s", self._path, number, exc)
                continue
            stored.append(StoredLine(line, raw))
        return AuditSnapshot(stored, len(lines), len(text))

    def resume(
        self, snapshot: AuditSnapshot, kept: Iterable[StoredLine], added: Iterable[AuditLine]
    ) -> None:
        """Append ``added`` after a start, or rotate the log to begin with ``kept`` and ``added``.

        ``snapshot`` is what ``read`` returned; the log is rotated when it had grown past
        the limits (see the module docstring). Raises AuditError if ``added`` cannot be
        written.
        """
        new = b"".join(encode_line(line) + b"\n" for line in added)
        if snapshot.line_count > self._rotate_lines or snapshot.size > self._rotate_bytes:
            fresh = b"".join([stored.raw + b"\n" for stored in kept]) + new
            # Only when that shrinks the log by half: a log of nothing but kept results
            # would otherwise be rotated at every start, pushing real history out.
            small = (
                fresh.count(b"\n") <= self._rotate_lines // 2
                and len(fresh) <= self._rotate_bytes // 2
            )
            if not small:
                log.warning(
                    "%s has %d lines, %d bytes, but the results it still keeps fill half "
                    "the rotation limits; not rotated",
                    self._path,
                    snapshot.line_count,
                    snapshot.size,
                )
            elif self._rotate(fresh, snapshot.line_count, snapshot.size):
                return
        if new:
            self._append(new)

    async def write(self, line: AuditLine) -> None:
        """Append ``line`` and fsync it; raises AuditError if that fails or takes too long."""
        data = encode_line(line) + b"\n"
        timeout_s = self._timeout_s
        async with self._lock:
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.to_thread(self._append, data)
            except TimeoutError:
                raise AuditError(self._path, f"not written within {timeout_s:g} s") from None

    def _append(self, data: bytes) -> None:
        created = not self._path.exists()
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "ab") as audit:
                audit.write(data)
                audit.flush()
                os.fsync(audit.fileno())
            if created:
                # The new file's directory entry must reach the disk too, or a power cut
                # could lose the whole log.
                directory = os.open(self._path.parent, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
        except OSError as exc:
            raise AuditError(self._path, f"cannot write: {exc.strerror or exc}") from None

    def _rotate(self, fresh: bytes, line_count: int, size: int) -> bool:
        """Move the log to ``.1`` (older ones up a generation) and start it with ``fresh``.

        The new log is written to a temporary file and fsynced, the old one hard-linked
        to ``.1``, then the new one renamed over it and the folder fsynced: at every
        moment ``commands.jsonl`` holds either the whole old log or the whole new one.
        A crash half way leaves at worst a copy of the old log in two generations.
        Returns False, with the old log in place, if the rotation failed.
        """
        path, generations = self._path, max(1, self._generations)

        def rotated(generation: int) -> Path:
            return path.with_name(f"{path.name}.{generation}")

        temporary = path.with_name(f"{path.name}.new")
        try:
            oldest = rotated(generations)
            if oldest.exists():
                log.warning(
                    "%s: removing %s, the oldest of %d rotated audit logs",
                    path,
                    oldest,
                    generations,
                )
                oldest.unlink()
            for generation in range(generations - 1, 0, -1):
                if rotated(generation).exists():
                    rotated(generation).rename(rotated(generation + 1))
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as new:
                new.write(fresh)
                new.flush()
                os.fsync(new.fileno())
            os.link(path, rotated(1))
            temporary.replace(path)
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            # The log still holds everything (the old log is only ever replaced whole);
            # a log that cannot be rotated must not stop the gateway from starting.
            log.error("%s: cannot rotate: %s; it keeps growing", path, exc.strerror or exc)
            return False
        log.info(
            "%s rotated to %s (%d lines, %d bytes); the new log starts with %d kept results",
            path,
            rotated(1),
            line_count,
            size,
            fresh.count(b"\n"),
        )
        return True
