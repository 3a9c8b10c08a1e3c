"""Config push: the device config the registry keeps for each gateway goes out as an
``apply_config`` command, and the gateways' answers and statuses come back into its row.

The pusher also carries installers' device tests (``POST /devices/{id}/test``): the
only cloud component with an MQTT link that sends commands and hears their results.

Modules:
    commands           -- pure: command ids (one per attempt), the command, reading an answer
    store              -- the gateway-row updates of ``queries/configs.sql``
    device_tests       -- pure: the ``read_device`` command of a device test, its answer
    device_test_store  -- the ``device_tests`` rows (``queries/device_tests.sql``): asked
                          for and waited on by the API, sent and answered by the worker
    link               -- ``ConfigLink``: the broker connection; the package's only aiomqtt
                          import
    worker             -- ``ConfigWorker``: the push, reads and listen loops,
                          ``run_config_pusher``
    errors             -- ``ConfigPushError``, ``ConfigLinkLost``, ``DeviceTestRefused``
"""
