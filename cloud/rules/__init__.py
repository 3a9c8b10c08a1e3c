"""Rules: pure functions from an event and its device's context to an incident draft.

Modules:
    drafts     -- what rules consume and produce (DeviceContext, IncidentDraft, ...)
    emergency  -- emergency-call rules (fire, SOS, fall, abnormal heart rate)

No rule does I/O; ``cloud.incidents`` turns drafts into incidents in the caller's
transaction.
"""
