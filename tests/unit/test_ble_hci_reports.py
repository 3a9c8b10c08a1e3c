"""Advertising reports parsed from HCI event bytes written here from the Core
specification (5.4, Vol 4, Part E, 7.7.65.2 LE Advertising Report and 7.7.65.13 LE
Extended Advertising Report), and AD structures (Core Supplement, Part A, 1.x).

An H4 event packet: 0x04, event code 0x3E (LE Meta), parameter length, subevent code,
then the subevent's parameters; addresses are little-endian, RSSI a signed byte.
"""

from __future__ import annotations

from edge.drivers.ble.hci_reports import advertisement, parse_report

# AD structures: length, type, value. Flags 0x06; complete local name "ANJU-BB-0001";
# manufacturer data of company 0xFFFF: 02 57 47 05.
NAME = b"ANJU-BB-0001"
AD = (
    bytes([0x02, 0x01, 0x06])
    + bytes([1 + len(NAME), 0x09])
    + NAME
    + bytes([0x07, 0xFF, 0xFF, 0xFF, 0x02, 0x57, 0x47, 0x05])
)
ADDRESS_LE = bytes([0x01, 0x00, 0x00, 0x00, 0xB1, 0xF0])  # F0:B1:00:00:00:01


def legacy(data: bytes, rssi: int = -60, address_type: int = 0x01) -> bytes:
    params = (
        bytes([0x02, 0x01, 0x03, address_type])  # subevent, 1 report, ADV_NONCONN_IND
        + ADDRESS_LE
        + bytes([len(data)])
        + data
        + rssi.to_bytes(1, "little", signed=True)
    )
    return bytes([0x04, 0x3E, len(params)]) + params


def extended(data: bytes, *, event_type: int = 0x0010, rssi: int = -71) -> bytes:
    params = (
        bytes([0x0D, 0x01])
        + event_type.to_bytes(2, "little")
        + bytes([0x01])  # random address
        + ADDRESS_LE
        + bytes([0x01, 0x00, 0xFF, 0x7F])  # LE 1M, no secondary PHY, no SID, no TX power
        + rssi.to_bytes(1, "little", signed=True)
        + bytes([0x00, 0x00, 0x00])  # no periodic advertising, direct address type
        + bytes(6)  # direct address
        + bytes([len(data)])
        + data
    )
    return bytes([0x04, 0x3E, len(params)]) + params


def test_a_legacy_report_gives_its_advertiser_data_and_rssi() -> None:
    report = parse_report(legacy(AD))
    assert report is not None
    heard, address_type = report
    assert (heard.address, heard.rssi, heard.name, address_type) == (
        "F0:B1:00:00:00:01",
        -60,
        "ANJU-BB-0001",
        1,
    )
    assert heard.manufacturer_data == {0xFFFF: bytes([0x02, 0x57, 0x47, 0x05])}


def test_an_extended_report_of_complete_data_is_read_too() -> None:
    report = parse_report(extended(AD))
    assert report is not None
    assert (report[0].address, report[0].rssi) == ("F0:B1:00:00:00:01", -71)
    assert report[0].manufacturer_data[0xFFFF] == bytes([0x02, 0x57, 0x47, 0x05])


def test_what_the_fast_path_does_not_read_goes_to_bumble() -> None:
    # Data status 01 (incomplete, more to come) in bits 5-6 of the event type.
    assert parse_report(extended(AD, event_type=0x0010 | 0x20)) is None
    two_reports = bytearray(legacy(AD))
    two_reports[4] = 2
    assert parse_report(bytes(two_reports)) is None
    assert parse_report(legacy(AD)[:-3]) is None  # cut short
    command_complete = bytes([0x04, 0x0E, 0x04, 0x01, 0x0C, 0x20, 0x00])
    assert parse_report(command_complete) is None
    acl = bytes([0x02, 0x40, 0x00, 0x01, 0x00, 0x00])
    assert parse_report(acl) is None


def test_rssi_127_means_not_available() -> None:
    report = parse_report(legacy(AD, rssi=127))
    assert report is not None
    assert report[0].rssi is None


def test_service_lists_and_service_data_in_either_uuid_size() -> None:
    vendor = bytes.fromhex("7a1e00015c3b4e8a9d2f6b0c4a8e1f30")[::-1]
    data = (
        bytes([0x05, 0x03, 0x0D, 0x18, 0x0F, 0x18])  # complete list: 180d, 180f
        + bytes([0x11, 0x07])
        + vendor
        + bytes([0x05, 0x16, 0x0F, 0x18, 0x57, 0x01])  # service data 180f: 57 01
    )
    heard = advertisement("F0:A1:00:00:00:01", -50, data)
    assert heard.services == ("180d", "180f", "7a1e0001-5c3b-4e8a-9d2f-6b0c4a8e1f30")
    assert heard.service_data == {"180f": bytes([0x57, 0x01])}


def test_a_truncated_structure_ends_the_walk_without_raising() -> None:
    data = bytes([0x02, 0x01, 0x06]) + bytes([0x09, 0xFF, 0xFF, 0xFF])  # says 9, has 3
    heard = advertisement("F0:A1:00:00:00:01", None, data)
    assert heard.manufacturer_data == {}
    assert advertisement("F0:A1:00:00:00:01", None, bytes([0x00, 0x01])).name is None
