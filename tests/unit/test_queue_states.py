"""The emergency queue's state machine and its settings, without a database."""

from __future__ import annotations

import pytest

from cloud.errors import SettingsError
from cloud.queue.errors import AlreadyClaimed, NotClaimant, TransitionRefused
from cloud.queue.states import Action, Current, IncidentStatus, Outcome, next_status
from cloud.settings import QueueSettings, load_settings

S = IncidentStatus
DB = {"ANJU_DATABASE_URL": "postgresql://anju@127.0.0.1/anju"}


def _at(status: IncidentStatus, claimed_by: str | None = "ann") -> Current:
    return Current(7, status, None if status is S.OPEN else claimed_by)


@pytest.mark.parametrize(
    ("action", "status", "outcome", "expected"),
    [
        (Action.CLAIM, S.OPEN, None, S.CLAIMED),
        (Action.ACKNOWLEDGE, S.CLAIMED, None, S.ACKNOWLEDGED),
        (Action.DISPATCH, S.ACKNOWLEDGED, None, S.DISPATCHED),
        (Action.RESOLVE, S.ACKNOWLEDGED, Outcome.HANDLED, S.RESOLVED),
        (Action.RESOLVE, S.DISPATCHED, Outcome.HOSPITAL, S.RESOLVED),
        (Action.RESOLVE, S.DISPATCHED, Outcome.FALSE_ALARM, S.FALSE_ALARM),
        (Action.RESOLVE, S.CLAIMED, Outcome.FALSE_ALARM, S.FALSE_ALARM),
    ],
)
def test_allowed_moves(
    action: Action, status: IncidentStatus, outcome: Outcome | None, expected: IncidentStatus
) -> None:
    assert next_status(action, _at(status), actor="ann", outcome=outcome) is expected


@pytest.mark.parametrize(
    ("action", "status"),
    [
        (Action.ACKNOWLEDGE, S.OPEN),
        (Action.DISPATCH, S.OPEN),
        (Action.DISPATCH, S.CLAIMED),
        (Action.RESOLVE, S.OPEN),
        (Action.ACKNOWLEDGE, S.ACKNOWLEDGED),
        (Action.ACKNOWLEDGE, S.DISPATCHED),
        (Action.DISPATCH, S.DISPATCHED),
        (Action.CLAIM, S.RESOLVED),
        (Action.ACKNOWLEDGE, S.RESOLVED),
        (Action.RESOLVE, S.RESOLVED),
        (Action.RESOLVE, S.FALSE_ALARM),
        (Action.CLAIM, S.FALSE_ALARM),
    ],
)
def test_refused_moves_name_the_incident_and_status(action: Action, status: IncidentStatus) -> None:
    with pytest.raises(TransitionRefused, match=f"incident 7 is {status}") as caught:
        next_status(action, _at(status), actor="ann", outcome=Outcome.HANDLED)
    assert caught.value.status == status
    assert caught.value.action == action


def test_a_second_claim_names_the_winner() -> None:
    with pytest.raises(AlreadyClaimed, match="already claimed by ann") as caught:
        next_status(Action.CLAIM, _at(S.ACKNOWLEDGED), actor="bob")
    assert caught.value.claimed_by == "ann"


@pytest.mark.parametrize("action", [Action.ACKNOWLEDGE, Action.RESOLVE])
def test_only_the_claimant_acts(action: Action) -> None:
    with pytest.raises(NotClaimant, match="claimed by ann; bob may not"):
        next_status(action, _at(S.CLAIMED), actor="bob", outcome=Outcome.FALSE_ALARM)


@pytest.mark.parametrize("outcome", [Outcome.HANDLED, Outcome.HOSPITAL])
def test_nobody_in_contact_means_only_a_false_alarm(outcome: Outcome) -> None:
    with pytest.raises(TransitionRefused, match="acknowledge it before"):
        next_status(Action.RESOLVE, _at(S.CLAIMED), actor="ann", outcome=outcome)


def test_outcome_status() -> None:
    assert Outcome.FALSE_ALARM.status is S.FALSE_ALARM
    assert Outcome.HANDLED.status is Outcome.HOSPITAL.status is S.RESOLVED


def test_queue_limits_default_to_the_telecare_figures_and_grow_with_priority() -> None:
    queue = QueueSettings()
    assert (queue.unclaimed_s(1), queue.unacknowledged_s(1)) == (60, 180)
    assert queue.unclaimed_s(1) < queue.unclaimed_s(2) < queue.unclaimed_s(3)
    with pytest.raises(ValueError, match="priority 4"):
        queue.unclaimed_s(4)


def test_queue_settings_from_the_environment() -> None:
    env = {**DB, "ANJU_QUEUE_P1_UNCLAIMED_S": "30", "ANJU_QUEUE_REPEAT_S": "15"}
    queue = load_settings(env, require_mqtt=False).queue
    assert (queue.p1_unclaimed_s, queue.repeat_s, queue.p1_unacknowledged_s) == (30, 15, 180)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ANJU_QUEUE_P2_UNCLAIMED_S": "-1"}, "ANJU_QUEUE_P2_UNCLAIMED_S"),
        ({"ANJU_QUEUE_POLL_INTERVAL_S": "soon"}, "ANJU_QUEUE_POLL_INTERVAL_S"),
        ({"ANJU_QUEUE_P1_UNACKNOWLEDGED_S": "30"}, "ANJU_QUEUE_P1_UNACKNOWLEDGED_S"),
        ({"ANJU_QUEUE_P2_UNCLAIMED_S": "10"}, "ANJU_QUEUE_P2_UNCLAIMED_S"),
    ],
)
def test_bad_queue_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**DB, **env}, require_mqtt=False)
    assert caught.value.variable == variable
