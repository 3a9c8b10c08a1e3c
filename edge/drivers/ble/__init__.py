"""Bluetooth LE: GATT characteristic values decoded as their specifications say.

``gatt`` is pure code, no radio: the backends (BlueZ through bleak, an HCI controller
through bumble) hand it the bytes of a notification or a read, and it yields the
points' raw values or a ``MalformedValue`` naming the characteristic and the bytes.
"""
