"""The emergency queue: dispatchers claim, acknowledge, dispatch and resolve incidents,
and escalation workers raise the ones left waiting (docs/emergency-queue.md).

- ``states``: the pure state machine (which action is allowed from which status);
- ``transitions``: the actions against the database, each one transaction with its
  log row, webhook outbox rows and escalation timers;
- ``timers``: arming and cancelling the escalation timers;
- ``escalation``: the workers that fire due timers.

``cloud.incidents`` opens incidents and arms their first timer here; nothing in this
package imports ``cloud.incidents`` back (``IncidentStatus`` lives in ``states``).
"""
