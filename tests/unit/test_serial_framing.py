"""Serial frame readers fed golden bytes, for every framing a profile can declare.

Checksums are checked against the published check values of the CRC catalogue
(reveng.sourceforge.io/crc-catalogue) for the nine bytes "123456789". Binary frames
are written out byte by byte; text lines as the devices' manuals would print them.
"""

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge.drivers.serial.checksums import crc16_ccitt, crc16_modbus, sum8, xor8
from edge.drivers.serial.framing import FrameFault, FrameReader, Record, Value, reader_for
from edge.drivers.serial.records import RecordPoints
from schemas.errors import ProfileError
from schemas.profile import DeviceProfile, load_profile
from schemas.protocols.serial import SerialSettings

CAMERA = Path(__file__).resolve().parents[2] / "device_profiles/camera/anju-camera-serial.yaml"

Item = Record | FrameFault


def serial(framing: dict[str, Any], records: dict[str, Any], **more: Any) -> SerialSettings:
    return SerialSettings.model_validate({"framing": framing, "records": records, **more})


NMEA = serial({}, {"PCNT": ["channel", "zone", "count"], "EVT": ["channel", "code", "zone"]})
REGEX = serial(
    {"mode": "regex", "pattern": r"(?P<type>ZONE|ARM) (?P<zone>\d+) (?P<state>\w+)"},
    {"ZONE": ["zone", "state"], "ARM": ["state"]},
    text_fields=["zone"],
)
KEYVALUE = serial(
    {"mode": "keyvalue", "type_key": "ev", "terminator": "\r\n"},
    {"ALARM": ["zone", "state"], "TEMP": ["sensor", "celsius"]},
    text_fields=["zone"],
)
JSON = serial({"mode": "json", "type_key": "type"}, {"alarm": ["zone", "open", "level"]})
# AA 55, LEN (counts code and data), CODE, data..., CRC-16/MODBUS of LEN..data, low byte first.
LENGTH_CRC = serial(
    {
        "mode": "binary",
        "start": "AA 55",
        "length": {"offset": 2, "counts": "payload"},
        "type_code": {"offset": 3},
        "checksum": "crc16-modbus",
    },
    {
        "STATUS": {
            "code": 0x01,
            "fields": {
                "zone": {"offset": 4, "type": "u16be"},
                "armed": {"offset": 6, "type": "bool", "bit": 0},
                "temp": {"offset": 7, "type": "s16le"},
            },
        },
        "PING": {"code": 0x02, "fields": {"seq": {"offset": 4, "type": "u8"}}},
    },
)
STATUS = bytes.fromhex("AA 55 06 01 0007 01 38FF 7FE5")
# STX, kind, zone, open, XOR of kind..open, ETX.
STX_ETX = serial(
    {"mode": "binary", "start": "02", "end": "03", "checksum": "xor8", "max_frame_bytes": 16},
    {
        "DOOR": {
            "fields": {
                "kind": {"offset": 1, "type": "u8"},
                "zone": {"offset": 2, "type": "u8"},
                "open": {"offset": 3, "type": "bool"},
            }
        }
    },
)
DOOR = bytes.fromhex("02 10 05 01 14 03")


def fed_at_once(settings: SerialSettings, data: bytes) -> list[Item]:
    return reader_for(settings).feed(data)


def fed_bytewise(settings: SerialSettings, data: bytes) -> list[Item]:
    reader = reader_for(settings)
    return [item for i in range(len(data)) for item in reader.feed(data[i : i + 1])]


def read(settings: SerialSettings, data: bytes) -> list[Item]:
    """What the reader makes of ``data``, checked to be the same however it is chunked."""
    whole = fed_at_once(settings, data)
    assert fed_bytewise(settings, data) == whole
    return whole


def kinds(items: Sequence[Item]) -> list[str]:
    return [item.type if isinstance(item, Record) else item.kind for item in items]


def faults(items: Sequence[Item]) -> list[tuple[str, str]]:
    """Each item's kind and reason, which must all be faults."""
    assert all(isinstance(item, FrameFault) for item in items), items
    return [(item.kind, item.reason) for item in items if isinstance(item, FrameFault)]


def fields(items: Sequence[Item]) -> list[Mapping[str, Value]]:
    """Each item's fields, which must all be records."""
    assert all(isinstance(item, Record) for item in items), items
    return [item.fields for item in items if isinstance(item, Record)]


