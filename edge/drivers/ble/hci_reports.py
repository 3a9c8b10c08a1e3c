"""Advertising reports read straight from HCI event bytes (Core 5.4, Vol 4, Part E,
7.7.65.2 and 7.7.65.13), and their AD structures (Core Supplement, Part A).

A gateway hears every band about once a second, so advertising reports are nearly
all the traffic from the controller. bumble's host decodes each into generic objects
and formats it for its debug log whether or not anything logs, which cost about as
much CPU as everything else the agent does; the bumble backend hands reports of one
complete advertisement to ``parse_report`` instead, and everything else to bumble.
"""

import struct
from typing import Final

from edge.drivers.ble.radio import Advertisement, short_uuid

_EVENT: Final = 0x04
"""The H4 packet indicator of an HCI event."""
_LE_META: Final = 0x3E
_LEGACY: Final = 0x02
_EXTENDED: Final = 0x0D
_DATA_COMPLETE_MASK: Final = 0x60
"""Bits 5-6 of an extended report's event type: 0 when the data is complete."""
_RSSI_UNAVAILABLE: Final = 127

_NAMES: Final = frozenset({0x08, 0x09})
_UUID16_LISTS: Final = frozenset({0x02, 0x03})
_UUID128_LISTS: Final = frozenset({0x06, 0x07})
_SERVICE_DATA_16: Final = 0x16
_SERVICE_DATA_128: Final = 0x21
_MANUFACTURER: Final = 0xFF

Report = tuple[Advertisement, int]
"""An advertisement and the advertiser's address type (0 public, 1 random, ...)."""


def parse_report(packet: bytes) -> Report | None:
    """The advertisement in an H4 event packet holding one complete advertising report,
    or None for anything else (bumble's host then takes it)."""
    if len(packet) < 5 or packet[0] != _EVENT or packet[1] != _LE_META or packet[4] != 1:
        return None
    subevent = packet[3]
    if subevent == _LEGACY:
        # subevent, num_reports, event_type, address_type, address[6], length, data, rssi
        if len(packet) < 14:
            return None
        address_type, length = packet[6], packet[13]
        data = packet[14 : 14 + length]
        if len(packet) < 15 + length:
            return None
        rssi = struct.unpack_from("<b", packet, 14 + length)[0]
        address = packet[7:13]
    elif subevent == _EXTENDED:
        # ..., event_type[2], address_type, address[6], phys[2], sid, tx_power, rssi,
        # interval[2], direct_address_type, direct_address[6], length, data
        if len(packet) < 29 or packet[5] & _DATA_COMPLETE_MASK:
            return None
        address_type, length = packet[7], packet[28]
        data = packet[29 : 29 + length]
        if len(data) != length:
            return None
        rssi = struct.unpack_from("<b", packet, 18)[0]
        address = packet[8:14]
    else:
        return None
    mac = ":".join(f"{byte:02X}" for byte in reversed(address))
    return advertisement(mac, None if rssi == _RSSI_UNAVAILABLE else rssi, data), address_type


def advertisement(address: str, rssi: int | None, data: bytes) -> Advertisement:
    """The AD structures of ``data``; a truncated structure ends the walk."""
    name: str | None = None
    services: list[str] = []
    manufacturer: dict[int, bytes] = {}
    service_data: dict[str, bytes] = {}
    offset = 0
    while offset < len(data):
        length = data[offset]
        if length == 0 or offset + 1 + length > len(data):
            break
        kind = data[offset + 1]
        value = data[offset + 2 : offset + 1 + length]
        offset += 1 + length
        if kind in _NAMES:
            name = value.decode("utf-8", "replace")
        elif kind in _UUID16_LISTS:
            services += (f"{value[i + 1]:02x}{value[i]:02x}" for i in range(0, len(value) - 1, 2))
        elif kind in _UUID128_LISTS:
            services += (
                short_uuid(value[i : i + 16][::-1].hex()) for i in range(0, len(value) - 15, 16)
            )
        elif kind == _MANUFACTURER and len(value) >= 2:
            manufacturer[value[0] | value[1] << 8] = value[2:]
        elif kind == _SERVICE_DATA_16 and len(value) >= 2:
            service_data[f"{value[1]:02x}{value[0]:02x}"] = value[2:]
        elif kind == _SERVICE_DATA_128 and len(value) >= 16:
            service_data[short_uuid(value[:16][::-1].hex())] = value[16:]
    return Advertisement(address, rssi, name, tuple(services), manufacturer, service_data)
