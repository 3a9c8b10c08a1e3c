"""Config push: the device config the registry keeps for each gateway goes out as an
``apply_config`` command, and the gateways' answers and statuses come back into its row.

Modules:
    commands  -- pure: command ids (one per attempt), the command, reading an answer
    store     -- the gateway-row updates of ``queries/configs.sql``
    link      -- ``ConfigLink``: the broker connection; the package's only aiomqtt import
    worker    -- ``ConfigWorker``: the push and listen loops, ``run_config_pusher``
    errors    -- ``ConfigPushError`` and ``ConfigLinkLost``
"""
