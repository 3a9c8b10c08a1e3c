"""Rules: which events open which incidents, declared in YAML and evaluated at ingest.

Modules:
    context -- what rules know of an event's device (DeviceContext)
    config  -- the rule file (rules.yaml or ANJU_RULES_FILE), per-community overrides
    engine  -- evaluation in the ingest transaction, follow-ups, the silence sweep

Rules produce ``cloud.incidents.IncidentDraft``s, which ``cloud.incidents`` turns into
incidents in the caller's transaction.
"""
