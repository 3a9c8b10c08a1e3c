"""Rules: which events open which incidents, declared in YAML and evaluated at ingest.

Modules:
    drafts  -- what rules consume and produce (DeviceContext, IncidentDraft, Priority)
    config  -- the rule file (rules.yaml or ANJU_RULES_FILE), per-community overrides
    engine  -- evaluation in the ingest transaction, follow-ups, the silence sweep

``cloud.incidents`` turns drafts into incidents in the caller's transaction.
"""
