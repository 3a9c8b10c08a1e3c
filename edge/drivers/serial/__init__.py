"""Devices that push records over a serial line (camera analytics boxes), read by the
profile alone: how records are framed and where each field sits come from its
``serial`` section, so a new device model needs a profile, not code.

Modules, from the wire up:

``port``
    One serial port, opened with the address's line settings (pyserial) and read by
    the event loop; an unplugged device ends its reads with ``PortLost``.
``checksums`` / ``framing``
    Sans-IO: the profile's framing cuts the byte stream into ``Record``s, and skips
    garbage, partial, overlong and corrupt frames as ``FrameFault``s, resynchronising
    on the next frame.
``records``
    Which of the profile's points each record type fills, and where each lives.
``errors``
    ``DeviceError``s whose kind the core counts (checksum, noise, truncated, ...).
``bus``
    One device per port: records to samples, faults counted, offline while the port is
    missing, lost or silent past the profile's ``heartbeat_s``, reopened with backoff.
``driver``
    The registry's entry: opens the bus, and the installer's probe (``anju device test``).
"""

from edge.drivers.serial.driver import SerialDriver

DRIVER = SerialDriver()
