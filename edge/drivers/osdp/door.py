"""What the door beside a reader did, from the reader's card reads and its inputs.

The door controller decides who may pass; the gateway only sees its decision on the
wires: the lock-release sense going active soon after a card (or PIN) means the card
was accepted. Pure and clock-free: the bus passes the time of everything in, and
asks (``due``) for the decisions whose grant window has run out.

Rules, in the order a person meets them:

- A credential opens an attempt, decided within ``grant_window_s``: the release going
  active then makes it ``granted`` at once; a window that runs out without one makes
  it ``denied``. A second, different credential before the first is decided decides
  the first as ``denied`` (it saw no release of its own).
- The same credential again while its attempt is pending, or within
  ``grant_window_s`` of it once decided, is the same attempt (a card held twice to the
  reader): no second decision. A PIN after a card joins the card's attempt the same
  way (card-then-PIN doors); the decision names the card. ``pin_window_s`` gives such
  doors longer to type: a card's attempt then waits that long for its PIN.
- One release activation grants one attempt: the release going active grants the
  attempt pending then, or one that comes within ``grant_window_s`` after it;
  a credential presented while the strike is held released for someone else is not
  granted by that release (``denied`` if no release of its own follows).
- The door contact opening while the lock is known not to be released is ``forced``
  (1), until the contact closes again (0), unless the request-to-exit input
  (``rex_input``) was active within ``rex_window_s`` before (someone leaving). A report
  that changes several inputs at once is read exit request first, then release, then
  contact, so a door pushed open as the strike lets go is not called forced.
- Every input is unknown until the reader first reports it: that first report is the
  baseline (a door already open is not forced), and ``offline`` makes them unknown
  again, so a reader back on the line sets a new baseline.
"""

from dataclasses import dataclass
from typing import Final, Literal

Decision = Literal["granted", "denied"]

REX_WINDOW_S: Final = 5.0
"""How long after the exit request the door may open and still be someone leaving."""


@dataclass(frozen=True, slots=True)
class Access:
    """A decision the door controller made about one credential."""

    decision: Decision
    credential: str
    """The credential's keyed hash (the card's, when a PIN joined it)."""


@dataclass(frozen=True, slots=True)
class Forced:
    """The door was forced open (True), or a forced door closed again (False)."""

    forced: bool


DoorChange = Access | Forced


@dataclass(slots=True)
class _Attempt:
    """One person's credential at the reader, pending (``until``) or decided (None)."""

    credential: str
    card: bool
    at: float
    """When it was last presented (or a PIN joined it)."""
    until: float | None


class Door:
    """One door's state: inputs as last reported, and the latest attempt at the reader."""

    def __init__(
        self,
        *,
        contact_input: int | None,
        release_input: int | None,
        grant_window_s: float,
        rex_input: int | None = None,
        pin_window_s: float | None = None,
        rex_window_s: float = REX_WINDOW_S,
    ) -> None:
        self.contact_input = contact_input
        self.release_input = release_input
        self.rex_input = rex_input
        self.grant_window_s = grant_window_s
        self.pin_window_s = pin_window_s
        self.rex_window_s = rex_window_s
        self.released: bool | None = None
        """None until the reader has reported the input (and again once it goes offline)."""
        self.open: bool | None = None
        self.forced = False
        self._rex_active: bool | None = None
        self._rex_at: float | None = None
        self._released_at: float | None = None
        self._release_used = False
        self._attempt: _Attempt | None = None

    def credential(self, credential: str, now: float, *, pin: bool = False) -> list[DoorChange]:
        """A card (or, with ``pin``, a whole PIN) was presented at ``now``."""
        changes = self.due(now)
        if self.release_input is None:
            return changes
        last = self._attempt
        if last is not None and self._continues(last, credential, pin, now):
            last.at = now
            if last.until is not None:
                last.until = max(last.until, now + self.grant_window_s)
            return changes
        if last is not None and last.until is not None:
            changes.append(Access("denied", last.credential))
        window = self.grant_window_s
        if not pin and self.pin_window_s is not None:
            window = max(window, self.pin_window_s)
        attempt = _Attempt(credential, card=not pin, at=now, until=now + window)
        self._attempt = attempt
        if (
            self.released
            and not self._release_used
            and self._released_at is not None
            and now - self._released_at <= self.grant_window_s
        ):
            changes.append(self._grant(attempt))
        return changes

    def _continues(self, last: _Attempt, credential: str, pin: bool, now: float) -> bool:
        """Whether this presentation belongs to the latest attempt rather than a new one."""
        recent = last.until is not None or now - last.at < self.grant_window_s
        return recent and (credential == last.credential or (pin and last.card))

    def _grant(self, attempt: _Attempt) -> Access:
        attempt.until = None
        self._release_used = True
        return Access("granted", attempt.credential)

    def inputs(self, states: dict[int, bool], now: float) -> list[DoorChange]:
        """The reader reported its inputs (all of them, or the ones that changed)."""
        changes = self.due(now)
        if self.rex_input is not None and self.rex_input in states:
            active = states[self.rex_input]
            if active or self._rex_active:
                self._rex_at = now
            self._rex_active = active
        if self.release_input is not None and self.release_input in states:
            released = states[self.release_input]
            if released and not self.released:
                self._released_at = now
                self._release_used = False
                pending = self._attempt
                if pending is not None and pending.until is not None:
                    changes.append(self._grant(pending))
            self.released = released
        if self.contact_input is not None and self.contact_input in states:
            is_open = states[self.contact_input]
            if is_open and self.open is False and self.released is False and not self._exit(now):
                self.forced = True
                changes.append(Forced(True))
            elif not is_open and self.forced:
                self.forced = False
                changes.append(Forced(False))
            self.open = is_open
        return changes

    def _exit(self, now: float) -> bool:
        """Whether someone asked to leave just before the door opened."""
        if self._rex_active:
            return True
        return self._rex_at is not None and now - self._rex_at <= self.rex_window_s

    def offline(self) -> None:
        """The reader stopped answering: its inputs are unknown until it reports again.

        A pending attempt keeps its window; a door reported forced stays so until a
        report shows it closed.
        """
        self.released = None
        self.open = None
        self._rex_active = None
        self._rex_at = None
        self._released_at = None
        self._release_used = False

    def due(self, now: float) -> list[DoorChange]:
        """The attempt whose window ended by ``now`` without a release: denied."""
        attempt = self._attempt
        if attempt is None or attempt.until is None or now < attempt.until:
            return []
        attempt.until = None
        return [Access("denied", attempt.credential)]

    @property
    def next_due(self) -> float | None:
        """When ``due`` will next have something to say, if anything is pending."""
        attempt = self._attempt
        return None if attempt is None else attempt.until
