"""What the door beside a reader did, from the reader's card reads and two of its inputs.

The door controller decides who may pass; the gateway only sees its decision on the
wires: the lock-release sense going active soon after a card (or PIN) means the card
was accepted. Pure and clock-free: the bus passes the time of everything in, and
asks (``due``) for the decisions whose grant window has run out.

Rules, in the order a person meets them:

- A credential opens a grant window (``grant_window_s``). The release already active
  then, or going active within it, makes it ``granted`` at once; a window that runs
  out without one makes it ``denied``. A second credential before the first is
  decided decides the first as ``denied`` (it saw no release of its own).
- The door contact opening while the lock is not released is ``forced`` (1), until
  the contact closes again (0). A report that changes both inputs at once is read
  release first, so a door pushed open as the strike lets go is not called forced.
"""

from dataclasses import dataclass
from typing import Literal

Decision = Literal["granted", "denied"]


@dataclass(frozen=True, slots=True)
class Access:
    """A decision the door controller made about one credential."""

    decision: Decision
    credential: str
    """The credential's keyed hash."""


@dataclass(frozen=True, slots=True)
class Forced:
    """The door was forced open (True), or a forced door closed again (False)."""

    forced: bool


DoorChange = Access | Forced


@dataclass(slots=True)
class _Pending:
    credential: str
    until: float


class Door:
    """One door's state: inputs as last reported, and the credential awaiting its decision."""

    def __init__(
        self, *, contact_input: int | None, release_input: int | None, grant_window_s: float
    ) -> None:
        self.contact_input = contact_input
        self.release_input = release_input
        self.grant_window_s = grant_window_s
        self.released = False
        self.open = False
        self.forced = False
        self._pending: _Pending | None = None

    def credential(self, credential: str, now: float) -> list[DoorChange]:
        """A card or PIN was presented at ``now``."""
        changes: list[DoorChange] = []
        if self._pending is not None:
            changes.append(Access("denied", self._pending.credential))
            self._pending = None
        if self.release_input is None:
            return changes
        if self.released:
            changes.append(Access("granted", credential))
        else:
            self._pending = _Pending(credential, now + self.grant_window_s)
        return changes

    def inputs(self, states: dict[int, bool], now: float) -> list[DoorChange]:
        """The reader reported its inputs (all of them, or the ones that changed)."""
        changes = self.due(now)
        if self.release_input is not None and self.release_input in states:
            released = states[self.release_input]
            if released and not self.released and self._pending is not None:
                changes.append(Access("granted", self._pending.credential))
                self._pending = None
            self.released = released
        if self.contact_input is not None and self.contact_input in states:
            is_open = states[self.contact_input]
            if is_open and not self.open and not self.released and self.release_input is not None:
                self.forced = True
                changes.append(Forced(True))
            elif not is_open and self.forced:
                self.forced = False
                changes.append(Forced(False))
            self.open = is_open
        return changes

    def due(self, now: float) -> list[DoorChange]:
        """The credential whose grant window ended by ``now`` without a release: denied."""
        if self._pending is None or now < self._pending.until:
            return []
        credential, self._pending = self._pending.credential, None
        return [Access("denied", credential)]

    @property
    def next_due(self) -> float | None:
        """When ``due`` will next have something to say, if anything is pending."""
        return None if self._pending is None else self._pending.until
