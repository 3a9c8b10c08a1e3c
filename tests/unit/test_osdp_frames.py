"""OSDP packet headers read from the side, from golden bytes (SIA OSDP 2.2, section 5)."""

import pytest

from edge.drivers.osdp.frames import CMD_ID, CMD_POLL, FrameReader, command, crc16, whole_packets
from edge.drivers.osdp.scan import AddressListError, parse_addresses, render_pdid

# osdp_PDID from reader 1, as libosdp's peripheral device sends it (CRC, sequence 0).
PDID = bytes.fromhex("53 81 14 00 04 45 4a 4e 41 52 01 01 00 00 52 01 02 00 22 6d")


def test_commands_carry_the_crc_libosdp_checks() -> None:
    assert command(5, CMD_POLL) == bytes.fromhex("53 05 08 00 04 60 bc 89")
    assert crc16(PDID[:-2]).to_bytes(2, "little") == PDID[-2:]
    assert command(5, CMD_ID, b"\x00", sequence=1)[4] == 0x05


def test_frames_survive_noise_and_arrive_in_pieces() -> None:
    reader = FrameReader()
    stream = b"\xff\x00" + PDID + b"\x53\x01"
    frames = [frame for byte in stream for frame in reader.feed(bytes([byte]))]
    (frame,) = frames
    assert (frame.address, frame.reply, frame.code, frame.secure) == (1, True, 0x45, False)
    assert render_pdid(frame.data) == (
        "vendor 414E4A, model 82, version 1, serial 52000001, firmware 1.2.0"
    )
    assert reader.bad_bytes == 2


def test_a_corrupt_packet_is_skipped() -> None:
    reader = FrameReader()
    assert reader.feed(PDID[:-1] + b"\x00") == []
    assert reader.feed(PDID) != []


def test_only_whole_packets_are_handed_on() -> None:
    assert whole_packets(PDID[:10]) == 0
    assert whole_packets(b"\x00\x01" + PDID[:10]) == 2
    assert whole_packets(PDID + PDID[:3]) == len(PDID)


def test_address_lists() -> None:
    assert parse_addresses("0-3, 9,2") == [0, 1, 2, 3, 9]


@pytest.mark.parametrize(
    ("text", "problem"), [("5-1", "backwards"), ("127", "0-126"), ("x", "not an address")]
)
def test_bad_address_lists(text: str, problem: str) -> None:
    with pytest.raises(AddressListError, match=problem):
        parse_addresses(text)
