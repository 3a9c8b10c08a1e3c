"""The gateway's durable spool: sealed batches on disk until the cloud acknowledges them.

What it guarantees (docs/design.md section 8):

- An item is on disk before it can be sent: every ``add_events``/``add_readings`` call is
  one SQLite transaction, committed before the call returns, and only committed items
  are ever sealed and handed out.
- A batch is sealed once (header, ``batch_seq``, bytes) and resent byte for byte until
  the cloud acknowledges it, across reconnects and restarts, so the cloud can drop a
  repeat by its (gateway, ``spool_epoch``, ``batch_seq``). ``spool_epoch`` is made once
  with the file; ``batch_seq`` and each device's last ``seq`` continue after a restart.
- A broker's PUBACK does not delete a batch, it only marks it *sent* (``sent``): a
  broker can PUBACK and then lose a message (a restart that drops a shared
  subscription's queue, a worker that dies holding it). Only the cloud's
  acknowledgement, published after its commit, deletes a batch (``acknowledge``). A
  sent batch with no acknowledgement goes again, byte for byte, ``ack_timeout_s`` after
  its first PUBACK, then after twice that, and so on up to ``ack_timeout_cap_s``.
- Events are never dropped and always go out before telemetry. Past the disk budget the
  oldest telemetry is dropped, counted (``dropped_readings``) and reported upstream as
  ``telemetry.gap`` events. What was dropped is recorded per device in the ``gap`` table
  in the same transaction as the deletion, and sealed as one event per device once the
  budget is met again, or at most every ``_GAP_REPORT_INTERVAL_S`` while it cannot be
  (events, and batches in flight or sent, are never evicted, so they alone can fill
  the budget): one gap report per device per interval, not one per add.
- Every failure to read or write the file is raised as SpoolError naming the file,
  whatever raised it underneath (SQLite, a full disk, the ``seq_source``).
- The file, its write-ahead log and shared-memory file are readable by the owner only
  (0o600), and a state folder the spool creates is 0o700.

A sealed batch is in one of three states:

- *unsent* (no row in ``sent``): handed out once per connection by ``take``; a batch
  handed out and not PUBACKed before the connection ended goes again at once after
  ``rewind``;
- *sent* (a row in ``sent``: ``attempts`` PUBACKs so far, ``resend_at`` in wall-clock
  seconds): handed out again once ``resend_at`` has passed, events first; ``rewind``
  leaves it alone, and a restart keeps it, so a reconnect does not resend what the
  cloud may be committing;
- gone: deleted by the cloud's acknowledgement (stored, duplicate or refused alike).

The sent state is its own small table, not columns of ``sealed``: SQLite rewrites a
whole row to update one column, and a telemetry batch is a few hundred kilobytes.

Storage: SQLite in WAL mode with ``synchronous=FULL`` by default, so a committed add
survives both ``kill -9`` and power loss (the WAL is fsynced at every commit);
``synchronous=NORMAL`` survives ``kill -9`` but may lose the last commits on power loss.
Measured with ``scripts/bench.py edge-spool`` (2-core VM, virtio disk, 30 readings per
add): FULL about 144,000 readings/s (4,800 commits/s), NORMAL about 245,000; a gateway
produces a few thousand, so FULL costs nothing that matters and is the default.

Unsealed readings are one row each in ``pending``; events are sealed at once (alarms
never linger); readings are sealed when ``max_batch_items`` have gathered or the oldest
has lingered ``linger_s``.

The budget counts the database's used pages (the write-ahead log stays near 4 MB on
top, copies of some of those pages between checkpoints), sent but unacknowledged
batches included: they are on disk until the cloud says otherwise. The oldest unsent
telemetry batches not in flight go first (they hold the oldest readings, and dropping
whole batches never rewrites a sealed batch), then the oldest unsealed readings. Sent
batches are never dropped: the cloud has most likely stored them (an acknowledgement
lost in an outage), and reporting their readings as a gap would report a loss that
did not happen. A cloud that never acknowledges (another wire version, counted by the
uplink) therefore fills the budget with sent batches, and new telemetry is dropped
and reported until it does.

Format 2 added the ``sent`` table; a format 1 file is upgraded in place at
open: its batches are all unsent (format 1 deleted a batch at its PUBACK), and their
payloads, sealed as ``schema_version`` 1, are restamped 2 (the first bytes of the
payload, nothing else), since a cloud reading version 2 would refuse them otherwise.
"""

