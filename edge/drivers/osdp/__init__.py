"""OSDP readers on RS-485 lines, with the gateway as the line's control panel.

The door controller beside each reader decides who may pass; the gateway polls the
readers, hashes every card and PIN before it leaves the edge, drives LEDs and
buzzers, and reports what the reader and the door's inputs show (docs/osdp.md).
The protocol, its secure channel and its timers are libosdp's (docs/decisions.md,
"OSDP through libosdp"). Modules, from the wire up:

``frames``
    OSDP packets checked on the side: the readers' bytes filtered to whole packets
    with a good CRC, headers read for statistics and key-mismatch diagnosis, and the
    two plain commands a scan sends.
``line``
    The serial port as libosdp's channel, handing it only checked replies and
    counting what crosses it (``LineStats``).
``panel``
    libosdp's control panel on one thread per line: refreshed on every reply,
    readers restarted with backoff, typed events out.
``settings`` / ``credentials``
    ``drivers.osdp`` (keys held as ``Secret``) and the keyed hash of cards and PINs.
``door`` / ``reader``
    Access granted or denied, forced entry, and samples of a profile's points.
``bus`` / ``scan`` / ``driver``
    The streaming bus, the address scan, and the registry's entry (``DRIVER``).
"""

from edge.drivers.osdp.driver import OsdpDriver

DRIVER = OsdpDriver()
