"""Shared wire and device types of Anju: the only package both edge and cloud import.

Anything that crosses the MQTT wire or describes a device model is defined here once,
so that the gateway and the cloud cannot disagree about a field.
"""

from typing import Final

SCHEMA_VERSION: Final = 2
"""Version of the wire payloads. Bumped on any change a receiver must know about.

2: the cloud acknowledges committed batches on ``ack`` and every string and list on
the wire is bounded (docs/design.md section 3)."""