import asyncio
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from edge.errors import EdgeError
from schemas import SCHEMA_VERSION
from schemas.topics import Channel
from schemas.vocabulary import EVENT_SEVERITY, EventType
from schemas.wire import (
    Event,
    EventBatch,
    EventData,
    Reading,
    TelemetryBatch,
    decode,
    encode,
)

log = logging.getLogger(__name__)

FORMAT = 2
"""Layout version of the spool file; format 1 is upgraded at open, any other refused."""

ACK_TIMEOUT_S = 30.0
"""How long a sent batch waits for the cloud's acknowledgement before it goes again."""
ACK_TIMEOUT_CAP_S = 600.0
"""The longest wait between resends of one batch (the timeout doubles up to it)."""

Synchronous = Literal["FULL", "NORMAL"]

_MAX_EVENTS_PER_BATCH = 10_000
_BUDGET_TARGET = 0.9
"""Past the budget, drop down to this share of it, so drops come in steps, not per add."""
_WAL_LIMIT_BYTES = 4 * 1024 * 1024
_LANES = (Channel.EVENTS, Channel.TELEMETRY)
_GAP_REPORT_INTERVAL_S = 60.0
"""While the budget cannot be met, open gap reports are sealed at most this often."""
_FILE_MODE = 0o600
_DIR_MODE = 0o700

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE device_seq (device TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE pending (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    appended REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE sealed (
    batch_seq INTEGER PRIMARY KEY,
    lane TEXT NOT NULL,
    items INTEGER NOT NULL,
    appended REAL NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX sealed_lane ON sealed (lane, batch_seq);
"""
_SENT_SCHEMA = (
    """CREATE TABLE sent (
    batch_seq INTEGER PRIMARY KEY,
    lane TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    resend_at REAL NOT NULL
)""",
    "CREATE INDEX sent_due ON sent (lane, resend_at, batch_seq)",
)
"""Sealed batches the broker PUBACKed (format 2; a format 1 file gets it empty: every
batch in it is unsent)."""
_VERSION_1_PREFIX = b'{"schema_version":1,'
"""How every batch sealed by a format 1 spool begins (encode writes fields in order)."""
_CURRENT_PREFIX = f'{{"schema_version":{SCHEMA_VERSION},'.encode()
_GAP_SCHEMA = """
CREATE TABLE IF NOT EXISTS gap (
    device TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    first_ts TEXT NOT NULL,
    last_ts TEXT NOT NULL
) WITHOUT ROWID
"""
"""Dropped readings not reported yet, per device (added to format 1 files at open)."""


class SpoolError(EdgeError):
    """The spool file cannot be opened or written; names the file and what went wrong."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"spool {path}: {problem}")


@dataclass(frozen=True, slots=True)
class SealedBatch:
    """One sealed batch: the exact bytes to publish on ``channel``'s topic."""

    channel: Channel
    batch_seq: int
    payload: bytes
    items: int
    attempts: int = 0
    """PUBACKs it had before this hand-out: more than 0 for a resend."""


class Spool:
    """Seals items into batches on disk and hands them out events first.

    ``take`` hands each unsent batch out once per connection (so several can be in
    flight at once), and each sent batch again once its ``resend_at`` has passed;
    ``sent`` records a batch's PUBACK, in any order; ``acknowledge`` deletes what the
    cloud acknowledged; ``rewind`` makes every unsent batch available again (call it at
    each new connection). The spool is used from one thread (the agent's event loop);
    its calls block for one SQLite commit, well under a millisecond on an SSD.

    Raises SpoolError, naming the file, for a file that is not a spool, belongs to
    another gateway, or cannot be written.
    """

    def __init__(
        self,
        path: Path,
        gateway: str,
        community: str,
        *,
        budget_bytes: int,
        linger_s: float = 0.5,
        max_batch_items: int = 2000,
        synchronous: Synchronous = "FULL",
        seq_source: Callable[[str], int | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        ack_timeout_cap_s: float = ACK_TIMEOUT_CAP_S,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Open the spool at ``path``, creating it (and its folder) if missing.

        ``seq_source(device)`` claims the next ``seq`` of a device for a
        ``telemetry.gap`` event; the agent passes its normalisers' counter so gap
        events and readings share one sequence. Without it, or when it returns None
        (a device no longer configured, still in the spool), the spool numbers the gap
        event from the last seq it stored, which is right because nothing else numbers
        that device any more.

        ``wall_clock`` dates resends (``resend_at`` survives a restart, so it is wall
        time, not ``clock``'s monotonic time).
        """
        if not 0 < ack_timeout_s <= ack_timeout_cap_s:
            raise ValueError(
                f"need 0 < ack_timeout_s <= ack_timeout_cap_s, not {ack_timeout_s} and "
                f"{ack_timeout_cap_s}"
            )
        self.path = path
        self.gateway = gateway
        self.community = community
        self.budget_bytes = budget_bytes
        self._linger_s = linger_s
        self._max_items = max_batch_items
        self._seq_source = seq_source
        self._clock = clock
        self._wall_clock = wall_clock
        self._ack_timeout_s = ack_timeout_s
        self._ack_timeout_cap_s = ack_timeout_cap_s
        self._changed = asyncio.Event()
        self._cursor = dict.fromkeys(_LANES, -1)
        """Per lane, the highest unsent batch handed out on this connection."""
        self._in_flight: set[int] = set()
        """Batches handed out on this connection and not PUBACKed yet: never evicted,
        never handed out twice on one connection."""
        self._db = self._connect(synchronous)
        self._marks: sqlite3.Connection
        """A second connection, ``synchronous=NORMAL``, for ``sent`` alone: in WAL mode
        its commits are not fsynced, the next commit of ``_db`` (an add, an
        acknowledgement) fsyncs them along with its own. A sent mark lost to a power
        cut only makes that batch go again at once, which the cloud absorbs, and an
        fsync per PUBACK halved the drain rate (``scripts/bench.py edge-spool``)."""
        self.spool_epoch = ""
        self._next_batch_seq = 0
        self._dropped = 0
        self._last_seq: dict[str, int] = {}
        self._depth = dict.fromkeys(_LANES, 0)
        self._pending = 0
        self._pending_since = 0.0
        self._open_gaps = 0
        self._gaps_sealed_at = clock()
        self._stale = False
        self._budget_stuck = False
        self._budget_failing = False
        try:
            self._load()
            self._marks = self._connect("NORMAL")
        except BaseException:
            self._db.close()
            raise

    def _connect(self, synchronous: Synchronous) -> sqlite3.Connection:
        try:
            folder = self.path.parent
            if not folder.exists():
                folder.mkdir(parents=True, mode=_DIR_MODE)
                folder.chmod(_DIR_MODE)  # mkdir's mode is masked by the umask
            # Made owner-only before SQLite opens it: SQLite gives the -wal and -shm files
            # the database file's permissions.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, _FILE_MODE))
            db = sqlite3.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(self.path, f"cannot open: {exc}") from None
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise SpoolError(self.path, f"cannot switch to WAL mode (got {mode})")
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
            self._restrict_files()
        except sqlite3.DatabaseError as exc:
            db.close()
            raise SpoolError(
                self.path, f"not a usable spool file ({exc}); move it aside to start a new one"
            ) from None
        except (OSError, SpoolError) as exc:
            db.close()
            if isinstance(exc, SpoolError):
                raise
            raise SpoolError(self.path, f"cannot restrict its permissions: {exc}") from None
        return db

    def _restrict_files(self) -> None:
        """Owner-only permissions also for a file made by an older agent or another umask."""
        for suffix in ("", "-wal", "-shm"):
            name = self.path.with_name(self.path.name + suffix)
            try:
                if name.stat().st_mode & 0o777 != _FILE_MODE:
                    name.chmod(_FILE_MODE)
            except FileNotFoundError:
                continue

    def _load(self) -> None:
        try:
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master")}
            if not tables:
                self._create()
            elif not {"meta", "device_seq", "pending", "sealed"} <= tables:
                raise SpoolError(
                    self.path, "an SQLite file but not a spool; move it aside or pick another path"
                )
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            self._db.execute("SELECT count(*) FROM sealed").fetchone()
        except sqlite3.DatabaseError as exc:
            raise SpoolError(
                self.path, f"not a usable spool file ({exc}); move it aside to start a new one"
            ) from None
        if meta.get("format") not in ("1", str(FORMAT)):
            raise SpoolError(
                self.path, f"spool format {meta.get('format')!r}, this agent reads 1 and {FORMAT}"
            )
        if meta.get("gateway") != self.gateway:
            raise SpoolError(
                self.path,
                f"belongs to gateway {meta.get('gateway')!r}, not {self.gateway!r}; "
                "each gateway needs its own state_dir",
            )
        if "gap" not in tables:
            with self._write() as db:
                db.execute(_GAP_SCHEMA)
        if meta["format"] == "1":
            self._upgrade_from_1()
        self.spool_epoch = meta["spool_epoch"]
        self._reload_counters()

    def _upgrade_from_1(self) -> None:
        """Add the sent state and restamp version 1 batches as 2, in one transaction."""
        with self._write() as db:
            for statement in _SENT_SCHEMA:
                db.execute(statement)
            restamped = db.execute(
                "UPDATE sealed SET payload = CAST(? || substr(payload, ?) AS BLOB)"
                " WHERE substr(payload, 1, ?) = ?",
                (
                    _CURRENT_PREFIX,
                    len(_VERSION_1_PREFIX) + 1,
                    len(_VERSION_1_PREFIX),
                    _VERSION_1_PREFIX,
                ),
            ).rowcount
            db.execute("UPDATE meta SET value = ? WHERE key = 'format'", (str(FORMAT),))
        log.info(
            "spool %s: upgraded from format 1 to %d (%d batches restamped as schema_version %d)",
            self.path,
            FORMAT,
            restamped,
            SCHEMA_VERSION,
        )

    def _create(self) -> None:
        meta = {
            "format": str(FORMAT),
            "gateway": self.gateway,
            "spool_epoch": secrets.token_hex(8),
            "next_batch_seq": "0",
            "dropped_readings": "0",
        }
        with self._write() as db:
            for statement in (*filter(str.strip, _SCHEMA.split(";")), *_SENT_SCHEMA):
                db.execute(statement)
            db.execute(_GAP_SCHEMA)
            db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())

    def _reload_counters(self) -> None:
        """Read every in-memory figure back from disk (at open and after a failed write)."""
        db = self._db
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self._next_batch_seq = int(meta["next_batch_seq"])
        self._dropped = int(meta["dropped_readings"])
        self._last_seq = dict(db.execute("SELECT device, seq FROM device_seq").fetchall())
        self._depth = dict.fromkeys(_LANES, 0)
        for lane, count in db.execute("SELECT lane, count(*) FROM sealed GROUP BY lane"):
            self._depth[Channel(lane)] = count
        self._pending = db.execute("SELECT count(*) FROM pending").fetchone()[0]
        self._open_gaps = db.execute("SELECT count(*) FROM gap").fetchone()[0]
        # Readings left unsealed by the last run have lingered long enough already.
        self._pending_since = self._clock() - self._linger_s
        self._stale = False

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction; on any failure it is rolled back and counters reread.

        Whatever fails in it (SQLite, the disk, a ``seq_source``, or the rollback and the
        rereading themselves) is raised as SpoolError naming the file. Cancellation and
        other BaseExceptions still roll back, and are raised as they are.
        """
        db = self._db
        try:
            if self._stale:
                # The last failure could not even reread the counters: do it first.
                self._reload_counters()
            if not db.in_transaction:
                db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            cleanup = self._recover(db)
            if not isinstance(exc, Exception):
                raise
            problem = f"write failed: {type(exc).__name__}: {exc}"
            if cleanup:
                problem += f" (then {cleanup})"
            raise SpoolError(self.path, problem) from exc

    def _recover(self, db: sqlite3.Connection) -> str:
        """Roll back and reread the counters after a failed write; what failed, or ''."""
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except Exception as exc:  # reported in the SpoolError raised
            self._stale = True
            return f"rollback failed: {type(exc).__name__}: {exc}"
        if not self.spool_epoch:
            return ""
        try:
            self._reload_counters()
        except Exception as exc:  # reported in the SpoolError raised
            self._stale = True
            return f"rereading the counters failed: {type(exc).__name__}: {exc}"
        return ""

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """A read outside a write: any SQLite error is raised as SpoolError."""
        try:
            yield
        except sqlite3.Error as exc:
            raise SpoolError(self.path, f"{what} failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Close the file. Nothing is lost: every add was committed when it returned."""
        self._marks.close()
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def depth(self) -> dict[Channel, int]:
        """Sealed batches not acknowledged per lane, sent, in flight or neither
        (lingering readings not counted)."""
        return dict(self._depth)

    @property
    def sent_unacked(self) -> dict[Channel, int]:
        """Batches per lane the broker has PUBACKed and the cloud not acknowledged yet."""
        counts = dict.fromkeys(_LANES, 0)
        with self._reading("counting sent batches"):
            for lane, count in self._db.execute("SELECT lane, count(*) FROM sent GROUP BY lane"):
                counts[Channel(lane)] = count
        return counts

    @property
    def empty(self) -> bool:
        return not self._pending and not any(self._depth.values())

    @property
    def pending_readings(self) -> int:
        """Readings on disk that are not sealed into a batch yet."""
        return self._pending

    @property
    def dropped_readings(self) -> int:
        """Readings dropped for the disk budget over the life of this spool file."""
        return self._dropped

    @property
    def oldest_unsent_age_s(self) -> float | None:
        """Seconds since the oldest item still in the spool (not acknowledged by the
        cloud) was added, or None if empty."""
        with self._reading("reading the oldest item's age"):
            row = self._db.execute(
                "SELECT min(t) FROM (SELECT min(appended) AS t FROM sealed UNION ALL"
                " SELECT appended FROM (SELECT appended FROM pending ORDER BY id LIMIT 1))"
            ).fetchone()
        return None if row[0] is None else max(0.0, time.time() - row[0])

    def last_seq(self, device_id: str) -> int:
        """The highest ``seq`` stored for ``device_id`` (0 if none): seed its normaliser."""
        return self._last_seq.get(device_id, 0)

    def size_bytes(self) -> int:
        """What the budget is checked against: the database's used pages.

        The write-ahead log only holds copies of pages already counted here, and is
        kept near 4 MB by SQLite's automatic checkpoints and ``journal_size_limit``.
        """
        db = self._db
        with self._reading("reading its size"):
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * page_size)

    def _record_seqs(self, db: sqlite3.Connection, items: Iterable[Reading | Event]) -> None:
        highest: dict[str, int] = {}
        for item in items:
            if item.seq > highest.get(item.device, -1):
                highest[item.device] = item.seq
        db.executemany(
            "INSERT INTO device_seq (device, seq) VALUES (?, ?) ON CONFLICT (device)"
            " DO UPDATE SET seq = max(seq, excluded.seq)",
            highest.items(),
        )
        for device, seq in highest.items():
            if seq > self._last_seq.get(device, -1):
                self._last_seq[device] = seq

    def _claim_batch_seq(self, db: sqlite3.Connection) -> int:
        seq = self._next_batch_seq
        self._next_batch_seq += 1
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'next_batch_seq'", (str(self._next_batch_seq),)
        )
        return seq

    def _store(
        self, db: sqlite3.Connection, channel: Channel, batch_seq: int, payload: bytes, items: int
    ) -> None:
        db.execute(
            "INSERT INTO sealed (batch_seq, lane, items, appended, payload) VALUES (?, ?, ?, ?, ?)",
            (batch_seq, str(channel), items, time.time(), payload),
        )
        self._depth[channel] += 1

    def _seal_events(self, db: sqlite3.Connection, events: list[Event]) -> None:
        for start in range(0, len(events), _MAX_EVENTS_PER_BATCH):
            chunk = events[start : start + _MAX_EVENTS_PER_BATCH]
            batch = EventBatch(
                gateway=self.gateway,
                community=self.community,
                spool_epoch=self.spool_epoch,
                batch_seq=self._claim_batch_seq(db),
                sent_at=datetime.now(UTC),
                items=chunk,
            )
            self._store(db, Channel.EVENTS, batch.batch_seq, encode(batch), len(chunk))

    def add_events(self, events: list[Event]) -> None:
        """Seal ``events`` into a batch and commit it before returning: alarms never linger.

        May drop the oldest telemetry afterwards if the spool is past its budget. Raises
        SpoolError only if the events were not stored.
        """
        if not events:
            return
        with self._write() as db:
            self._record_seqs(db, events)
            self._seal_events(db, events)
        self._changed.set()
        self._keep_budget()

    def add_readings(self, readings: list[Reading]) -> None:
        """Commit ``readings`` to disk before returning; they are sealed when a batch is
        full (in this same transaction) or has lingered ``linger_s``.

        May drop the oldest telemetry afterwards if the spool is past its budget. Raises
        SpoolError only if the readings were not stored.
        """
        if not readings:
            return
        now = time.time()
        with self._write() as db:
            db.executemany(
                "INSERT INTO pending (device, appended, body) VALUES (?, ?, ?)",
                [(reading.device, now, encode(reading)) for reading in readings],
            )
            self._record_seqs(db, readings)
            if not self._pending:
                self._pending_since = self._clock()
            self._pending += len(readings)
            while self._pending >= self._max_items:
                self._seal_readings(db)
        self._changed.set()
        self._keep_budget()

    def _seal_readings(self, db: sqlite3.Connection) -> None:
        rows = db.execute(
            "SELECT id, body FROM pending ORDER BY id LIMIT ?", (self._max_items,)
        ).fetchall()
        header = encode(
            TelemetryBatch(
                gateway=self.gateway,
                community=self.community,
                spool_epoch=self.spool_epoch,
                batch_seq=self._claim_batch_seq(db),
                sent_at=datetime.now(UTC),
                items=[],
            )
        )
        # Items are stored already encoded; splicing them into the header's empty list
        # gives exactly the bytes encoding the whole batch would (tested), at a fraction
        # of the cost.
        payload = b"".join((header[:-2], b",".join(row[1] for row in rows), b"]}"))
        batch_seq = self._next_batch_seq - 1
        self._store(db, Channel.TELEMETRY, batch_seq, payload, len(rows))
        db.execute("DELETE FROM pending WHERE id <= ?", (rows[-1][0],))
        self._pending -= len(rows)
        self._pending_since = self._clock()

    def flush(self) -> None:
        """Seal lingering readings now (at linger time and at shutdown)."""
        if self._pending:
            with self._write() as db:
                while self._pending:
                    self._seal_readings(db)
            self._changed.set()

    def take_nowait(self) -> SealedBatch | None:
        """The next batch to publish, or None: per lane, events first, a sent batch past
        its ``resend_at`` (oldest due first), then an unsent batch not handed out on this
        connection."""
        if self._pending and self._clock() - self._pending_since >= self._linger_s:
            self.flush()
        now = self._wall_clock()
        for lane in _LANES:
            if not self._depth[lane]:
                continue
            with self._reading("reading the next batch"):
                due = self._db.execute(
                    "SELECT batch_seq, attempts FROM sent WHERE lane = ? AND resend_at <= ?"
                    " ORDER BY resend_at, batch_seq LIMIT ?",
                    (str(lane), now, len(self._in_flight) + 1),
                ).fetchall()
                again = next((row for row in due if row[0] not in self._in_flight), None)
                if again is not None:
                    batch_seq, attempts = again
                    items, payload = self._db.execute(
                        "SELECT items, payload FROM sealed WHERE batch_seq = ?", (batch_seq,)
                    ).fetchone()
                    row = (batch_seq, items, payload, attempts)
                else:
                    row = self._db.execute(
                        "SELECT batch_seq, items, payload, 0 FROM sealed"
                        " WHERE lane = ? AND batch_seq > ?"
                        " AND NOT EXISTS"
                        " (SELECT 1 FROM sent WHERE sent.batch_seq = sealed.batch_seq)"
                        " ORDER BY batch_seq LIMIT 1",
                        (str(lane), self._cursor[lane]),
                    ).fetchone()
                    if row is not None:
                        self._cursor[lane] = row[0]
            if row is not None:
                self._in_flight.add(row[0])
                return SealedBatch(lane, row[0], row[2], row[1], row[3])
        return None

    async def take(self, *, max_wait_s: float = 1.0) -> SealedBatch:
        """The next batch to publish (see ``take_nowait``); waits for one.

        Wakes when a batch is sealed, when readings have lingered long enough and when
        the next sent batch falls due, and at least every ``max_wait_s`` to recheck, so
        a missed wake-up costs at most that long.
        """
        while True:
            batch = self.take_nowait()
            if batch is not None:
                return batch
            self._changed.clear()
            wait = max_wait_s
            if self._pending:
                wait = min(wait, self._linger_s - (self._clock() - self._pending_since))
            due = self._next_resend_at()
            if due is not None:
                wait = min(wait, due - self._wall_clock())
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=max(wait, 0.0))
            except TimeoutError:
                continue

    def _next_resend_at(self) -> float | None:
        """When the next sent batch falls due; only called when none is due now but
        those in flight (which are never handed out twice)."""
        with self._reading("reading the next resend time"):
            row = self._db.execute(
                "SELECT min(resend_at) FROM sent WHERE resend_at > ?", (self._wall_clock(),)
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def rewind(self) -> None:
        """At a new connection: every unsent batch can be handed out again, at once,
        oldest first, and so can every sent batch that is due. Sent batches not due
        keep their ``resend_at``: the cloud may be committing them right now."""
        self._cursor = dict.fromkeys(_LANES, -1)
        self._in_flight.clear()
        self._changed.set()

    def sent(self, batch: SealedBatch) -> None:
        """Record ``batch``'s PUBACK: it goes again after the ack timeout, doubled for
        each PUBACK it had before (up to the cap), unless the cloud acknowledges it
        first. Any batch, in any order; one already acknowledged is left gone."""
        self._in_flight.discard(batch.batch_seq)
        try:
            # On the second connection: committed without an fsync of its own (see
            # ``_marks``); a single statement, so its own transaction.
            self._marks.execute(
                "INSERT INTO sent (batch_seq, lane, attempts, resend_at)"
                " SELECT batch_seq, lane, 1, :now + :first FROM sealed WHERE batch_seq = :seq"
                " ON CONFLICT (batch_seq) DO UPDATE SET attempts = attempts + 1,"
                " resend_at = :now + min(:cap, :first * (1 << min(attempts, 32)))",
                {
                    "now": self._wall_clock(),
                    "first": self._ack_timeout_s,
                    "cap": self._ack_timeout_cap_s,
                    "seq": batch.batch_seq,
                },
            )
        except sqlite3.Error as exc:
            raise SpoolError(
                self.path, f"recording a PUBACK failed: {type(exc).__name__}: {exc}"
            ) from exc

    def acknowledge(self, spool_epoch: str, batch_seqs: Iterable[int]) -> list[int]:
        """Delete the batches the cloud acknowledged; the ``batch_seqs`` it held.

        Batches of another ``spool_epoch`` (an older spool file of this gateway) are
        not this file's: nothing is deleted for them. A batch acknowledged twice (a
        resend the cloud deduplicated) is deleted once.
        """
        if spool_epoch != self.spool_epoch:
            return []
        deleted: list[tuple[int, str]] = []
        with self._write() as db:
            for batch_seq in batch_seqs:
                deleted.extend(
                    db.execute(
                        "DELETE FROM sealed WHERE batch_seq = ? RETURNING batch_seq, lane",
                        (batch_seq,),
                    ).fetchall()
                )
                db.execute("DELETE FROM sent WHERE batch_seq = ?", (batch_seq,))
        for batch_seq, lane in deleted:
            self._depth[Channel(lane)] -= 1
            self._in_flight.discard(batch_seq)
        if deleted:
            self._changed.set()
        return [batch_seq for batch_seq, _ in deleted]

    def _keep_budget(self) -> None:
        """Enforce the budget after a committed add; a failure here does not undo the add.

        The items are on disk, so raising would make the caller store them twice; the
        failure is logged once per episode and enforcement is simply tried again at the
        next add (the dropped readings and their gap reports are one transaction, so a
        failed attempt leaves nothing half done).
        """
        try:
            self._enforce_budget()
        except SpoolError as exc:
            if not self._budget_failing:
                log.warning("%s; the budget is enforced again at the next add", exc)
            self._budget_failing = True
        else:
            if self._budget_failing:
                log.info("spool %s: budget enforcement works again", self.path)
            self._budget_failing = False

    def _enforce_budget(self) -> None:
        used = self.size_bytes()
        if used <= self.budget_bytes:
            self._budget_stuck = False
            if self._open_gaps:
                with self._write() as db:
                    self._seal_gaps(db)
            return
        in_flight = sorted(self._in_flight)
        marks = ",".join("?" * len(in_flight))
        with self._reading("measuring what can be evicted"):
            evictable = self._db.execute(
                "SELECT (SELECT coalesce(sum(length(payload)), 0) FROM sealed"
                f" WHERE lane = ? AND batch_seq NOT IN ({marks}) AND NOT EXISTS"
                " (SELECT 1 FROM sent WHERE sent.batch_seq = sealed.batch_seq))"
                " + (SELECT coalesce(sum(length(body)), 0) FROM pending)",
                (str(Channel.TELEMETRY), *in_flight),
            ).fetchone()[0]
        if not evictable:
            # Only events and batches in flight or sent are left: they are never
            # evicted, so there is nothing to drop; trying would only seal more gap
            # reports.
            if not self._budget_stuck:
                log.warning(
                    "spool %s: %d bytes used, past the %d byte budget, and all of it is "
                    "events or batches in flight or waiting for the cloud's acknowledgement, "
                    "which are never dropped",
                    self.path,
                    used,
                    self.budget_bytes,
                )
            self._budget_stuck = True
            if self._open_gaps and self._gap_report_due():
                with self._write() as db:
                    self._seal_gaps(db)
            return
        # Unevictable bytes are not counted in what must be freed: only what can go.
        wanted = used - int(self.budget_bytes * _BUDGET_TARGET)
        met = evictable >= wanted
        to_free = min(wanted, evictable)
        dropped: list[Reading] = []
        with self._write() as db:
            freed = 0
            rows = db.execute(
                "SELECT batch_seq, length(payload), payload FROM sealed"
                f" WHERE lane = ? AND batch_seq NOT IN ({marks}) AND NOT EXISTS"
                " (SELECT 1 FROM sent WHERE sent.batch_seq = sealed.batch_seq)"
                " ORDER BY batch_seq",
                (str(Channel.TELEMETRY), *in_flight),
            )
            victims: list[int] = []
            for batch_seq, size, payload in rows:
                if freed >= to_free:
                    break
                victims.append(batch_seq)
                dropped.extend(decode(payload, TelemetryBatch).items)
                freed += size
            rows.close()
            db.executemany("DELETE FROM sealed WHERE batch_seq = ?", [(s,) for s in victims])
            self._depth[Channel.TELEMETRY] -= len(victims)
            if freed < to_free:
                pending = db.execute(
                    "SELECT id, length(body), body FROM pending ORDER BY id"
                ).fetchall()
                last_id = None
                for row_id, size, body in pending:
                    if freed >= to_free:
                        break
                    dropped.append(decode(body, Reading))
                    freed += size
                    last_id = row_id
                if last_id is not None:
                    removed = db.execute("DELETE FROM pending WHERE id <= ?", (last_id,)).rowcount
                    self._pending -= removed
            if dropped:
                self._dropped += len(dropped)
                db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'dropped_readings'",
                    (str(self._dropped),),
                )
                self._record_gaps(db, dropped)
            # If what could go was not enough, the gap stays open and grows, and is
            # reported at most every _GAP_REPORT_INTERVAL_S, not at every add.
            if self._open_gaps and (met or self._gap_report_due()):
                self._seal_gaps(db)
        if met:
            self._budget_stuck = False
        elif not self._budget_stuck:
            log.warning(
                "spool %s: past the %d byte budget even with all unsent telemetry dropped; "
                "the rest is events and batches in flight or waiting for the cloud's "
                "acknowledgement, which are never dropped",
                self.path,
                self.budget_bytes,
            )
            self._budget_stuck = True

    def _gap_report_due(self) -> bool:
        return self._clock() - self._gaps_sealed_at >= _GAP_REPORT_INTERVAL_S

    def _record_gaps(self, db: sqlite3.Connection, dropped: list[Reading]) -> None:
        """Add ``dropped`` to each device's open gap report (one row per device)."""
        spans: dict[str, tuple[int, datetime, datetime]] = {}
        for reading in dropped:
            count, first, last = spans.get(reading.device, (0, reading.ts, reading.ts))
            spans[reading.device] = (count + 1, min(first, reading.ts), max(last, reading.ts))
        for device, (count, first, last) in spans.items():
            row = db.execute(
                "SELECT count, first_ts, last_ts FROM gap WHERE device = ?", (device,)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO gap (device, count, first_ts, last_ts) VALUES (?, ?, ?, ?)",
                    (device, count, first.isoformat(), last.isoformat()),
                )
                self._open_gaps += 1
            else:
                first = min(first, datetime.fromisoformat(row[1]))
                last = max(last, datetime.fromisoformat(row[2]))
                db.execute(
                    "UPDATE gap SET count = ?, first_ts = ?, last_ts = ? WHERE device = ?",
                    (row[0] + count, first.isoformat(), last.isoformat(), device),
                )

    def _seal_gaps(self, db: sqlite3.Connection) -> None:
        """Seal every open gap report into one event batch, one event per device."""
        rows = db.execute("SELECT device, count, first_ts, last_ts FROM gap ORDER BY device")
        now = datetime.now(UTC)
        events = []
        for device, count, first, last in rows.fetchall():
            seq = self._seq_source(device) if self._seq_source is not None else None
            if seq is None:
                seq = self._last_seq.get(device, 0) + 1
                self._last_seq[device] = seq
            reason = (
                f"spool past its {self.budget_bytes} byte budget: dropped readings from "
                f"{first} to {last}"
            )
            events.append(
                Event(
                    device=device,
                    ts=now,
                    seq=seq,
                    type=EventType.TELEMETRY_GAP,
                    severity=EVENT_SEVERITY[EventType.TELEMETRY_GAP],
                    data=EventData(count=count, reason=reason),
                )
            )
        db.execute("DELETE FROM gap")
        self._record_seqs(db, events)
        self._seal_events(db, events)
        self._open_gaps = 0
        self._gaps_sealed_at = self._clock()
        self._changed.set()
