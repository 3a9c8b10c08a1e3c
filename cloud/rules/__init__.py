"""Rules: which events open which incidents, declared in YAML and evaluated at ingest.

Modules:
    context -- what rules know of an event's device (DeviceContext)
    config  -- the rule file (rules.yaml or ANJU_RULES_FILE), per-community overrides
    engine  -- evaluation in the ingest transaction, follow-ups, the silence sweep,
               and the judging of windowed rules' checks
    checker -- the loop judging windowed rules (burst, tailgating) at their window's end
    sweeper -- the loop of the silence sweep

Rules produce ``cloud.incidents.IncidentDraft``s, which ``cloud.incidents`` turns into
incidents in the caller's transaction.
"""
