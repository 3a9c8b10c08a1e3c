"""Bluetooth LE wearables: presence, advertised data and GATT notifications.

Modules, from the air up:

``radio``
    The small interface to a Bluetooth host stack: scan, connect, read, subscribe.
``bleak_radio`` / ``bumble_radio``
    Its two backends: BlueZ through bleak (a gateway box's own adapter) and an HCI
    controller driven by bumble (a USB dongle, or the simulated bands over TCP).
    The gateway config's ``drivers.ble.adapter`` picks one (``settings``).
``gatt``
    Pure decoding of characteristic and advertisement values as their
    specifications say; a value that cannot be what it claims is a ``MalformedValue``.
``band``
    One band's points grouped by where their values arrive, and the samples they make.
``slots``
    The adapter's connection slots, taken in turns when bands outnumber them.
``bus``
    Scanning, presence (out of range after a grace period), and one supervised
    connection per band that needs it.
``driver``
    The registry's entry: opens the bus, and the installer's probe and scan.
"""

from edge.drivers.ble.driver import BleDriver

DRIVER = BleDriver()