def nmea(body: str) -> bytes:
    return f"${body}*{xor8(body.encode()):02X}\r\n".encode()


# --- checksums --------------------------------------------------------------------


def test_checksums_give_the_published_check_values() -> None:
    assert crc16_modbus(b"123456789") == 0x4B37
    assert crc16_ccitt(b"123456789") == 0x29B1
    assert xor8(b"123456789") == 0x31
    assert sum8(b"123456789") == 0xDD  # 477 mod 256
    assert xor8(b"") == 0
    assert xor8(b"\x5a") == 0x5A


# --- fields (NMEA-like) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "example"),
    [
        ("anju-camera-serial", r"^#\s+(\$[A-Z]+,.*\*[0-9A-F]{2})$"),
        ("anju-camera-jsonl", r"^#\s+(\{.*\})$"),
    ],
)
def test_camera_profiles_read_their_documented_examples(name: str, example: str) -> None:
    path = CAMERA.with_name(f"{name}.yaml")
    camera = load_profile(path)
    settings = camera.settings_as(SerialSettings)
    assert settings is not None
    lines = [f"{line}\r\n".encode() for line in re.findall(example, path.read_text(), re.M)]
    assert len(lines) >= 4
    items = read(settings, b"".join(lines))
    assert [item.raw for item in items if isinstance(item, Record)] == lines, items
    points = RecordPoints(camera)
    assert all(points.sample(item) for item in items if isinstance(item, Record))


def test_camera_serial_record_fields_and_points() -> None:
    camera = load_profile(CAMERA)
    settings = camera.settings_as(SerialSettings)
    assert settings is not None
    items = read(settings, b"$PCNT,1,Z1,7*48\r\n$EVT,3,TAMPER,*47\r\n")
    assert items == [
        Record("PCNT", {"channel": 1, "zone": "Z1", "count": 7}, b"$PCNT,1,Z1,7*48\r\n"),
        Record("EVT", {"channel": 3, "code": "TAMPER", "zone": ""}, b"$EVT,3,TAMPER,*47\r\n"),
    ]
    points = RecordPoints(camera)
    assert isinstance(items[0], Record)
    assert points.sample(items[0]) == {"people_count": 7}
    assert points.where("people_count") == "PCNT field 3 (count)"
    assert points.where("event_zone") == "EVT field 3 (zone)"


def test_fields_noise_is_one_fault_and_the_next_start_resyncs() -> None:
    items = read(NMEA, b"\x00\xffgarbage\r\n" + nmea("PCNT,1,Z1,7") + b"zz" + nmea("EVT,1,LINE,L1"))
    assert kinds(items) == ["noise", "PCNT", "noise", "EVT"]
    assert items[0] == FrameFault("noise", "11 bytes outside any frame", b"\x00\xffgarbage\r\n")


def test_fields_bad_checksum_is_refused() -> None:
    items = read(NMEA, b"$PCNT,1,Z1,7*49\r\n$PCNT,1,Z1,7\r\n" + nmea("PCNT,1,Z1,8"))
    assert items[0] == FrameFault("checksum", "checksum 49, computed 48", b"$PCNT,1,Z1,7*49\r\n")
    assert kinds(items) == ["checksum", "malformed", "PCNT"]


def test_fields_frame_cut_by_a_new_start_is_truncated() -> None:
    items = read(NMEA, b"$PCNT,1,Z" + nmea("PCNT,1,Z1,9"))
    assert items[0] == FrameFault(
        "truncated", "frame cut short by the start of another", b"$PCNT,1,Z"
    )
    assert fields(items[1:]) == [{"channel": 1, "zone": "Z1", "count": 9}]


def test_fields_frame_too_long_is_one_fault_then_the_next_start() -> None:
    long = b"$PCNT," + b"9" * 600 + b"*00\r\n"
    items = read(NMEA, long + b"tail of it\r\n" + nmea("PCNT,1,Z1,3"))
    assert kinds(items) == ["truncated", "PCNT"]
    assert items[0] == FrameFault("truncated", "no terminator within 512 bytes", long[:64])


def test_fields_unknown_record_and_wrong_field_count() -> None:
    items = read(NMEA, nmea("GPS,1,2") + nmea("PCNT,1,Z1") + nmea("PCNT,1,Z1,7,8"))
    assert kinds(items) == ["unknown_record", "malformed", "malformed"]
    assert faults(items[:2]) == [
        ("unknown_record", "record type 'GPS' is not in the profile"),
        ("malformed", "PCNT has 2 fields, the profile lays out 3"),
    ]


