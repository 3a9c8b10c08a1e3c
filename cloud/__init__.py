"""Anju's cloud tier: ingest, storage, rules, incidents and the API (docs/design.md sections 6-7).

Modules:
    settings      -- typed settings read from ``ANJU_*`` environment variables
    errors        -- the ``CloudError`` tree
    storage       -- migrations, the named-query loader, connection helpers
    registry      -- communities, gateways and devices as installers register them
    broker        -- gateway and cloud accounts in Mosquitto's dynamic-security plugin
    provisioning  -- gateways' broker credentials: issued, rotated, revoked
    configs       -- the config pusher: each gateway's device config as ``apply_config``
    ingest        -- MQTT consumer and the batch writer
    rules         -- pure functions from events to incident drafts
    incidents     -- opening and joining incidents, with their log
    api           -- the FastAPI application
    app           -- ``run_cloud``, ``run_ingest``, ``run_configs``: the tasks wired together

aiomqtt is imported in one module per package that speaks MQTT:
``ingest/consumer.py``, ``broker/dynsec.py`` and ``configs/link.py``.

Importing any of these connects to nothing.
"""
