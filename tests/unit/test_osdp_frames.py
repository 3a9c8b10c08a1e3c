"""OSDP packet headers read from the side, from golden bytes (SIA OSDP 2.2, section 5)."""

import pytest

from edge.drivers.osdp.frames import CMD_ID, CMD_POLL, FrameReader, PdId, command, crc16
from edge.drivers.osdp.scan import AddressListError, parse_addresses, render_pdid

# osdp_PDID from reader 1, as libosdp's peripheral device sends it (CRC, sequence 0).
PDID = bytes.fromhex("53 81 14 00 04 45 4a 4e 41 52 01 01 00 00 52 01 02 00 22 6d")
# osdp_ACK from reader 1 (sequence 1).
ACK = bytes.fromhex("53 81 08 00 05 40") + crc16(bytes.fromhex("53 81 08 00 05 40")).to_bytes(
    2, "little"
)
FAKE_START = bytes.fromhex("53 00 00 04")
"""Noise that reads as a packet of 1024 bytes for address 0."""


def test_commands_carry_the_crc_libosdp_checks() -> None:
    assert command(5, CMD_POLL) == bytes.fromhex("53 05 08 00 04 60 bc 89")
    assert crc16(PDID[:-2]).to_bytes(2, "little") == PDID[-2:]
    assert crc16(b"123456789") == 0xE5CC  # CRC-16/AUG-CCITT's check value
    assert command(5, CMD_ID, b"\x00", sequence=1)[4] == 0x05


def test_frames_survive_noise_and_arrive_in_pieces() -> None:
    reader = FrameReader()
    stream = b"\xff\x00" + PDID + b"\x53\x01"
    frames = [frame for byte in stream for frame in reader.feed(bytes([byte]))]
    (frame,) = frames
    assert (frame.address, frame.reply, frame.code, frame.secure) == (1, True, 0x45, False)
    assert frame.packet == PDID
    assert render_pdid(frame.data) == (
        "vendor 414E4A, model 82, version 1, serial 52000001, firmware 1.2.0"
    )
    assert render_pdid(frame.data[:5]) == "identity of 5 bytes: 4a 4e 41 52 01"
    assert reader.bad_bytes == 2
    assert reader.dropped == 0


def test_pd_id_fields() -> None:
    assert PdId.parse(PDID[6:-2]) == PdId(0x414E4A, 82, 1, 0x52000001, (1, 2, 0))
    assert PdId.parse(PDID[6:10]) is None


def test_a_corrupt_packet_is_dropped_and_the_next_one_read() -> None:
    reader = FrameReader()
    assert reader.feed(PDID[:-1] + bytes([PDID[-1] ^ 0xFF])) == []
    assert reader.dropped == 1
    assert reader.bad_bytes == len(PDID)
    assert [frame.packet for frame in reader.feed(PDID)] == [PDID]


def test_a_fake_start_does_not_hold_back_the_reply_behind_it() -> None:
    reader = FrameReader()
    assert reader.feed(FAKE_START) == []
    assert reader.feed(b"\x00" + ACK[:4]) == []  # still maybe 1024 bytes coming
    (frame,) = reader.feed(ACK[4:])
    assert frame.packet == ACK
    assert (reader.bad_bytes, reader.dropped) == (len(FAKE_START) + 1, 1)


def test_a_reply_cut_short_is_dropped_when_the_line_turns() -> None:
    reader = FrameReader()
    assert reader.feed(PDID[:10]) == []
    reader.discard()
    assert (reader.bad_bytes, reader.dropped) == (10, 1)
    assert [frame.packet for frame in reader.feed(ACK)] == [ACK]
    reader.discard()
    assert reader.dropped == 1


def test_a_stray_start_byte_is_noise_not_a_dropped_packet() -> None:
    reader = FrameReader()
    reader.feed(b"\x53\x81")
    reader.discard()
    assert (reader.bad_bytes, reader.dropped) == (2, 0)


def test_address_lists() -> None:
    assert parse_addresses("0-3, 9,2") == [0, 1, 2, 3, 9]


@pytest.mark.parametrize(
    ("text", "problem"), [("5-1", "backwards"), ("127", "0-126"), ("x", "not an address")]
)
def test_bad_address_lists(text: str, problem: str) -> None:
    with pytest.raises(AddressListError, match=problem):
        parse_addresses(text)