def test_fields_text_reads_as_numbers_only_where_it_is_one() -> None:
    items = read(NMEA, nmea("PCNT,-2,007,1.5") + nmea("PCNT,+3,1e3,.5") + nmea("PCNT,1.2.3,x, 4"))
    assert fields(items) == [
        {"channel": -2, "zone": 7, "count": 1.5},
        {"channel": 3, "zone": "1e3", "count": 0.5},
        {"channel": "1.2.3", "zone": "x", "count": " 4"},
    ]


def test_reset_reports_the_partial_frame_and_starts_clean() -> None:
    reader = reader_for(NMEA)
    assert reader.feed(b"xy$PCNT,1,Z") == [FrameFault("noise", "2 bytes outside any frame", b"xy")]
    assert reader.reset() == [
        FrameFault("truncated", "frame cut short: the port was reset", b"$PCNT,1,Z")
    ]
    assert reader.reset() == []
    assert kinds(reader.feed(b"1,7*48\r\n" + nmea("PCNT,1,Z1,7"))) == ["noise", "PCNT"]


# --- regex, key=value, JSON lines -------------------------------------------------


def test_regex_lines_with_text_fields_kept() -> None:
    items = read(REGEX, b"ZONE 007 open\r\nARM 1 away\n\n  \nZONE x open\nBYE 1 now\n")
    assert items[:2] == [
        Record("ZONE", {"zone": "007", "state": "open"}, b"ZONE 007 open\r\n"),
        Record("ARM", {"state": "away"}, b"ARM 1 away\n"),
    ]
    assert kinds(items[2:]) == ["malformed", "malformed"]
    assert faults(items[2:3]) == [("malformed", "line does not match the pattern")]


def test_regex_with_a_fixed_record_and_optional_groups() -> None:
    settings = serial(
        {
            "mode": "regex",
            "pattern": r"T=(?P<temp>-?\d+\.\d)( H=(?P<humidity>\d+))?",
            "record": "TH",
        },
        {"TH": ["temp", "humidity"]},
    )
    assert fields(read(settings, b"T=21.5 H=40\nT=-3.0\n")) == [
        {"temp": 21.5, "humidity": 40},
        {"temp": -3.0, "humidity": ""},
    ]


def test_text_line_too_long_is_one_fault_then_the_next_line() -> None:
    settings = serial(
        {"mode": "regex", "pattern": r"(?P<type>A) (?P<v>\d+)", "max_frame_bytes": 16}, {"A": ["v"]}
    )
    exact = b"A 1234567890123\n"  # 16 bytes with its terminator: the longest allowed
    items = read(settings, exact + b"A 12345678901234\nA 1\n" + b"B" * 40 + b"\nA 2\n")
    assert kinds(items) == ["A", "truncated", "A", "truncated", "A"]
    assert items[1] == FrameFault("truncated", "no terminator within 16 bytes", b"A 12345678901234")


def test_keyvalue_lines() -> None:
    items = read(
        KEYVALUE,
        b"ev=ALARM zone=007 state=open extra=1\r\n"
        b"ev=TEMP\tsensor=2 celsius=-4.5\r\n"
        b"ev=ALARM zone=1\r\n"
        b"ev=DOOR zone=1\r\n"
        b"zone=1 state=x\r\n"
        b"ev=ALARM zone state=x\r\n",
    )
    assert items[:2] == [
        Record("ALARM", {"zone": "007", "state": "open"}, items[0].raw),
        Record("TEMP", {"sensor": 2, "celsius": -4.5}, items[1].raw),
    ]
    assert faults(items[2:]) == [
        ("malformed", "ALARM has no 'state'"),
        ("unknown_record", "record type 'DOOR' is not in the profile"),
        ("malformed", "no 'ev' to say the record type"),
        ("malformed", "'zone' is not key=value"),
    ]


