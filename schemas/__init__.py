"""Shared wire and device types of Anju: the only package both edge and cloud import.

Anything that crosses the MQTT wire or describes a device model is defined here once,
so that the gateway and the cloud cannot disagree about a field.
"""

from typing import Final

SCHEMA_VERSION: Final = 1
"""Version of the wire payloads. Bumped on any change a receiver must know about."""
