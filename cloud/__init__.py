"""Anju's cloud tier: ingest, storage, rules, incidents and the API (docs/design.md sections 6-7).

Modules:
    settings      -- typed settings read from ``ANJU_*`` environment variables
    errors        -- the ``CloudError`` tree
    storage       -- migrations, the named-query loader, connection helpers
    registry      -- communities, gateways and devices as installers register them
    ingest        -- MQTT consumer (the only aiomqtt user here) and the batch writer
    rules         -- pure functions from events to incident drafts
    incidents     -- opening and joining incidents, with their log
    api           -- the FastAPI application
    app           -- ``run_cloud`` and ``run_ingest``: the tasks wired together

Importing any of these connects to nothing.
"""
