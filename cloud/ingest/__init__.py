"""Ingest: from MQTT messages to committed rows, acknowledged only after the commit.

Modules:
    consumer  -- ``IngestConsumer``: the only module of ``cloud.ingest`` that imports aiomqtt
    writer    -- ``BatchWriter``: one message, one transaction (dedupe, COPY, rules)
    counters  -- ``IngestCounters``: what was stored, skipped and quarantined
"""
