"""The gateway agent: reads devices, normalises to the shared schema, sends upstream.

Imports ``schemas`` and nothing else of ours; the protocol drivers under
``edge.drivers`` know nothing of MQTT, and only ``edge.uplink`` imports aiomqtt.
"""
