"""In-process counters of ingest, read for the log line and for ``/metrics``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Literal

OutcomeKind = Literal["stored", "duplicate", "quarantined", "conflict"]
"""``conflict``: a batch key already stored with other content (see ``BatchWriter``)."""


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one message became once its transaction committed.

    ``quarantined`` counts quarantine rows written: one for a rejected message or a
    conflict, one per unknown device for a batch that was otherwise stored. ``reason``
    says why a whole message was refused (quarantined or conflict), for the gateway's
    acknowledgement. ``key`` is the batch's (spool epoch, batch seq) when the payload
    names one, so the consumer can acknowledge the batch; None when it cannot be told.
    """

    kind: OutcomeKind
    readings: int = 0
    events: int = 0
    quarantined: int = 0
    incidents_opened: int = 0
    incidents_joined: int = 0
    clock_skewed: int = 0
    """Items stored at their time of receipt because their own time was implausible."""
    reason: str = ""
    key: tuple[str, int] | None = None


@dataclass(slots=True)
class IngestCounters:
    """Running totals of one process's ingest; shared by its workers (one event loop)."""

    messages: int = 0
    batches: int = 0
    duplicates: int = 0
    conflicts: int = 0
    """Batches refused because their key was stored before with other content."""
    readings: int = 0
    events: int = 0
    quarantined: int = 0
    incidents_opened: int = 0
    incidents_joined: int = 0
    clock_skewed: int = 0
    """Readings and events stored at their time of receipt, their own being implausible."""
    poisoned: int = 0
    acks_published: int = 0
    """Batch acknowledgements handed to the broker connection, one per gateway and group."""
    ack_failures: int = 0
    """Batch acknowledgements that could not be sent; the gateway resends, which
    deduplication absorbs."""
    storage_errors: int = 0
    broker_errors: int = 0
    failures: int = 0
    groups: int = 0
    newest_sealed_at: datetime | None = None
    """When the gateway sealed the newest batch stored since start (None before the
    first); ``/metrics`` reports how long ago that was as ingest lag."""

    def record(self, outcome: BatchOutcome) -> None:
        """Add one acknowledged message's outcome."""
        self.messages += 1
        if outcome.kind == "stored":
            self.batches += 1
        elif outcome.kind == "duplicate":
            self.duplicates += 1
        elif outcome.kind == "conflict":
            self.conflicts += 1
        self.readings += outcome.readings
        self.events += outcome.events
        self.quarantined += outcome.quarantined
        self.incidents_opened += outcome.incidents_opened
        self.incidents_joined += outcome.incidents_joined
        self.clock_skewed += outcome.clock_skewed

    def record_group(self, sealed_at: Iterable[datetime], *, committed_at: datetime) -> None:
        """Count one group committed, with the sealing times of the batches it stored.

        A sealing time after the commit (a gateway clock running ahead) counts as the
        commit's own time: taken as it is, it would keep the lag low for as long as
        that clock is ahead, however long ingest then stalls.
        """
        self.groups += 1
        newest = max(sealed_at, default=None)
        if newest is None:
            return
        newest = min(newest, committed_at)
        if self.newest_sealed_at is None or newest > self.newest_sealed_at:
            self.newest_sealed_at = newest

    def snapshot(self) -> dict[str, int]:
        """A copy of every count, by name, for a log line or a JSON summary."""
        return {name: value for name, value in asdict(self).items() if isinstance(value, int)}
