"""The emergency queue's state machine, as pure functions (no I/O).

    open ──claim──▶ claimed ──acknowledge──▶ acknowledged ──dispatch──▶ dispatched
                       │                          │                          │
                       └─resolve(false_alarm)─┐   └──────resolve(any)────────┤
                                              ▼                              ▼
                                         false_alarm  ◀─(outcome false_alarm)─ resolved

Only the dispatcher who claimed an incident may acknowledge, dispatch or resolve it.
A claimed incident nobody has spoken to yet can only be closed as a false alarm:
"handled" or "hospital" need contact first.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cloud.queue.errors import AlreadyClaimed, NotClaimant, TransitionRefused


class IncidentStatus(StrEnum):
    """``open → claimed → acknowledged → dispatched → resolved`` or ``false_alarm``."""

    OPEN = "open"
    CLAIMED = "claimed"
    ACKNOWLEDGED = "acknowledged"
    DISPATCHED = "dispatched"
    RESOLVED = "resolved"
    FALSE_ALARM = "false_alarm"

    @property
    def active(self) -> bool:
        """Whether repeats still join the incident (it is neither resolved nor false)."""
        return self not in (IncidentStatus.RESOLVED, IncidentStatus.FALSE_ALARM)


class Action(StrEnum):
    CLAIM = "claim"
    ACKNOWLEDGE = "acknowledge"
    DISPATCH = "dispatch"
    RESOLVE = "resolve"


class Outcome(StrEnum):
    """How an incident ended; ``false_alarm`` also gives it the status ``false_alarm``."""

    HANDLED = "handled"
    HOSPITAL = "hospital"
    FALSE_ALARM = "false_alarm"

    @property
    def status(self) -> IncidentStatus:
        """The status a resolution with this outcome leaves the incident in."""
        if self is Outcome.FALSE_ALARM:
            return IncidentStatus.FALSE_ALARM
        return IncidentStatus.RESOLVED


@dataclass(frozen=True, slots=True)
class Current:
    """What the state machine needs of an incident, read under its row lock."""

    incident_id: int
    status: IncidentStatus
    claimed_by: str | None


_FROM: dict[Action, frozenset[IncidentStatus]] = {
    Action.CLAIM: frozenset({IncidentStatus.OPEN}),
    Action.ACKNOWLEDGE: frozenset({IncidentStatus.CLAIMED}),
    Action.DISPATCH: frozenset({IncidentStatus.ACKNOWLEDGED}),
    Action.RESOLVE: frozenset(
        {IncidentStatus.CLAIMED, IncidentStatus.ACKNOWLEDGED, IncidentStatus.DISPATCHED}
    ),
}

_TO: dict[Action, IncidentStatus] = {
    Action.CLAIM: IncidentStatus.CLAIMED,
    Action.ACKNOWLEDGE: IncidentStatus.ACKNOWLEDGED,
    Action.DISPATCH: IncidentStatus.DISPATCHED,
}


def next_status(
    action: Action, current: Current, *, actor: str, outcome: Outcome | None = None
) -> IncidentStatus:
    """The status ``action`` by ``actor`` moves the incident to.

    ``outcome`` is required for ``resolve`` and ignored otherwise. Raises
    AlreadyClaimed when a claim finds the incident claimed, NotClaimant when someone
    other than the claimant acts on a claimed incident, TransitionRefused otherwise
    when the action is not allowed from the current status.
    """
    status = current.status
    if status not in _FROM[action]:
        if action is Action.CLAIM and status.active and current.claimed_by is not None:
            raise AlreadyClaimed(
                incident_id=current.incident_id, status=status, claimed_by=current.claimed_by
            )
        raise TransitionRefused(
            f"incident {current.incident_id} is {status}; {action} needs it to be "
            + " or ".join(sorted(_FROM[action])),
            incident_id=current.incident_id,
            action=action,
            status=status,
        )
    if action is not Action.CLAIM and current.claimed_by != actor:
        raise NotClaimant(
            incident_id=current.incident_id,
            action=action,
            status=status,
            claimed_by=current.claimed_by or "nobody",
            actor=actor,
        )
    if action is not Action.RESOLVE:
        return _TO[action]
    if outcome is None:
        raise ValueError("resolve needs an outcome")
    if status is IncidentStatus.CLAIMED and outcome is not Outcome.FALSE_ALARM:
        raise TransitionRefused(
            f"incident {current.incident_id} is claimed but nobody is in contact yet; "
            f"acknowledge it before resolving it as {outcome} (or resolve it as false_alarm)",
            incident_id=current.incident_id,
            action=action,
            status=status,
        )
    return outcome.status
