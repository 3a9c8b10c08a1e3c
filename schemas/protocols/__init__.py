"""The built-in addressing families; importing this package registers each of them.

One module per protocol family. A new protocol is a new module here that calls
``schemas.addressing.register`` and one import line below; no shared class changes.
"""

from schemas.protocols import ble, modbus, osdp, serial

__all__ = ["ble", "modbus", "osdp", "serial"]