def test_json_lines_keep_json_types_and_type_text_like_text() -> None:
    items = read(
        JSON,
        b'{"type": "alarm", "zone": "007", "open": true, "level": 2.5, "x": [1]}\n'
        b'{"type": "alarm", "zone": 3, "open": false, "level": "4"}\n'
        b'{"type": "alarm", "zone": null, "open": true, "level": 1}\n'
        b'{"type": "alarm", "open": true, "level": 1}\n'
        b'{"type": "alarm", "zone": 1, "open": true, "level": NaN}\n'
        b'{"type": "siren"}\n[1, 2]\n{"type": 7}\n{"type": \n\xff\xfe\n',
    )
    assert fields(items[:2]) == [
        {"zone": 7, "open": True, "level": 2.5},
        {"zone": 3, "open": False, "level": 4},
    ]
    assert faults(items[2:]) == [
        ("malformed", "alarm has a NoneType for 'zone'"),
        ("malformed", "alarm has no 'zone'"),
        ("malformed", "not a JSON document"),
        ("unknown_record", "record type 'siren' is not in the profile"),
        ("malformed", "not a JSON object"),
        ("malformed", "no text 'type' to say the record type"),
        ("malformed", "not a JSON document"),
        ("malformed", "not UTF-8 text"),
    ]


def test_line_reset_reports_a_partial_line() -> None:
    reader = reader_for(JSON)
    assert reader.feed(b'{"type": "al') == []
    assert kinds(reader.reset()) == ["truncated"]
    assert reader.feed(b'arm"}\n') == [FrameFault("malformed", "not a JSON document", b'arm"}\n')]


# --- binary -----------------------------------------------------------------------


def test_binary_length_prefixed_frame_with_typed_fields() -> None:
    items = read(LENGTH_CRC, STATUS)
    assert items == [Record("STATUS", {"zone": 7, "armed": True, "temp": -200}, STATUS)]


def test_binary_bad_checksum_is_refused_and_a_frame_behind_a_false_start_found() -> None:
    corrupt = bytearray(STATUS)
    corrupt[5] ^= 0x01
    # A false start whose length byte claims the frame reaching into the real one.
    false_start = bytes.fromhex("AA 55 03 02")
    items = read(LENGTH_CRC, bytes(corrupt) + false_start + STATUS)
    assert kinds(items) == ["checksum", "checksum", "STATUS"]
    assert items[0] == FrameFault("checksum", "checksum E57F, computed 197E", bytes(corrupt))
    assert items[2] == Record("STATUS", {"zone": 7, "armed": True, "temp": -200}, STATUS)


def test_binary_impossible_length_skips_one_byte_and_hunts_again() -> None:
    items = read(LENGTH_CRC, bytes.fromhex("AA 55 00") + b"junk" + STATUS)
    assert kinds(items) == ["malformed", "noise", "STATUS"]
    assert faults(items[:1]) == [("malformed", "length 0 makes a 5-byte frame, outside 6-512")]
    assert items[1] == FrameFault("noise", "4 bytes outside any frame", b"junk")


def test_binary_unknown_code_and_a_frame_too_short_for_its_fields() -> None:
    def frame(payload: bytes) -> bytes:
        body = bytes([len(payload)]) + payload
        return b"\xaa\x55" + body + crc16_modbus(body).to_bytes(2, "little")

    ping = frame(b"\x02\x2a")
    items = read(LENGTH_CRC, frame(b"\x09\x00") + frame(b"\x01\x00\x07") + ping)
    assert faults(items[:2]) == [
        ("unknown_record", "type code 0x09 is not in the profile"),
        ("malformed", "STATUS needs 9 bytes before the checksum, the frame has 6"),
    ]
    assert items[2] == Record("PING", {"seq": 42}, ping)


def test_binary_float_that_is_not_a_number_refuses_the_record() -> None:
    settings = serial(
        {"mode": "binary", "start": "68", "end": "16", "checksum": "none"},
        {"METER": {"fields": {"kwh": {"offset": 1, "type": "f32le"}}}},
    )
    nan, one = b"\x68\x00\x00\xc0\x7f\x16", b"\x68\x00\x00\x80\x3f\x16"
    assert read(settings, nan + one) == [
        FrameFault("malformed", "METER kwh is nan", nan),
        Record("METER", {"kwh": 1.0}, one),
    ]


def test_binary_start_and_end_bytes() -> None:
    items = read(STX_ETX, b"\x03\x03" + DOOR + bytes.fromhex("02 10 05 01 15 03") + DOOR)
    door = Record("DOOR", {"kind": 0x10, "zone": 5, "open": True}, DOOR)
    assert items == [
        FrameFault("noise", "2 bytes outside any frame", b"\x03\x03"),
        door,
        FrameFault("checksum", "checksum 15, computed 14", bytes.fromhex("02 10 05 01 15 03")),
        door,
    ]


