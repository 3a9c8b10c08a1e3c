"""Ingest: from MQTT messages to committed rows, acknowledged only after the commit.

Modules:
    consumer  -- ``IngestConsumer``: the only module of ``cloud.ingest`` that imports
                 aiomqtt; an alarm lane and a telemetry lane, PUBACKs in arrival order
    writer    -- ``BatchWriter``: one group, one transaction (dedupe, COPY, rules)
    acks      -- ``batch_acks``: the ``BatchAck`` each gateway gets after a commit
    counters  -- ``IngestCounters``: what was stored, skipped, quarantined and acknowledged
"""
