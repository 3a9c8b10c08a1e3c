"""In-process counters of ingest, read for logs and, later, for metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

OutcomeKind = Literal["stored", "duplicate", "quarantined"]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one message became once its transaction committed.

    ``quarantined`` counts quarantine rows written: one for a rejected message, one per
    unknown device for a batch that was otherwise stored.
    """

    kind: OutcomeKind
    readings: int = 0
    events: int = 0
    quarantined: int = 0
    incidents_opened: int = 0
    incidents_joined: int = 0


@dataclass(slots=True)
class IngestCounters:
    """Running totals of one process's ingest; shared by its workers (one event loop)."""

    messages: int = 0
    batches: int = 0
    duplicates: int = 0
    readings: int = 0
    events: int = 0
    quarantined: int = 0
    incidents_opened: int = 0
    incidents_joined: int = 0
    poisoned: int = 0
    storage_errors: int = 0
    broker_errors: int = 0
    failures: int = 0

    def record(self, outcome: BatchOutcome) -> None:
        """Add one acknowledged message's outcome."""
        self.messages += 1
        if outcome.kind == "stored":
            self.batches += 1
        elif outcome.kind == "duplicate":
            self.duplicates += 1
        self.readings += outcome.readings
        self.events += outcome.events
        self.quarantined += outcome.quarantined
        self.incidents_opened += outcome.incidents_opened
        self.incidents_joined += outcome.incidents_joined

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter, by name, for a log line or a JSON summary."""
        return asdict(self)