def test_binary_without_end_bytes_in_reach_is_one_fault() -> None:
    items = read(STX_ETX, b"\x02" + b"\x00" * 30 + DOOR)
    # The frame's length is unknown, so what lies past the limit is noise.
    assert kinds(items) == ["truncated", "noise", "DOOR"]
    assert items[0] == FrameFault(
        "truncated", "no end bytes within 16 bytes", b"\x02" + b"\x00" * 15
    )


def test_binary_reset_reports_the_partial_frame() -> None:
    reader = reader_for(LENGTH_CRC)
    assert reader.feed(STATUS[:5]) == []
    assert kinds(reader.reset()) == ["truncated"]
    assert kinds(reader.feed(STATUS[5:] + STATUS)) == ["noise", "STATUS"]


def read_until_quiet(settings: SerialSettings, data: bytes) -> list[Item]:
    """What ``data`` gives and then ``expire`` (the line went quiet), however chunked."""
    whole = reader_for(settings)
    items = whole.feed(data) + whole.expire()
    bytewise = reader_for(settings)
    fed = [item for i in range(len(data)) for item in bytewise.feed(data[i : i + 1])]
    assert fed + bytewise.expire() == items
    assert whole.expire() == []
    assert whole.reset() == []
    return items


def test_binary_false_start_holds_frames_back_until_the_line_goes_quiet() -> None:
    # AA 55 and a length of 240: the frame would run 245 bytes, and three real ones
    # follow it. Fed alone they wait for bytes that never come; quiet ends the wait.
    false_start = bytes.fromhex("AA 55 F0")
    reader = reader_for(LENGTH_CRC)
    assert reader.feed(false_start + STATUS * 3) == []
    status = Record("STATUS", {"zone": 7, "armed": True, "temp": -200}, STATUS)
    assert reader.expire() == [
        FrameFault(
            "truncated", "the line went quiet after 36 bytes of a 245-byte frame", false_start
        ),
        status,
        status,
        status,
    ]
    assert reader.feed(STATUS) == [status]


def test_binary_expire_ends_every_pending_start_and_leaves_noise_as_noise() -> None:
    false_start = bytes.fromhex("AA 55 F0")
    items = read_until_quiet(LENGTH_CRC, false_start + STATUS + false_start + STATUS + b"\xaa")
    assert kinds(items) == ["truncated", "STATUS", "truncated", "STATUS", "noise"]
    assert items[4] == FrameFault("noise", "1 bytes outside any frame", b"\xaa")
    # With end bytes: a start whose end never comes.
    assert read_until_quiet(STX_ETX, b"\x02\x10") == [
        FrameFault(
            "truncated", "the line went quiet after 2 bytes, before the frame's end", b"\x02\x10"
        )
    ]


def test_text_framings_are_not_cut_by_a_pause() -> None:
    reader = reader_for(NMEA)
    assert reader.feed(b"xx") == []
    assert reader.expire() == [FrameFault("noise", "2 bytes outside any frame", b"xx")]
    assert reader.feed(b"$PCNT,1,Z1") == []
    assert reader.expire() == []
    assert fields(reader.feed(b",7*48\r\n")) == [{"channel": 1, "zone": "Z1", "count": 7}]
    line = reader_for(JSON)
    assert line.feed(b'{"type": "alarm", ') == []
    assert line.expire() == []
    assert fields(line.feed(b'"zone": "1", "open": true, "level": 2}\n')) == [
        {"zone": 1, "open": True, "level": 2}
    ]


def test_binary_points_say_where_they_live() -> None:
    profile = DeviceProfile.model_validate(
        {
            "id": "alarm-panel",
            "kind": "door",
            "protocol": "serial",
            "manufacturer": "Test",
            "model": "T1",
            "serial": LENGTH_CRC.model_dump(mode="json"),
            "points": [
                {"name": "zone", "serial": {"record": "STATUS", "field": "zone"}},
                {"name": "armed", "serial": {"record": "STATUS", "field": "armed"}},
                {"name": "seq", "serial": {"record": "PING", "field": "seq"}},
            ],
        }
    )
    points = RecordPoints(profile)
    assert points.where("zone") == "STATUS byte 4 u16be (zone)"
    assert points.where("armed") == "STATUS byte 6 bit 0 (armed)"
    record = read(LENGTH_CRC, STATUS)[0]
    assert isinstance(record, Record)
    assert points.sample(record) == {"zone": 7, "armed": True}
    with pytest.raises(KeyError):
        points.where("nothing")


