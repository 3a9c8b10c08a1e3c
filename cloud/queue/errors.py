"""Why the emergency queue refused an action; each error names the incident.

    CloudError
    └── QueueError
        ├── IncidentNotFound       no incident with this id (the API answers 404)
        └── TransitionRefused      not allowed from the incident's status (409)
            ├── AlreadyClaimed         another dispatcher won the claim
            └── NotClaimant            only the dispatcher who claimed it may do this

Storage failures stay ``StorageError`` (``cloud.errors``).
"""

from __future__ import annotations

from cloud.errors import CloudError


class QueueError(CloudError):
    """Base of the emergency queue's refusals; ``incident_id`` names the incident."""

    def __init__(self, message: str, *, incident_id: int) -> None:
        self.incident_id = incident_id
        self.message = message
        super().__init__(message)


class IncidentNotFound(QueueError):
    def __init__(self, incident_id: int) -> None:
        super().__init__(f"no incident {incident_id}", incident_id=incident_id)


class TransitionRefused(QueueError):
    """``action`` is not allowed while the incident is ``status``; ``message`` says why."""

    def __init__(self, message: str, *, incident_id: int, action: str, status: str) -> None:
        self.action = action
        self.status = status
        super().__init__(message, incident_id=incident_id)


class AlreadyClaimed(TransitionRefused):
    """The claim lost: ``claimed_by`` holds the incident."""

    def __init__(self, *, incident_id: int, status: str, claimed_by: str) -> None:
        self.claimed_by = claimed_by
        super().__init__(
            f"incident {incident_id} is already claimed by {claimed_by} (now {status})",
            incident_id=incident_id,
            action="claim",
            status=status,
        )


class NotClaimant(TransitionRefused):
    """``actor`` tried to act on an incident ``claimed_by`` someone else."""

    def __init__(
        self, *, incident_id: int, action: str, status: str, claimed_by: str, actor: str
    ) -> None:
        self.claimed_by = claimed_by
        self.actor = actor
        super().__init__(
            f"incident {incident_id} is claimed by {claimed_by}; {actor} may not {action} it",
            incident_id=incident_id,
            action=action,
            status=status,
        )