# --- the profile's settings -------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "loc", "message"),
    [
        ({"framing": {"mode": "xml"}, "records": {"A": ["v"]}}, ("framing",), "framing.mode must"),
        (
            {"framing": {"mode": "binary", "start": "AA", "checksum": "xor8"}, "records": {}},
            ("framing", "binary"),
            "give 'end' bytes, a 'length' prefix, or both",
        ),
        (
            {"framing": {"mode": "binary", "start": "0x02", "end": "03", "checksum": "none"}},
            ("framing", "binary", "start"),
            "should match pattern",
        ),
        (
            {"framing": {"mode": "json", "type_key": "t", "record": "A"}, "records": {"A": ["v"]}},
            ("framing", "json"),
            "give 'type_key' or 'record', not both",
        ),
        (
            {"framing": {"mode": "regex", "pattern": "(?P<type>A"}, "records": {"A": ["v"]}},
            ("framing", "regex", "pattern"),
            "not a regular expression",
        ),
        (
            {
                "framing": {"mode": "regex", "pattern": "(?P<type>A) (?P<v>.)"},
                "records": {"A": ["w"]},
            },
            (),
            "records.A: the pattern has no group named 'w'",
        ),
        (
            {**LENGTH_CRC.model_dump(mode="json"), "records": {"S": ["v"]}},
            (),
            "records.S: a binary framing lays a record out as",
        ),
        (
            {"records": {"S": {"code": 1, "fields": {"v": {"offset": 1, "type": "u8"}}}}},
            (),
            "records.S: a fields framing lists a record's field names",
        ),
        (
            {
                **LENGTH_CRC.model_dump(mode="json"),
                "records": {
                    "S": {"code": 1, "fields": {"v": {"offset": 1, "type": "u8", "bit": 2}}}
                },
            },
            ("records", "S", "binary", "fields", "v"),
            "'bit' applies to type bool, not u8",
        ),
        (
            {
                **LENGTH_CRC.model_dump(mode="json"),
                "records": {
                    "S": {"code": 1, "fields": {"v": {"offset": 4, "type": "u8"}}},
                    "T": {"code": 1, "fields": {"v": {"offset": 4, "type": "u8"}}},
                },
            },
            (),
            "records.T: code 1 is also S's",
        ),
        (
            {"records": {"A": ["v"]}, "text_fields": ["w"]},
            (),
            "text_fields: no record has a field 'w'",
        ),
        (
            {
                "framing": {
                    "mode": "binary",
                    "start": "7E",
                    "length": {"offset": 1, "counts": "frame"},
                    "checksum": "none",
                },
            },
            ("framing", "binary"),
            "a frame with neither a checksum nor end bytes cannot be told from noise",
        ),
    ],
)
def test_bad_settings_name_the_field(
    settings: dict[str, Any], loc: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        SerialSettings.model_validate({"records": {"A": ["v"]}, **settings})
    error = caught.value.errors()[0]
    assert error["loc"] == loc
    assert message in error["msg"]


def test_the_camera_profile_keeps_its_shape_as_the_fields_mode(tmp_path: Path) -> None:
    settings = load_profile(CAMERA).settings_as(SerialSettings)
    assert settings is not None
    assert settings.framing.mode == "fields"
    assert settings.records["PCNT"] == ["channel", "zone", "count"]
    broken = tmp_path / "anju-camera-serial.yaml"
    broken.write_text(CAMERA.read_text().replace("checksum: xor8}", "checksum: crc16-modbus}"))
    with pytest.raises(ProfileError, match=r"serial\.framing\.fields\.checksum"):
        load_profile(broken)


def test_every_reader_rejects_nothing_silently_on_an_empty_feed() -> None:
    readers: list[FrameReader] = [
        reader_for(s) for s in (NMEA, REGEX, KEYVALUE, JSON, LENGTH_CRC, STX_ETX)
    ]
    assert all(reader.feed(b"") == [] and reader.reset() == [] for reader in readers)
